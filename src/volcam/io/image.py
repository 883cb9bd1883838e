"""The one shape every reader returns: a channel-first MONAI ``MetaTensor`` with its geometry.

Volumes keep MONAI's ``LoadImage`` convention so that preprocessing written for MONAI works on them
unchanged: the spatial axes are the file's own voxel index order (for DICOM: column, row, slice),
and ``affine`` maps those indices to patient coordinates in millimetres, RAS+ (MONAI's ``space``).
Clips (ultrasound cine, video) are ``(C, T, H, W)`` with a diagonal affine of (frame interval in
seconds, row spacing in mm, column spacing in mm), so ``pixdim`` is the spacing there too.

Values keep the scan's own type where that is exact: a CT stored as integers with RescaleSlope 1
and an integer RescaleIntercept is int16 HU when it fits, a NIfTI without scaling keeps its dtype;
a scan that needs scaling is float32 (see :func:`volcam.load`). Consumers convert with ``.float()``
where they compute.

The metadata keys volcam adds (besides MONAI's ``affine``, ``original_affine``, ``spatial_shape``,
``space``, ``filename_or_obj``):

- ``modality``: ``"CT"``, ``"MR"``, ``"US"``, ... (``"OT"`` when the file does not say);
- ``spacing``: one value per spatial axis, mm (seconds on a clip's T axis);
- ``axes``: ``"xyz"`` for a volume, ``"thw"`` for a clip;
- ``frame_interval``: seconds between frames of a clip (``None`` when the file does not say);
- ``problems``: what a reader should know (gaps, tilt, guessed spacing, values outside the modality's
  plausible range: :mod:`volcam.io.ranges`), also issued as warnings;
- DICOM only: ``series_uid``, ``series_description``, ``study_uid``, ``frame_of_reference_uid``,
  ``source_files`` (one path per slice, in slice order) for the derived-series writer.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from volcam.errors import FileFormatError, VolcamWarning
from volcam.io.ranges import range_problem

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = ["LPS_TO_RAS", "affine_problem", "make_clip", "make_volume", "voxel_spacing", "warn_problem"]

# DICOM and ITK put patient coordinates in LPS+, NIfTI and MONAI in RAS+: the same points, x and y negated.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def warn_problem(problems: list[str], message: str) -> None:
    """Record ``message`` for ``volcam info`` and issue it as a :class:`VolcamWarning`.

    The warning is attributed to the first caller outside volcam (the user's ``load`` line), not
    to the reader deep inside that found the problem.
    """
    problems.append(message)
    frame: FrameType | None = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("volcam."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, VolcamWarning, stacklevel=level)


def _check_finite(data: np.ndarray, path: str | os.PathLike) -> None:
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise FileFormatError(f"{path}: {bad} voxel(s) are NaN or infinite")


def affine_problem(affine: np.ndarray) -> str | None:
    """Why a 4×4 voxel-to-world affine places no voxel (NaN, infinity, a zero or singular 3×3 part);
    ``None`` when it is usable. Every reader's result passes here, so MONAI never meets such a one."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        return "the voxel-to-world affine holds NaN or infinity"
    linear = affine[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    if sizes.min() <= 0:
        return "the voxel-to-world affine has a zero voxel size"
    # Scale-free: the determinant of the unit axes is the sine of how far they are from a plane.
    if abs(np.linalg.det(linear / sizes)) < 1e-6:
        return "the voxel-to-world affine is singular (its axes lie in one plane)"
    return None


def _check_grid(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> None:
    """One line for an image with no voxels or an affine that places none, before MONAI meets them."""
    if data.size == 0:
        raise FileFormatError(f"{path}: the image has no voxels (size {'×'.join(map(str, data.shape[1:]))})")
    problem = affine_problem(affine)
    if problem is not None:
        raise FileFormatError(f"{path}: {problem}")


def _metatensor(data: np.ndarray, affine: np.ndarray, meta: dict[str, Any]) -> MetaTensor:
    import torch
    from monai.data import MetaTensor

    meta = dict(meta)
    meta["affine"] = torch.as_tensor(affine, dtype=torch.float64)
    meta["original_affine"] = np.array(affine, dtype=np.float64)
    meta["spatial_shape"] = np.array(data.shape[1:], dtype=np.int64)
    # The reader's dtype is kept (int16 HU, float32 maps): a float copy here would double the memory.
    # So is its layout: a DICOM series is a (C, X, Y, Z) view of slice-contiguous memory, and copying
    # it into x-fastest order would cost more than reading it. torch holds native byte order only (a
    # big-endian NIfTI's array is not) and no negative strides.
    if not data.dtype.isnative or any(stride < 0 for stride in data.strides):
        data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    return MetaTensor(torch.from_numpy(data), meta=meta)


def voxel_spacing(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """The voxel size (mm, or s on a time axis) along each of the first ``ndim`` voxel axes of a
    homogeneous affine (4×4, or 3×3 for a plane): the norms of its linear part's columns, every world
    axis counted (a rotated, sheared or oblique grid keeps its step)."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(affine[: affine.shape[0] - 1, :ndim], axis=0))


def make_volume(
    data: np.ndarray,
    affine_ras: np.ndarray,
    *,
    path: str | os.PathLike,
    modality: str | None,
    problems: Sequence[str] = (),
    channel_dim: int | None = None,
    **extra: Any,
) -> MetaTensor:
    """``(C, X, Y, Z)`` data and a 4×4 RAS affine → ``MetaTensor`` with volcam's metadata.

    ``channel_dim`` is where the channels were in the file (MONAI's ``original_channel_dim``;
    ``None``: the file had none and C = 1 was added).
    """
    affine_ras = np.asarray(affine_ras, dtype=np.float64)
    _check_grid(data, affine_ras, path)
    _check_finite(data, path)
    found = list(problems)
    implausible = range_problem(data, modality)
    if implausible is not None:
        warn_problem(found, f"{path}: {implausible}")
    spacing = voxel_spacing(affine_ras, data.ndim - 1)
    meta = {
        "space": "RAS",
        "original_channel_dim": float("nan") if channel_dim is None else channel_dim,
        "filename_or_obj": os.fspath(path),
        "modality": modality or "OT",
        "spacing": spacing,
        "axes": "xyz"[: data.ndim - 1],
        "frame_interval": None,
        "problems": found,
        **extra,
    }
    return _metatensor(data, affine_ras, meta)


def make_clip(
    data: np.ndarray,
    *,
    path: str | os.PathLike,
    modality: str | None,
    frame_interval: float | None,
    pixel_spacing: tuple[float, float] | None,
    problems: list[str],
    **extra: Any,
) -> MetaTensor:
    """``(C, T, H, W)`` frames → ``MetaTensor`` with spacing (frame interval s, row mm, column mm).

    Unknown spacing is recorded as a problem and taken as 1 (one second, one millimetre), so the
    clip still loads and the spacing-aware filters still have a number.
    """
    if data.size == 0:
        raise FileFormatError(f"{path}: the clip has no pixels (size {'×'.join(map(str, data.shape[1:]))})")
    _check_finite(data, path)
    if frame_interval is None and data.shape[1] > 1:
        warn_problem(problems, f"{path}: no frame time in the file; 1 s per frame assumed")
    if pixel_spacing is None:
        warn_problem(problems, f"{path}: no physical pixel spacing in the file; 1 mm per pixel assumed")
    dt = frame_interval or 1.0
    dy, dx = pixel_spacing or (1.0, 1.0)
    meta = {
        "original_channel_dim": extra.pop("channel_dim", float("nan")),
        "filename_or_obj": os.fspath(path),
        "modality": modality or "OT",
        "spacing": (float(dt), float(dy), float(dx)),
        "axes": "thw",
        "frame_interval": frame_interval,
        "problems": list(problems),
        **extra,
    }
    return _metatensor(data, np.diag([dt, dy, dx, 1.0]), meta)
