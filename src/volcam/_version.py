"""The version of volcam: its one home (pyproject.toml reads it, DICOM and logs name it)."""

__version__ = "0.1.0"
