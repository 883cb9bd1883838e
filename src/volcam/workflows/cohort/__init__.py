"""Many scans from a manifest: resumable, in process or on Dask; a table and a report.

``run`` (:func:`run_cohort`, one case's work, the output folder's rules) and ``report`` (the
results table, ``summary.md`` and plots).
"""

from volcam.workflows.cohort.run import CASE_FILE, Settings, run_cohort

__all__ = ["CASE_FILE", "Settings", "run_cohort"]
