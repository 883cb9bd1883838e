"""Everything that touches files: read volumes and clips, write maps back in the source's geometry.

Importing this package is cheap: its names load on first use (PEP 562), and pydicom, nibabel,
SimpleITK, matplotlib, PyAV and torch load when a file needs them (``volcam info`` on a DICOM series
reads headers only and never imports torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "load": "volcam.io.load",
    "write_dicom": "volcam.io.write",
    "write_nifti": "volcam.io.write",
    "WINDOWS": "volcam.maps.windowing",
    "apply_window": "volcam.maps.windowing",
    "window_bounds": "volcam.maps.windowing",
    "window_transform": "volcam.maps.windowing",
}

if TYPE_CHECKING:
    from volcam.io.load import load
    from volcam.io.write import write_dicom, write_nifti
    from volcam.maps.windowing import WINDOWS, apply_window, window_bounds, window_transform


def __getattr__(name: str) -> Any:
    """A public name's value, imported from its home the first time it is asked for."""
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'volcam.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "WINDOWS",
    "apply_window",
    "load",
    "window_bounds",
    "window_transform",
    "write_dicom",
    "write_nifti",
]
