"""The geometry of a DICOM stack from its headers: a series' single-frame slices, or a multi-frame file's frames.

Positions, orientations and spacings are read here (each checked by :mod:`volcam.io.dicom.headers`);
the order along the normal, the affine, gaps and tilt are :func:`volcam.io.dicom.geometry.stack_geometry`'s.
A size, position or orientation that is not numbers is ``fatal``; a broken optional field (a pixel
spacing, a slice thickness) is a problem, and a default is assumed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from volcam.io.dicom.geometry import StackGeometry, directions, orientation_problem, stack_geometry
from volcam.io.dicom.headers import FieldError, frame_count, frame_item, header_int, header_numbers, optional_numbers

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["multiframe_geometry", "pixel_spacing", "series_geometry"]


def _fallback_step(ds: Dataset, path: str | os.PathLike, problems: list[str] | None = None) -> float | None:
    """mm between slices from ``SpacingBetweenSlices``, else ``SliceThickness``: for one slice, or frames
    without positions; ``None`` when neither is a positive number (a broken one is a problem)."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = optional_numbers(ds, keyword, path, problems, count=1, positive=True)
        if value:
            return value[0]
    return None


def pixel_spacing(
    ds: Dataset, path: str | os.PathLike, problems: list[str] | None = None
) -> tuple[float, float] | None:
    """(row, column) mm from ``PixelSpacing`` (else ``ImagerPixelSpacing``); a broken one is a problem."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = optional_numbers(ds, keyword, path, problems, count=2, positive=True)
        if value:
            return value[0], value[1]
    return None


def _few(messages: list[str], limit: int = 3) -> list[str]:
    """At most ``limit`` messages, then how many more: a series of 500 broken files stays one line."""
    unique = list(dict.fromkeys(messages))
    return unique[:limit] + ([f"and {len(unique) - limit} more"] if len(unique) > limit else [])


def _slice_header(
    path: Path, ds: Dataset, prefix: str, problems: list[str]
) -> tuple[tuple[int, int], int, list[float] | None, list[float] | None, tuple[float, float] | None]:
    """(rows, columns), samples, position, orientation and pixel spacing of one slice.

    A broken size, position or orientation raises a :class:`FieldError`; a broken pixel spacing is
    a problem (1 mm assumed).
    """
    size = (header_int(ds, "Rows", path), header_int(ds, "Columns", path))
    samples = header_int(ds, "SamplesPerPixel", path, 1)
    position = header_numbers(ds, "ImagePositionPatient", path, count=3)
    orientation = header_numbers(ds, "ImageOrientationPatient", path, count=6)
    local: list[str] = []
    spacing = pixel_spacing(ds, path, local)
    problems.extend(prefix + p for p in local)
    return size, samples, position, orientation, spacing


def series_geometry(headers: list[tuple[Path, Dataset]]) -> StackGeometry:
    """Order the single-frame images of a series and derive its geometry, from headers alone.

    Different slice sizes are fatal (reported in ``fatal``) like mixed orientations are, and so is a
    size, position or orientation that is not numbers (each names its file).
    """
    several = len(headers) > 1
    broken: list[str] = []
    problems: list[str] = []
    sizes, samples, positions, orientations, spacings = set(), set(), [], [], []
    for path, ds in headers:
        prefix = f"{path.name}: " if several else ""
        try:
            size, sample, position, orientation, spacing = _slice_header(path, ds, prefix, problems)
        except FieldError as error:
            broken.append(prefix + error.problem)
            continue
        sizes.add(size)
        samples.add(sample)
        positions.append(position)
        orientations.append(orientation)
        spacings.append(spacing)
    first_path, first = headers[0]
    have = (
        not broken
        and all(p is not None for p in positions)
        and all(o is not None for o in orientations)
        and bool(positions)
    )
    known = [s for s in spacings if s is not None]
    step = _fallback_step(first, first_path, problems)
    tilt = optional_numbers(first, "GantryDetectorTilt", first_path, problems, count=1)
    geometry = stack_geometry(
        np.array(positions) if have else None,
        np.array(orientations) if have else None,
        known[0] if known else None,
        step,
        tilt[0] if tilt else None,
    )
    if broken:
        geometry.fatal[:0] = _few(broken)
        return geometry
    geometry.problems[:0] = _few(problems)
    if len(sizes) > 1:
        shown = ", ".join(f"{r}×{c}" for r, c in sorted(sizes))
        geometry.fatal.insert(0, f"slices have different sizes ({shown})")
    if len(samples) > 1:
        geometry.fatal.insert(0, "slices mix grey and colour images")
    if known and np.ptp(np.array(known), axis=0).max() > 1e-4:
        low, high = np.min(known), np.max(known)
        geometry.fatal.append(f"slices have different pixel spacings ({low:.4g} to {high:.4g} mm)")
    if not have and several:
        geometry.fatal.append("slices have no ImagePositionPatient/ImageOrientationPatient, so they cannot be ordered")
    return geometry


def _frame_numbers(
    ds: Dataset, path: Path, index: int, sequence: str, keyword: str, count: int | None = None
) -> list[float] | None:
    """:func:`header_numbers` of ``keyword`` for frame ``index`` (see :func:`frame_item`)."""
    item = frame_item(ds, index, sequence, keyword)
    return None if item is None else header_numbers(item, keyword, path, count=count)


def _frame_offsets(ds: Dataset, path: Path, frames: int, start: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    """Distance of each frame from ``start`` along ``normal`` (mm) from ``GridFrameOffsetVector``; ``None``
    when absent.

    RT Dose (PS3.3 C.8.8.3.2): offsets are relative to ImagePositionPatient when the first is 0, else
    they are the frames' absolute coordinates along the normal (z for the transverse plane it requires).
    """
    offsets = header_numbers(ds, "GridFrameOffsetVector", path)
    if offsets is None:
        return None
    if len(offsets) != frames:
        raise FieldError(path, f"GridFrameOffsetVector has {len(offsets)} value(s) for {frames} frames")
    offsets_mm = np.asarray(offsets, float)
    return offsets_mm if offsets_mm[0] == 0 else offsets_mm - float(start @ normal)


def multiframe_geometry(ds: Dataset, path: str | os.PathLike | None = None) -> StackGeometry:
    """Frame order and geometry of a multi-frame image stack (enhanced CT/MR, RT Dose), from its header alone.

    Positions come from the per-frame functional groups; a classic multi-frame with one top-level
    position has its frames at ``GridFrameOffsetVector`` along the normal (RT Dose), else evenly
    spaced by the slice spacing. A position, orientation or frame count that is not numbers is
    ``fatal``; a broken optional field is a problem.
    """
    path = Path(path or getattr(ds, "filename", None) or "(dataset)")
    problems: list[str] = []
    try:
        frames = frame_count(ds, path)
        positions = [
            _frame_numbers(ds, path, i, "PlanePositionSequence", "ImagePositionPatient", 3) for i in range(frames)
        ]
        orientations = [
            _frame_numbers(ds, path, i, "PlaneOrientationSequence", "ImageOrientationPatient", 6) for i in range(frames)
        ]
        start = header_numbers(ds, "ImagePositionPatient", path, count=3)
        iop = header_numbers(ds, "ImageOrientationPatient", path, count=6)
        item = frame_item(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
        spacing = pixel_spacing(item, path, problems) if item is not None else None
        item = frame_item(ds, 0, "PixelMeasuresSequence", "SliceThickness")
        thickness = _fallback_step(item, path, problems) if item is not None else None
        step = _fallback_step(ds, path, problems) or thickness
        offsets, normal = None, None
        if not all(positions) and start and iop and orientation_problem(np.array(iop)) is None:
            _, _, normal = directions(np.array(iop))
            offsets = _frame_offsets(ds, path, frames, np.array(start), normal)
    except FieldError as error:
        geometry = stack_geometry(None, None, None)
        geometry.fatal.append(error.problem)
        return geometry
    if not all(positions) and start and iop:
        orientations = [iop] * frames
        if normal is not None:
            if offsets is None:
                if step is None and frames > 1:
                    problems.append("no slice spacing in the file: 1 mm between frames assumed")
                offsets = np.arange(frames) * (step or 1.0)
            positions = [list(np.array(start) + offset * normal) for offset in offsets]
        else:
            positions = [start] * frames  # stack_geometry reports the orientation
    have = all(p and len(p) == 3 for p in positions) and all(o and len(o) == 6 for o in orientations)
    geometry = stack_geometry(
        np.array(positions) if have else None,
        np.array(orientations) if have else None,
        spacing or pixel_spacing(ds, path, problems),
        step,
    )
    geometry.problems[:0] = problems
    if not have:
        geometry.order = np.arange(frames)
        geometry.positions = np.zeros((frames, 3))
    return geometry
