"""Everything that touches files: read volumes and clips, write maps back in the source's geometry.

Importing this package is cheap: pydicom, nibabel, SimpleITK, matplotlib and PyAV load when a file
needs them.
"""

from volcam.io.load import load
from volcam.io.write import write_dicom, write_nifti
from volcam.maps.windowing import WINDOWS, apply_window, window_bounds, window_transform

__all__ = [
    "WINDOWS",
    "apply_window",
    "load",
    "window_bounds",
    "window_transform",
    "write_dicom",
    "write_nifti",
]
