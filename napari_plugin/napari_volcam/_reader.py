"""Readers: DICOM folders and files (ultrasound cine as clips), NIfTI, NRRD/MHA and video, via ``volcam.load``.

What it accepts is :mod:`volcam.io.formats`' one table (``napari.yaml`` lists the same suffixes).

A file volcam cannot read gives a napari notification with volcam's one-line reason and opens
nothing; it never raises into the viewer.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from napari_volcam._layers import scan_layer


def napari_get_reader(path: str | list[str]) -> Any:
    """The reader for one path volcam can open (a folder is a DICOM series), else ``None``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    from volcam.io.formats import format_of, is_image_name

    p = Path(path)
    if format_of(p) == "dicom-folder":
        return None if p.suffix.lower() in (".zarr", ".ome") else read_scan
    if is_image_name(p) and (p.suffix or p.is_file()):  # no suffix: a DICOM file, not a missing folder
        return read_scan
    return None


def read_scan(path: str | os.PathLike | list[str]) -> list[tuple]:
    """The scan at ``path`` as one image layer (``[(None,)]`` with an error notification if unreadable)."""
    from napari.utils.notifications import show_error, show_warning

    import volcam
    from volcam.errors import VolcamError

    first = path[0] if isinstance(path, list) else path
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", volcam.VolcamWarning)
            scan = volcam.load(first)
    except VolcamError as error:
        show_error(f"volcam cannot open this: {error}")
        return [(None,)]
    for warning in caught:
        if issubclass(warning.category, volcam.VolcamWarning):
            show_warning(str(warning.message))
    return [scan_layer(scan)]
