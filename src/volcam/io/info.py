"""What a path holds, for ``volcam info``: series, sizes, spacing, orientation, frames and problems.

A DICOM folder is judged from its headers, so this is quick on a large study, and, for a modality
with a plausible range of values (CT: :mod:`volcam.io.ranges`), from the pixels of its middle slice
(one file decoded); a DICOMweb study or series address from its WADO-RS metadata (no pixel data moves).
Nothing here reads or prints a patient identifier: series are named by UID and description only.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volcam.errors import VolcamError, first_line, one_line
from volcam.io.formats import format_of
from volcam.io.image import LPS_TO_RAS, voxel_spacing
from volcam.io.load import load
from volcam.io.ranges import RANGES, range_problem

__all__ = ["Found", "axcodes", "describe"]


@dataclass
class Found:
    """One image (a series, a file) found at a path.

    ``shape`` and ``spacing`` are in the loaded array's spatial axis order: (column, row, slice)
    for volumes, (frame, row, column) for clips; spacing in mm, seconds for frames.
    """

    source: str
    kind: str
    modality: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    series_uid: str = ""
    description: str = ""
    frame_interval: float | None = None
    problems: list[str] = field(default_factory=list)


def axcodes(affine_ras: np.ndarray) -> str:
    """Where each voxel axis points, as nibabel's axis codes (``"LPS"`` for a plain axial DICOM): each
    world axis named once, also for a sheared or oblique grid (nibabel's nearest orthogonal axes); ``?``
    for an axis too short against the others to have a direction in float64."""
    from nibabel.orientations import aff2axcodes

    return "".join(str(code or "?") for code in aff2axcodes(np.asarray(affine_ras, float)))  # ?: no direction


def _orientation(affine_ras: np.ndarray) -> str:
    from volcam.io.dicom.geometry import orientation_name

    return f"{orientation_name(affine_ras)}, voxel axes point {axcodes(affine_ras)}"


def _from_image(image, source: str) -> Found:
    meta = image.meta
    clip = meta.get("axes") == "thw"
    affine = image.affine.numpy()
    return Found(
        source=source,
        kind="clip" if clip else "volume",
        modality=str(meta.get("modality", "OT")),
        shape=tuple(int(v) for v in image.shape[1:]) + ((int(image.shape[0]),) if image.shape[0] > 1 else ()),
        spacing=tuple(float(v) for v in meta.get("spacing", ())),
        orientation="frames as shown by the scanner" if clip else _orientation(affine),
        series_uid=one_line(meta.get("series_uid", "")),
        description=one_line(meta.get("series_description", "")),
        frame_interval=meta.get("frame_interval"),
        problems=[
            p.split(": ", 1)[1] if p.startswith(meta.get("filename_or_obj", "\0")) else p for p in meta["problems"]
        ],
    )


def _dicom_series(series, root: str | os.PathLike) -> Found:
    """A series judged from its headers; a header that cannot be read is a problem of the series."""
    found = Found(
        source=os.fspath(root),
        kind="volume",
        modality=series.modality,
        shape=(),
        spacing=(),
        orientation="",
        series_uid=series.uid,
        description=series.description,
    )
    try:
        _judge_series(series, found)
    except VolcamError as error:  # a FieldError: Rows or NumberOfFrames that is not a number
        found.problems.append(f"cannot load: {getattr(error, 'problem', None) or first_line(error)}")
    return found


def _judge_series(series, found: Found) -> None:
    from volcam.io.dicom.clips import frame_interval, is_clip, ultrasound_spacing
    from volcam.io.dicom.headers import frame_count, header_int
    from volcam.io.dicom.stacks import multiframe_geometry, series_geometry

    headers = series.headers
    if not headers:  # every series a folder or a server gives has one; a series made otherwise may not
        found.problems.append("cannot load: no readable image header in the series")
        return
    first_path, first = headers[0]
    frames = frame_count(first, first_path)
    if len(headers) == 1 and (frames > 1 or is_clip(first)):
        found.source = os.fspath(first_path)
        if is_clip(first):
            interval = frame_interval(first, found.problems)
            calibrated = ultrasound_spacing(first, found.problems)
            found.kind, found.frame_interval = "clip", interval
            found.shape = (
                frames,
                header_int(first, "Rows", first_path),
                header_int(first, "Columns", first_path),
            )
            samples = header_int(first, "SamplesPerPixel", first_path, 1)
            if samples > 1 or first.get("PhotometricInterpretation") == "PALETTE COLOR":
                found.shape += (3,)
            found.spacing = (interval or 1.0, *(calibrated or (1.0, 1.0)))
            found.orientation = "frames as shown by the scanner"
            if interval is None and frames > 1:
                found.problems.append("no frame time in the file")
            if calibrated is None:
                found.problems.append("no physical pixel spacing in the file")
            return
        geometry = multiframe_geometry(first, first_path)
        depth = frames
        middle = None  # one file of many frames: decoding it to judge its values costs a load
    elif any(frame_count(ds, p) > 1 for p, ds in headers):
        found.problems.append(f"{len(headers)} files of which some are multi-frame: load one file directly")
        return
    else:
        geometry = series_geometry(headers)
        depth = len(headers)
        middle = headers[int(geometry.order[len(geometry.order) // 2])] if len(geometry.order) else None
    affine = LPS_TO_RAS @ geometry.affine_lps
    found.shape = (header_int(first, "Columns", first_path), header_int(first, "Rows", first_path), depth)
    found.spacing = voxel_spacing(affine, 3)
    found.orientation = _orientation(affine) if geometry.known else "unknown (no usable ImageOrientationPatient)"
    if geometry.fatal:  # gaps and tilt mean little in a stack that is not one volume
        found.problems += [f"cannot load as one volume: {'; '.join(geometry.fatal)}"]
    else:
        found.problems += geometry.problems
    if not all(np.isfinite(found.spacing)) or min(found.spacing, default=1.0) <= 0:
        found.problems.append(f"the voxel spacing is not a positive number ({found.spacing})")
    if middle is not None and found.modality in RANGES:
        _judge_values(middle, found)


def _judge_values(header: tuple, found: Found) -> None:
    """The series' values judged from one slice (its middle one), rescaled as the reader rescales them."""
    from volcam.io.dicom.headers import quiet
    from volcam.io.dicom.pixels import decode, rescale, rescale_of

    path, ds = header
    if not isinstance(path, Path) or not path.is_file():  # a DICOMweb series: its pixels stay on the server
        return
    try:
        with quiet():
            values = rescale(decode(ds, path), *rescale_of(ds, path))
    except VolcamError:  # loading says what is wrong with the pixels
        return
    problem = range_problem(values, found.modality)
    if problem is not None:
        found.problems.append(f"{problem} (judged from the middle slice)")


def describe(path: str | os.PathLike) -> tuple[list[Found], dict[str, int]]:
    """Everything ``path`` holds, and for a folder how many files (for a study, series) were passed over and why.

    DICOM folders and DICOMweb addresses are read header-only; other files are loaded (problems
    are collected, not warned). Raises :class:`~volcam.errors.VolcamError` when nothing can be read.
    """
    if format_of(path) == "dicomweb":
        from volcam.io.dicom.web import study_series

        where, series, skipped = study_series(str(path))
        return [_dicom_series(one, where) for one in series], skipped
    path = Path(path)
    if format_of(path) == "dicom-folder":
        from volcam.io.dicom.series import scan_folder

        scan = scan_folder(path)
        return [_dicom_series(series, path) for series in scan.series], dict(scan.skipped)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load(path)
    except VolcamError as error:
        if "4D NIfTI" not in str(error):
            raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load(path, volume=0)
        found = _from_image(image, os.fspath(path))
        found.problems.append(first_line(error).split(": ", 1)[-1])
        return [found], {}
    return [_from_image(image, os.fspath(path))], {}
