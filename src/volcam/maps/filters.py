"""Filters for gradients and maps: a spacing-aware Gaussian (widths in mm) and the rank Gaussian filter.

Both work on channel-first tensors with 1-3 spatial axes (images, volumes, clips), on the tensor's
device and in its dtype, with no Python loops over voxels.

Example::

    >>> g = torch.randn(1, 512, 4, 8, 8)                       # gradients on a (4, 2, 2) mm grid
    >>> gaussian_filter_mm(g, sigma_mm=4.0, spacing=(4.0, 2.0, 2.0)).shape   # 1, 2, 2 voxels
    torch.Size([1, 512, 4, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_filter_mm", "rank_gaussian_filter", "sigma_in_voxels"]


def sigma_in_voxels(
    sigma_mm: float | Sequence[float], spacing: float | Sequence[float], ndim: int
) -> tuple[float, ...]:
    """Per-axis σ in voxels, ``sigma_mm / spacing``, for ``ndim`` spatial axes.

    ``sigma_mm`` and ``spacing`` are a number (every axis) or one value per axis, in the same units
    (mm; seconds on a time axis).
    """
    sig = _per_axis(sigma_mm, ndim, "sigma_mm")
    spc = _per_axis(spacing, ndim, "spacing")
    if any(s < 0 or not math.isfinite(s) for s in sig):
        raise ValueError(f"sigma_mm must be finite and >= 0, got {sig}")
    if any(s <= 0 or not math.isfinite(s) for s in spc):
        raise ValueError(f"spacing must be finite and > 0, got {spc}")
    return tuple(s / p for s, p in zip(sig, spc, strict=True))


def gaussian_filter_mm(
    t: torch.Tensor,
    sigma_mm: float | Sequence[float],
    spacing: float | Sequence[float] = 1.0,
    truncate: float = 4.0,
) -> torch.Tensor:
    """Gaussian smoothing of ``t`` ``(B, C, *s)`` (1-3 spatial axes) with σ in mm, per axis.

    σ in voxels is ``sigma_mm / spacing`` on each axis, so σ = (2, 1, 1) mm on a (2, 1, 1) mm grid
    is one voxel on every axis; an axis with σ = 0 is left alone. Each channel is filtered on its
    own, separably, with MONAI's discrete Gaussian (``gaussian_1d``, the "erf" kernel: the
    continuous Gaussian integrated over each voxel), cut at ``truncate`` σ and normalised to sum 1.

    Borders are padded by replicating the edge voxel, not with zeros as MONAI's ``GaussianFilter``
    does: feature maps are often 2-6 voxels a side, where zero padding would pull most of the map
    towards 0. With replicate padding a constant field stays constant.

    Returns a tensor of ``t``'s shape, device and dtype.
    """
    if t.ndim not in (3, 4, 5):
        raise ValueError(f"expected (B, C, *s) with 1-3 spatial axes, got shape {tuple(t.shape)}")
    ndim = t.ndim - 2
    sigmas = sigma_in_voxels(sigma_mm, spacing, ndim)
    if all(s == 0 for s in sigmas):
        return t
    # MONAI is imported here, not at module level: `import volcam` stays light
    from monai.networks.layers.convutils import gaussian_1d
    from monai.networks.layers.simplelayers import separable_filtering

    kernels = []
    for s in sigmas:
        if s == 0:
            # a unit kernel: separable_filtering skips the axis
            kernels.append(torch.ones(1, device=t.device, dtype=t.dtype))
            continue
        k = gaussian_1d(torch.tensor(s, device=t.device), truncated=truncate, approx="erf")
        kernels.append((k / k.sum()).to(t.dtype))
    return separable_filtering(t, kernels, mode="replicate")


def rank_gaussian_filter(m: torch.Tensor) -> torch.Tensor:
    """Rank Gaussian filter (Token Activation Map, Li et al., ICCV 2025) of ``(B, 1, *s)`` maps, 2D or 3D.

    In each 3×3 (3×3×3) window the values are sorted and averaged with weights
    ``exp(-r² / 2σ²)`` over their rank offset ``r`` from the middle, with ``σ = std / mean`` of the
    window (population std). A smooth window (small σ) puts its weight on the middle rank and acts
    like a median; a noisy one (large σ) spreads it and acts like a mean. Where the window mean is
    ``<= 0`` the output is 0. Borders are mirrored (reflect; replicate on an axis of length 1).

    Vectorised with ``unfold``: memory is about ``window size × the map``.
    """
    if m.ndim not in (4, 5) or m.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) or (B, 1, D, H, W) map, got shape {tuple(m.shape)}")
    ndim = m.ndim - 2
    padded = m
    for axis in range(ndim):
        # pad one axis at a time, so each can pick the mode its length allows
        pad = [0, 0] * ndim
        pad[2 * (ndim - 1 - axis) : 2 * (ndim - 1 - axis) + 2] = [1, 1]
        mode = "reflect" if m.shape[2 + axis] > 1 else "replicate"
        padded = F.pad(padded, pad, mode=mode)
    windows = padded
    for axis in range(ndim):
        windows = windows.unfold(2 + axis, 3, 1)  # (B, 1, *s, 3, ..., 3), a view
    windows = windows.reshape(*m.shape, 3**ndim)
    ranked, _ = windows.sort(dim=-1)
    mean = ranked.mean(dim=-1, keepdim=True)
    std = ranked.std(dim=-1, correction=0, keepdim=True)
    positive = mean > 0
    # σ -> 0 (a constant window) puts all weight on the middle rank: the median, i.e. the constant
    tiny = torch.finfo(m.dtype).tiny
    sigma = torch.where(positive, std / torch.where(positive, mean, torch.ones_like(mean)), torch.zeros_like(mean))
    sigma = sigma.clamp_min(math.sqrt(tiny))
    offsets = torch.arange(3**ndim, device=m.device, dtype=m.dtype) - (3**ndim) // 2
    logits = -(offsets**2) / (2 * sigma**2)
    weights = torch.softmax(logits, dim=-1)  # exp(-r²/2σ²) normalised, without overflow for tiny σ
    out = (weights * ranked).sum(dim=-1)
    return torch.where(positive.squeeze(-1), out, torch.zeros_like(out))


def _per_axis(value: float | Sequence[float] | np.ndarray | torch.Tensor, ndim: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (np.ndarray, torch.Tensor)):  # a 0-d one is a single number, else one per axis
        value = value.tolist()
    if not isinstance(value, Sequence):  # a single number (int, float, NumPy scalar): every axis
        return (float(value),) * ndim
    values = tuple(float(v) for v in value)
    if len(values) != ndim:
        raise ValueError(f"{name} has {len(values)} values for {ndim} spatial axes")
    return values
