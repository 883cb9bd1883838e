"""Voxel-level precision and recall of a map against the lesions: VxAP and MaxF1 (SE3D).

A map is min–max normalised to ``[0, 1]`` and its voxels counted in a histogram per bin, lesion
voxels and the others (the background) apart: :class:`VoxelHistograms`, 2 × 101 integers per map.
Histograms add (``a + b``, ``sum(...)``), so a cohort pools its voxels without keeping its maps, and
:func:`precision_recall` reads VxAP and MaxF1 off one case's histograms or off the pool.

Thresholds and bins (``bins`` = 100, as in SE3D's code): the thresholds are ``τ_k = k / bins`` for
``k = 0 … bins`` (0, 0.01, …, 0.99, 1); a voxel is counted at ``τ_k`` when its value is ``≥ τ_k``. Bin
``k < bins`` holds the voxels with ``τ_k ≤ value < τ_{k+1}``, bin ``bins`` those at the map's maximum
(value 1). Definitions and the choices made: docs/methods.md#vxap.

Example::

    >>> h = sum(voxel_histograms(case.map, case.lesions)[0] for case in cases)   # pooled
    >>> precision_recall(h).vxap, precision_recall(h).max_f1
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from volcam.metrics._common import MetricInputError, as_map, as_mask

__all__ = [
    "BINS",
    "VoxelHistograms",
    "VoxelPrecision",
    "curves",
    "pool",
    "precision_recall",
    "voxel_histograms",
    "voxel_precision_recall",
]

#: Bins of the normalised map (SE3D's 0.01 steps); the thresholds are ``k / BINS``, ``k = 0 … BINS``.
BINS = 100
# voxels normalised and binned at once: bounds the float64 copy of a clinical-size map (8 bytes each)
_CHUNK = 1 << 22


@dataclass(frozen=True, eq=False)
class VoxelHistograms:
    """One map's (or a pool of maps') voxels per bin of the normalised map.

    Attributes:
        lesion: ``(bins + 1,)`` int64, lesion voxels per bin.
        background: ``(bins + 1,)`` int64, the other voxels (within the region) per bin.

    Bin ``k < bins`` counts values in ``[k / bins, (k + 1) / bins)``, bin ``bins`` the value 1 (the
    map's maximum). ``a + b`` pools two; ``sum(histograms)`` pools many.
    """

    lesion: np.ndarray
    background: np.ndarray

    def __post_init__(self) -> None:
        lesion = np.asarray(self.lesion, dtype=np.int64)
        background = np.asarray(self.background, dtype=np.int64)
        if lesion.ndim != 1 or lesion.shape != background.shape or lesion.size < 2:
            raise MetricInputError(
                f"voxel histograms need two counts of the same length >= 2, not {lesion.shape} and {background.shape}"
            )
        if (lesion < 0).any() or (background < 0).any():
            raise MetricInputError("voxel histograms count voxels: no negative counts")
        object.__setattr__(self, "lesion", lesion)
        object.__setattr__(self, "background", background)

    @property
    def bins(self) -> int:
        """The number of bins of width ``1 / bins`` (one more holds the maximum)."""
        return self.lesion.size - 1

    @property
    def thresholds(self) -> np.ndarray:
        """``(bins + 1,)`` float64 ``k / bins``: the lower edge of each bin."""
        return np.arange(self.bins + 1, dtype=np.float64) / self.bins

    def __add__(self, other: VoxelHistograms) -> VoxelHistograms:
        if not isinstance(other, VoxelHistograms):
            return NotImplemented
        if other.bins != self.bins:
            raise MetricInputError(f"cannot pool histograms of {self.bins} and {other.bins} bins")
        return VoxelHistograms(self.lesion + other.lesion, self.background + other.background)

    def __radd__(self, other: Any) -> VoxelHistograms:
        if isinstance(other, int) and other == 0:  # sum()'s start
            return self
        return NotImplemented


def pool(histograms: Iterable[VoxelHistograms]) -> VoxelHistograms:
    """The sum of ``histograms`` (at least one)."""
    items = list(histograms)
    if not items:
        raise MetricInputError("no voxel histograms to pool")
    return sum(items[1:], items[0])


def voxel_histograms(cam: Any, mask: Any, *, region: Any | None = None, bins: int = BINS) -> list[VoxelHistograms]:
    """Each map's voxels per bin of its min–max normalised values, lesion and background apart.

    Args:
        cam: ``(B, 1, *S)`` or one map ``(*S)``; finite values (any sign).
        mask: lesion mask on the same grid (``(*S)``, ``(B, *S)`` or ``(B, 1, *S)``); may be empty
            (a case without lesions adds background only to a pool).
        region: a lung or body mask: only its voxels are normalised and counted (lesion voxels outside
            it too are left out); ``None``: the whole grid.
        bins: bins of width ``1 / bins``.

    Returns:
        ``B`` histograms of ``(bins + 1,)`` counts. A constant map (or region) has every voxel at 0:
        one bin, the lowest threshold.
    """
    if not isinstance(bins, int) or bins < 1:
        raise MetricInputError(f"bins must be a positive integer, not {bins!r}")
    m = as_map(cam)
    masks = as_mask(mask, m)
    regions = as_mask(region, m, "region") if region is not None else None
    out = []
    for i in range(m.shape[0]):
        values, lesion = m[i, 0].reshape(-1), masks[i, 0].reshape(-1)
        if regions is not None:
            keep = regions[i, 0].reshape(-1)
            if not bool(keep.any()):
                raise MetricInputError(f"the region of sample {i} is empty")
            values, lesion = values[keep], lesion[keep]
        if not bool(torch.isfinite(values).all()):
            raise MetricInputError(f"the map of sample {i} has values that are not finite")
        out.append(_histograms(values, lesion, bins))
    return out


def _histograms(values: torch.Tensor, lesion: torch.Tensor, bins: int) -> VoxelHistograms:
    """``values`` ``(N,)`` normalised and binned (the last ``k / bins ≤ v`` → bin ``k``), chunk by chunk."""
    low, high = float(values.min()), float(values.max())
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    flat, inside = values.detach().cpu().numpy(), lesion.cpu().numpy()
    counts = np.zeros(2 * (bins + 1), dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        v = flat[start : start + _CHUNK].astype(np.float64)
        v = (v - low) / (high - low) if high > low else np.zeros_like(v)
        k = np.minimum((v * bins).astype(np.int64), bins)  # may be one off where v * bins rounds
        k -= v < edges[k]
        k += (k < bins) & (v >= edges[np.minimum(k + 1, bins)])
        counts += np.bincount(k + (bins + 1) * inside[start : start + _CHUNK], minlength=2 * (bins + 1))
    return VoxelHistograms(counts[bins + 1 :], counts[: bins + 1])


@dataclass(frozen=True, eq=False)
class VoxelPrecision:
    """VxAP and MaxF1 of one case's (or a pool's) histograms.

    Attributes:
        vxap: ``Σ_k precision(τ_k) · (recall(τ_k) − recall(τ_{k+1}))`` (recall above 1 is 0).
        max_f1: the largest voxel F1 over the thresholds.
        precision_at_max_f1, recall_at_max_f1, threshold_at_max_f1: where it is reached (the lowest
            such threshold on a tie).
        thresholds, precision, recall: ``(bins + 1,)`` the curve (precision 0 where no voxel is counted).
    """

    vxap: float
    max_f1: float
    precision_at_max_f1: float
    recall_at_max_f1: float
    threshold_at_max_f1: float
    thresholds: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)


def curves(lesion: np.ndarray, background: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and VxAP of histograms stacked along leading axes (vectorised: the
    bootstrap scores thousands of resampled pools at once).

    Args:
        lesion, background: ``(..., bins + 1)`` counts (integers or float weights).

    Returns:
        ``precision``, ``recall``, ``f1``: ``(..., bins + 1)``; ``vxap``, ``max_f1``: ``(...)``; ``best``:
        ``(...)`` index of the max-F1 threshold. ``NaN`` (``best`` 0) where there is no lesion voxel.
    """
    lesion = np.asarray(lesion, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    tp = np.cumsum(lesion[..., ::-1], axis=-1)[..., ::-1]  # lesion voxels >= τ_k
    fp = np.cumsum(background[..., ::-1], axis=-1)[..., ::-1]
    positives = tp[..., :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        recall = tp / positives
        f1 = 2 * tp / (tp + fp + positives)  # = 2PR / (P + R); 0 where nothing lesion is counted
        vxap = (precision * lesion).sum(-1) / positives[..., 0]  # recall(τ_k) − recall(τ_{k+1}) = lesion_k / P
    none = positives[..., 0] <= 0
    best = np.where(none, 0, np.argmax(np.where(np.isnan(f1), -1.0, f1), axis=-1))
    max_f1 = np.take_along_axis(f1, best[..., None], axis=-1)[..., 0]
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "vxap": np.where(none, np.nan, vxap),
        "max_f1": np.where(none, np.nan, max_f1),
        "best": best,
    }


def precision_recall(histograms: VoxelHistograms) -> VoxelPrecision:
    """VxAP, MaxF1 and the precision–recall curve of one case's histograms, or of a pool's.

    Raises:
        MetricInputError: the histograms count no lesion voxel (recall is undefined).
    """
    if int(histograms.lesion.sum()) == 0:
        raise MetricInputError("the voxel histograms count no lesion voxel: no precision or recall")
    found = curves(histograms.lesion, histograms.background)
    best = int(found["best"])
    thresholds = histograms.thresholds
    return VoxelPrecision(
        vxap=float(found["vxap"]),
        max_f1=float(found["max_f1"]),
        precision_at_max_f1=float(found["precision"][best]),
        recall_at_max_f1=float(found["recall"][best]),
        threshold_at_max_f1=float(thresholds[best]),
        thresholds=thresholds,
        precision=found["precision"],
        recall=found["recall"],
    )


def voxel_precision_recall(cam: Any, mask: Any, *, region: Any | None = None, bins: int = BINS) -> VoxelPrecision:
    """VxAP and MaxF1 of one map (``(*S)`` or ``(1, 1, *S)``), or of a batch's maps pooled (each map
    normalised on its own, the voxels of all counted together). See :func:`voxel_histograms`."""
    return precision_recall(pool(voxel_histograms(cam, mask, region=region, bins=bins)))
