"""Everything that touches files: read volumes and clips, write maps back in the source's geometry.

Importing this package is cheap: its names load on first use (PEP 562), and pydicom, nibabel,
SimpleITK, matplotlib, PyAV and torch load when a file needs them (``volcam info`` on a DICOM series
reads headers only and never imports torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volcam._lazy import lazy_names
from volcam.io.load import load  # cheap; and bound here, since importing volcam.io.load binds the module

_LAZY = {
    "write_dicom": "volcam.io.write",
    "write_nifti": "volcam.io.write",
    "WINDOWS": "volcam.maps.windowing",
    "apply_window": "volcam.maps.windowing",
    "window_bounds": "volcam.maps.windowing",
    "window_transform": "volcam.maps.windowing",
}

if TYPE_CHECKING:
    from volcam.io.write import write_dicom, write_nifti
    from volcam.maps.windowing import WINDOWS, apply_window, window_bounds, window_transform


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "WINDOWS",
    "apply_window",
    "load",
    "window_bounds",
    "window_transform",
    "write_dicom",
    "write_nifti",
]
