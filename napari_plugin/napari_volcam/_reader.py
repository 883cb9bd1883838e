"""Readers: DICOM folders and files (ultrasound cine as clips), NIfTI, NRRD/MHA, video and DICOMweb addresses.

What it accepts is :mod:`volcam.io.formats`' one table (``napari.yaml`` lists the same suffixes and
address patterns). A DICOMweb study or series address (``viewer.open("http://pacs/dicom-web/studies/
<uid>/series/<uid>")``) is retrieved with napari's progress bar; napari calls a reader on its GUI
thread, so the dock's URL field (:meth:`napari_volcam._controller.DockController.open_url`, in a
worker) is the way that keeps the viewer responsive.

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

    if format_of(path) == "dicomweb":
        from volcam.errors import VolcamError
        from volcam.io.dicom.web import parse_address

        try:
            parse_address(str(path))  # a study or series address, not any web page
        except VolcamError:
            return None
        return read_scan
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
    from volcam.io.formats import format_of

    first = path[0] if isinstance(path, list) else path
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", volcam.VolcamWarning)
            scan = _retrieve(str(first)) if format_of(first) == "dicomweb" else volcam.load(first)
    except VolcamError as error:
        show_error(f"volcam cannot open this: {error}")
        return [(None,)]
    for warning in caught:
        if issubclass(warning.category, volcam.VolcamWarning):
            show_warning(str(warning.message))
    return [scan_layer(scan)]


def _retrieve(url: str) -> Any:
    """The series at a DICOMweb address, with napari's progress bar counting instances."""
    from napari.utils import progress

    from volcam.io.dicom.web import load_url

    with progress(desc="volcam: retrieving from the PACS") as bar:
        return load_url(url, bar=bar)
