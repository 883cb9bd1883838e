"""Readers: DICOM folders and files (ultrasound cine as clips), NIfTI, NRRD/MHA and video, via ``volcam.load``.

A file volcam cannot read gives a napari notification with volcam's one-line reason and opens
nothing; it never raises into the viewer.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from napari_volcam._layers import scan_layer

_SUFFIXES = (".dcm", ".dicom", ".ima", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_VIDEO = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg")


def napari_get_reader(path: str | list[str]) -> Any:
    """The reader for one path volcam can open (a folder is a DICOM series), else ``None``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        return None if p.suffix.lower() in (".zarr", ".ome") else read_scan
    name = p.name.lower()
    if name.endswith(_SUFFIXES + _VIDEO) or ("." not in name and p.is_file()):
        return read_scan
    return None


def read_scan(path: str | os.PathLike | list) -> list[tuple]:
    """The scan at ``path`` as one image layer (``[(None,)]`` with an error notification if unreadable)."""
    from napari.utils.notifications import show_error, show_warning

    import volcam
    from volcam.errors import VolcamError

    if isinstance(path, list):
        path = path[0]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", volcam.VolcamWarning)
            scan = volcam.load(path)
    except VolcamError as error:
        show_error(f"volcam cannot open this: {error}")
        return [(None,)]
    for warning in caught:
        if issubclass(warning.category, volcam.VolcamWarning):
            show_warning(str(warning.message))
    return [scan_layer(scan)]
