"""Many scans from a manifest: resumable, in process or on Dask; a table and a report.

``run`` (:func:`run_cohort`, the output folder's rules and lock), ``case`` (one case's work),
``executors`` (here with prefetch, or on Dask), ``records`` (a case's record: ``case.json`` and its
row of the table; the fingerprint) and ``report`` (the results table, ``summary.md`` and plots).
"""

from volcam.workflows.cohort.records import CASE_FILE, CaseRecord, MapRecord, Settings
from volcam.workflows.cohort.run import run_cohort

__all__ = ["CASE_FILE", "CaseRecord", "MapRecord", "Settings", "run_cohort"]
