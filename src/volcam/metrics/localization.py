"""Does the map point at the lesion? Pointing game, energy pointing game, IoU/Dice, per-lesion hits.

Pure functions of a map ``(B, 1, *S)`` (or ``(*S)``), a lesion mask on the same grid and the voxel
spacing in mm (from a ``MetaTensor``'s affine, ``spacing=``, or 1 per voxel). No model is needed.
Distances use SciPy's exact Euclidean distance transform with the spacing, so a tolerance in mm
means the same on an anisotropic CT (0.7 × 0.7 × 2.5 mm) as on an isotropic one. Definitions:
docs/methods.md#localization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from volcam.defaults import TOLERANCE_MM
from volcam.metrics._common import MetricInputError, as_map, as_mask, spacing_of

__all__ = [
    "NO_DISTANCE",
    "EnergyPointing",
    "LesionHits",
    "Overlap",
    "PointingGame",
    "energy_pointing_game",
    "lesion_hits",
    "localization",
    "overlap",
    "pointing_game",
    "within_frames",
]

# The spacing (mm) of an axis along which nothing counts as near: a clip's time axis, so the
# pointing game measures distances within a frame only.
NO_DISTANCE = 1e9


def within_frames(spacing: Sequence[float]) -> tuple[float, ...]:
    """A clip's spacing ``(s, mm, mm)`` for distances: the time axis at :data:`NO_DISTANCE`."""
    return (NO_DISTANCE, *(float(s) for s in spacing[1:]))


@dataclass(frozen=True)
class PointingGame:
    """Attributes:
    hits: ``(B,)`` bool, the map's maximum lies within ``tolerance_mm`` of the mask.
    points: ``(B, ndim)`` voxel index of the maximum (the first in C order on a tie).
    distance_mm: ``(B,)`` from the maximum to the nearest mask voxel (0 inside).
    tolerance_mm: the tolerance used.
    """

    hits: torch.Tensor
    points: torch.Tensor
    distance_mm: torch.Tensor
    tolerance_mm: float

    @property
    def accuracy(self) -> float:
        """Fraction of samples hit."""
        return float(self.hits.double().mean())


def pointing_game(
    cam: torch.Tensor,
    mask: torch.Tensor,
    *,
    tolerance_mm: float = 0.0,
    spacing: float | Sequence[float] | None = None,
) -> PointingGame:
    """Pointing game (Zhang et al., ECCV 2016): a hit when the map's maximum falls in the mask
    dilated by ``tolerance_mm``.

    Args:
        cam: ``(B, 1, *S)`` or ``(*S)``.
        mask: lesion mask on the same grid (``(*S)``, ``(B, *S)`` or ``(B, 1, *S)``), not empty.
        tolerance_mm: how far outside the mask still counts, in mm.
        spacing: voxel size in mm per axis; default: the map's ``MetaTensor`` affine, else 1.
    """
    m = as_map(cam)
    sp = spacing_of(cam, spacing, m.ndim - 2)
    masks = _nonempty(as_mask(mask, m), "lesion mask")
    if tolerance_mm < 0:
        raise MetricInputError(f"tolerance_mm must be >= 0, not {tolerance_mm}")
    spatial = tuple(m.shape[2:])
    points, distances = [], []
    for i in range(m.shape[0]):
        flat = int(m[i, 0].flatten().argmax())
        point = np.unravel_index(flat, spatial)
        points.append(point)
        distances.append(float(_distance_to(masks[i, 0].cpu().numpy(), sp)[point]))
    distance = torch.tensor(distances, dtype=torch.float64)
    # a hair of slack so a tolerance of exactly one voxel's size counts that voxel
    hits = distance <= tolerance_mm + 1e-9
    return PointingGame(hits, torch.tensor(points, dtype=torch.long).view(m.shape[0], -1), distance, tolerance_mm)


@dataclass(frozen=True)
class EnergyPointing:
    """Attributes:
    energy: ``(B,)`` ``Σ M inside the mask / Σ M`` (within the region).
    baseline: ``(B,)`` what a uniform (random) map scores: the mask's share of the region's voxels.
    """

    energy: torch.Tensor
    baseline: torch.Tensor


def energy_pointing_game(cam: torch.Tensor, mask: torch.Tensor, region: torch.Tensor | None = None) -> EnergyPointing:
    """Energy-based pointing game (Score-CAM, Wang et al., 2020) with its random baseline.

    Args:
        cam: ``(B, 1, *S)`` or ``(*S)``, non-negative.
        mask: the lesion mask.
        region: the lung or body mask both sums are restricted to; ``None``: the whole grid.
    """
    m = as_map(cam)
    if float(m.min()) < 0:
        raise MetricInputError("the energy pointing game needs a non-negative map")
    masks = _nonempty(as_mask(mask, m), "lesion mask")
    regions = as_mask(region, m, "region") if region is not None else torch.ones_like(masks)
    inside = masks & regions
    total = (m * regions).flatten(1).sum(1).double()
    energy = (m * inside).flatten(1).sum(1).double() / torch.where(total > 0, total, torch.ones_like(total))
    baseline = inside.flatten(1).sum(1).double() / regions.flatten(1).sum(1).clamp_min(1).double()
    return EnergyPointing(energy.cpu(), baseline.cpu())


@dataclass(frozen=True)
class Overlap:
    """Attributes:
    thresholds: ``(T,)`` fractions of each map's maximum.
    iou, dice: ``(B, T)`` of ``M >= t · max M`` against the mask.
    matched_iou, matched_dice: ``(B,)`` of the map's top-n voxels, n the mask's volume.
    """

    thresholds: torch.Tensor
    iou: torch.Tensor
    dice: torch.Tensor
    matched_iou: torch.Tensor
    matched_dice: torch.Tensor


def overlap(
    cam: torch.Tensor, mask: torch.Tensor, thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
) -> Overlap:
    """IoU and Dice of the thresholded map against the mask, over thresholds (fractions of the max),
    and of the top-n voxels with n the lesion volume ("top-k% matched to the lesion")."""
    m = as_map(cam)
    masks = _nonempty(as_mask(mask, m), "lesion mask")
    th = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
    peak = m.flatten(1).amax(1).double()
    flat = m.flatten(1).double()
    truth = masks.flatten(1)
    # (B, T, N) would be T maps in memory at once: threshold one level at a time instead
    ious, dices = [], []
    for t in th:
        pred = (flat >= t * peak[:, None]) & (peak[:, None] > 0)
        iou, dice = _iou_dice(pred, truth)
        ious.append(iou)
        dices.append(dice)
    volume = truth.sum(1)
    top = torch.zeros_like(truth)
    for i in range(m.shape[0]):
        top[i, flat[i].topk(int(volume[i])).indices] = True
    matched_iou, matched_dice = _iou_dice(top, truth)
    return Overlap(th, torch.stack(ious, 1).cpu(), torch.stack(dices, 1).cpu(), matched_iou.cpu(), matched_dice.cpu())


def _iou_dice(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inter = (pred & truth).sum(1).double()
    union = (pred | truth).sum(1).double()
    sizes = (pred.sum(1) + truth.sum(1)).double()
    return inter / union.clamp_min(1), 2 * inter / sizes.clamp_min(1)


@dataclass(frozen=True)
class LesionHits:
    """Attributes:
    hits: per sample, ``(L,)`` bool per lesion (connected component of the mask).
    peaks: per sample, ``(L,)`` the map's maximum within each lesion (dilated by the tolerance),
        as a fraction of the map's global maximum.
    volumes_mm3: per sample, ``(L,)`` each lesion's volume.
    """

    hits: list[torch.Tensor]
    peaks: list[torch.Tensor]
    volumes_mm3: list[torch.Tensor]

    @property
    def hit_rate(self) -> float:
        """Hit lesions over all lesions of all samples."""
        total = sum(h.numel() for h in self.hits)
        return float(sum(int(h.sum()) for h in self.hits) / total) if total else float("nan")


def lesion_hits(
    cam: torch.Tensor,
    mask: torch.Tensor,
    *,
    fraction: float = 0.5,
    tolerance_mm: float = 0.0,
    spacing: float | Sequence[float] | None = None,
) -> LesionHits:
    """Per-lesion hit rate: each connected lesion (``scipy.ndimage.label``, faces, edges and
    corners connect) is hit when the map reaches ``fraction`` of its global maximum somewhere
    within ``tolerance_mm`` of the lesion. A map that only lights up the largest of several
    lesions hits one of them, where the pointing game would call it a success.
    """
    from scipy import ndimage

    if not 0 < fraction <= 1:
        raise MetricInputError(f"fraction must be in (0, 1], not {fraction}")
    m = as_map(cam)
    sp = spacing_of(cam, spacing, m.ndim - 2)
    masks = _nonempty(as_mask(mask, m), "lesion mask")
    voxel_mm3 = float(np.prod(sp))
    hits, peaks, volumes = [], [], []
    for i in range(m.shape[0]):
        values = m[i, 0].double().cpu().numpy()
        top = values.max()
        labels, count = ndimage.label(masks[i, 0].cpu().numpy(), structure=np.ones((3,) * values.ndim))
        sample_peaks = []
        for lesion in range(1, count + 1):
            near = _distance_to(labels == lesion, sp) <= tolerance_mm + 1e-9
            sample_peaks.append(values[near].max() / top if top > 0 else 0.0)
        p = torch.tensor(sample_peaks, dtype=torch.float64)
        peaks.append(p)
        hits.append((p >= fraction) & (p > 0))
        volumes.append(torch.from_numpy(np.bincount(labels.ravel(), minlength=count + 1)[1:] * voxel_mm3))
    return LesionHits(hits, peaks, volumes)


def _distance_to(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance in mm from every voxel to the nearest voxel of ``mask`` (0 inside)."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(~mask, sampling=spacing)


def _nonempty(masks: torch.Tensor, name: str) -> torch.Tensor:
    empty = ~masks.flatten(1).any(1)
    if bool(empty.any()):
        raise MetricInputError(f"the {name} of sample {int(empty.nonzero()[0])} is empty")
    return masks


def localization(
    cam: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    tolerance_mm: float = TOLERANCE_MM,
) -> dict[str, float | bool]:
    """One map's localization numbers for a person or a table: the pointing game and the energy.

    Args:
        cam: ``(*S)`` map; mask: ``(*S)``, nonzero inside the lesions; spacing: mm per axis (a clip:
            :func:`within_frames`).

    Returns:
        ``pointing_hit`` (the maximum within ``tolerance_mm`` of the mask), ``distance_mm`` (from
        the maximum to the mask), ``energy_in_mask`` (share of the map inside the mask) and
        ``energy_baseline`` (a uniform map's share: the mask's volume fraction).
    """
    m = torch.as_tensor(np.ascontiguousarray(np.asarray(cam, dtype=np.float32)))
    lesion = torch.as_tensor(np.ascontiguousarray(np.asarray(mask) > 0))
    points = pointing_game(m, lesion, tolerance_mm=tolerance_mm, spacing=tuple(float(s) for s in spacing))
    energy = energy_pointing_game(m.clamp_min(0), lesion)
    return {
        "pointing_hit": bool(points.hits[0]),
        "distance_mm": round(float(points.distance_mm[0]), 3),
        "energy_in_mask": round(float(energy.energy[0]), 4),
        "energy_baseline": round(float(energy.baseline[0]), 4),
    }
