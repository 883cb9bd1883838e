"""Slice geometry of a DICOM stack: order, spacing, gaps, tilt and the voxel → patient affine; and
the other way, a slice's position and orientation from a grid's affine.

Pure numpy, no file access, so ``volcam info`` can judge a series from its headers alone (they are
read by :mod:`volcam.io.dicom.stacks`).

DICOM conventions used here (PS3.3 C.7.6.2): ``ImageOrientationPatient`` holds the direction of
a row (the way the column index grows) and then of a column (the way the row index grows);
``PixelSpacing`` is (between rows, between columns) in mm; ``ImagePositionPatient`` is the centre
of the first pixel; all in LPS+ patient coordinates. Slices are ordered by their position along the
normal ``row × column``, never by file name or ``InstanceNumber``, which scanners do not keep
consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from volcam.errors import InputError
from volcam.io.image import LPS_TO_RAS

__all__ = [
    "StackGeometry",
    "directions",
    "orientation_name",
    "orientation_problem",
    "slice_geometry",
    "stack_geometry",
]

# Two orientations closer than this (cosine difference) are the same plane; positions off the
# slice line by more than this many mm mean several stacks were mixed.
_SAME_DIRECTION = 1e-3
_OFF_LINE_MM = 0.5
_TILT_DEGREES = 0.1
# Row and column directions whose cross product is shorter than this (sine of the angle) are parallel.
_PARALLEL = 1e-2


@dataclass
class StackGeometry:
    """What the headers of a stack say about its geometry.

    Attributes:
        order: indices into the input, sorted along the slice normal (inferior to superior for
            an axial stack).
        affine_lps: 4×4 mapping (column, row, slice) indices to LPS mm.
        positions: ``(N, 3)`` LPS positions of the slices in ``order``.
        step: mm between slices along the normal (the median step).
        problems: warnings a reader should see (gaps, uneven spacing, tilt, missing geometry).
        fatal: reasons the stack is not one volume (mixed orientations, shared positions).
        known: whether the headers gave positions and orientations (else the affine is a guess).
    """

    order: np.ndarray
    affine_lps: np.ndarray
    positions: np.ndarray
    step: float
    problems: list[str] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    known: bool = True


def orientation_problem(iop: np.ndarray) -> str | None:
    """Why an ``ImageOrientationPatient`` defines no plane (NaN, a zero direction, parallel directions);
    ``None`` when it does. Small deviations from unit length and from 90° are tolerated (scanners round)."""
    iop = np.asarray(iop, float).reshape(-1)
    if iop.size != 6 or not np.isfinite(iop).all():
        return "ImageOrientationPatient is not 6 finite numbers"
    row, col = iop[:3], iop[3:]
    if np.linalg.norm(row) < _SAME_DIRECTION or np.linalg.norm(col) < _SAME_DIRECTION:
        which = "row" if np.linalg.norm(row) < _SAME_DIRECTION else "column"
        return f"ImageOrientationPatient has a zero {which} direction"
    if np.linalg.norm(np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))) < _PARALLEL:
        return "ImageOrientationPatient row and column directions are parallel"
    return None


def directions(iop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row and column directions and the slice normal (row × column) of a valid orientation."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def _unknown(n: int, dc: float, dr: float, step: float, problems: list[str], fatal: list[str]) -> StackGeometry:
    """The geometry of a stack whose headers place nothing: file order, a diagonal affine."""
    affine = np.diag([dc, dr, step, 1.0])
    return StackGeometry(np.arange(n), affine, np.zeros((n, 3)), step, problems, fatal, known=False)


def stack_geometry(
    positions: np.ndarray | None,
    orientations: np.ndarray | None,
    pixel_spacing: tuple[float, float] | None,
    fallback_step: float | None = None,
    gantry_tilt: float | None = None,
) -> StackGeometry:
    """Order a stack of slices and build its affine from their headers.

    Args:
        positions: ``(N, 3)`` ``ImagePositionPatient`` per slice, or ``None`` when absent.
        orientations: ``(N, 6)`` ``ImageOrientationPatient`` per slice, or ``None``.
        pixel_spacing: (row spacing, column spacing) in mm, or ``None`` (1 mm assumed, reported).
        fallback_step: slice spacing to use for a single slice or when positions are missing
            (``SpacingBetweenSlices`` or ``SliceThickness``).
        gantry_tilt: ``GantryDetectorTilt`` in degrees, when the header has it.

    A gantry-tilted stack keeps its true slice positions: the slice step is then not along the
    normal and the affine is sheared, which MONAI, nibabel and napari all accept.
    """
    problems: list[str] = []
    fatal: list[str] = []
    if pixel_spacing is None:
        problems.append("no PixelSpacing: 1 mm per pixel assumed")
        pixel_spacing = (1.0, 1.0)
    dr, dc = (float(v) for v in pixel_spacing)

    if positions is None or orientations is None:
        n = 1 if positions is None else len(positions)
        step = float(fallback_step or 1.0)
        problems.append(
            "no ImagePositionPatient/ImageOrientationPatient: slices kept in file order, identity orientation"
        )
        return _unknown(n, dc, dr, step, problems, fatal)

    positions = np.asarray(positions, float).reshape(-1, 3)
    orientations = np.asarray(orientations, float).reshape(-1, 6)
    n = len(positions)
    fatal.extend(_unplaceable(positions, orientations))
    if fatal:  # nothing below means anything: no order, no affine
        return _unknown(n, dc, dr, float(fallback_step or 1.0), problems, fatal)
    fatal.extend(_mixed_orientations(orientations))
    row, col, normal = directions(orientations[0])

    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    positions = positions[order]
    distance = distance[order]

    if n == 1:
        step = float(fallback_step or 1.0)
        step_vector = normal * step
    else:
        step, step_vector = _slice_step(positions, distance, normal, problems, fatal)
    if gantry_tilt and abs(gantry_tilt) > _TILT_DEGREES and not any("gantry tilt" in p for p in problems):
        problems.append(f"GantryDetectorTilt is {gantry_tilt:.1f}° but the slice positions show no shear")

    affine = np.eye(4)
    affine[:3, 0] = row * dc
    affine[:3, 1] = col * dr
    affine[:3, 2] = step_vector
    affine[:3, 3] = positions[0]
    if not np.isfinite(affine).all():  # positions so far apart that the step overflows
        fatal.append("the slice positions give no finite slice step")
        return _unknown(n, dc, dr, float(fallback_step or 1.0), problems, fatal)
    return StackGeometry(order, affine, positions, step, problems, fatal)


def _unplaceable(positions: np.ndarray, orientations: np.ndarray) -> list[str]:
    """Why headers ``(N, 3)`` positions and ``(N, 6)`` orientations place no slice at all (an orientation
    that defines no plane, a position that is not finite), sorted; empty when they place them."""
    bad = {problem for o in orientations if (problem := orientation_problem(o)) is not None}
    if not np.isfinite(positions).all():
        bad.add("ImagePositionPatient holds NaN or infinity")
    return sorted(bad)


def _mixed_orientations(orientations: np.ndarray) -> list[str]:
    """Why ``(N, 6)`` orientations are not one stack's (a localizer, several stacks); empty when they are."""
    if np.abs(orientations - orientations[0]).max() > _SAME_DIRECTION:
        distinct = len({tuple(np.round(o, 3)) for o in orientations})
        return [f"slices have {distinct} different orientations (a localizer or several stacks), not one volume"]
    return []


def _slice_step(
    positions: np.ndarray, distance: np.ndarray, normal: np.ndarray, problems: list[str], fatal: list[str]
) -> tuple[float, np.ndarray]:
    """The median step between slices along the normal (mm) and the step from slice to slice (a 3-vector,
    mm: along the normal unless the gantry was tilted), for two or more slices.

    ``positions`` ``(N, 3)`` and their ``distance`` ``(N,)`` along ``normal`` are sorted by distance.
    Shared positions and slices off one line are appended to ``fatal``; gaps, uneven spacing and a
    gantry tilt to ``problems``.
    """
    diffs = np.diff(distance)
    if np.any(diffs < 1e-3):
        shared = int(np.count_nonzero(diffs < 1e-3)) + 1
        fatal.append(f"{shared} slices share a position (several phases, echoes or times in one series)")
    step = float(np.median(diffs))
    # The direction from slice to slice: the normal, unless the gantry was tilted.
    direction = positions[-1] - positions[0]
    direction /= np.linalg.norm(direction) if np.linalg.norm(direction) > 0 else 1.0
    along = (positions - positions[0]) @ direction
    off_line = np.linalg.norm(positions - positions[0] - np.outer(along, direction), axis=1).max()
    if off_line > _OFF_LINE_MM:
        fatal.append(f"slice positions are off a straight line by up to {off_line:.1f} mm (several stacks mixed)")
    problems.extend(_spacing_problems(diffs, step))
    tilt = float(np.degrees(np.arccos(min(1.0, abs(direction @ normal)))))
    if tilt > _TILT_DEGREES:
        problems.append(f"gantry tilt of {tilt:.1f}°: slices are sheared (the affine keeps their true positions)")
    return step, direction * (step / max(abs(direction @ normal), 1e-6))


def _spacing_problems(diffs: np.ndarray, step: float) -> list[str]:
    """Gaps (missing slices) and uneven spacing, each with where and how big, in one line."""
    tolerance = max(0.01, 0.01 * step)
    odd = np.flatnonzero(np.abs(diffs - step) > tolerance)
    if odd.size == 0 or step <= 0:
        return []
    gaps = [i for i in odd if diffs[i] > 1.5 * step]
    problems = []
    if gaps:
        described = ", ".join(
            f"{diffs[i]:.2f} mm between slices {i} and {i + 1} (~{round(diffs[i] / step) - 1} missing)"
            for i in gaps[:3]
        )
        more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
        problems.append(
            f"missing slices: gap of {described}{more}; slice step is {step:.2f} mm, "
            "so slices past a gap are placed at the regular step, not at their true position"
        )
    if len(gaps) < odd.size:
        problems.append(
            f"uneven slice spacing: steps from {diffs.min():.3f} to {diffs.max():.3f} mm (median {step:.3f})"
        )
    return problems


def orientation_name(affine: np.ndarray) -> str:
    """``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"oblique"`` from the slice normal of a 4×4 affine."""
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    normal = np.abs(normal / np.linalg.norm(normal))
    axis = int(np.argmax(normal))
    if normal[axis] < np.cos(np.radians(10)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def slice_geometry(affine_ras: np.ndarray, k: int) -> tuple[list[float], list[float], list[float]]:
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of slice ``k`` of an (x, y, z) grid.

    The one place a slice's geometry comes from an affine: the derived objects of a map that is not
    on its source's grid (:mod:`volcam.io.dicom.placement`), the synthetic phantoms' source series.
    """
    lps = LPS_TO_RAS @ affine_ras  # the flip is its own inverse
    row, col = lps[:3, 0], lps[:3, 1]
    if abs(row @ col) > 1e-4 * np.linalg.norm(row) * np.linalg.norm(col):
        raise InputError("the image's in-plane axes are not perpendicular; a DICOM slice cannot hold that grid")
    position = lps @ np.array([0.0, 0.0, float(k), 1.0])
    orientation = np.concatenate([row / np.linalg.norm(row), col / np.linalg.norm(col)])
    return (
        [round(float(v), 6) for v in position[:3]],
        [round(float(v), 8) for v in orientation],
        [round(float(np.linalg.norm(col)), 6), round(float(np.linalg.norm(row)), 6)],
    )
