"""From a feature-resolution map to a map on the input grid: upsampling, normalisation, metadata.

All functions are dimension-agnostic over ``(B, 1, *s)`` maps with 1, 2 or 3 spatial axes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["like_input", "normalize", "upsample"]

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(B, 1, *s)`` maps to ``(B, 1, *size)`` by (bi/tri)linear interpolation.

    ``align_corners=False`` keeps voxel centres where MONAI and PyTorch put them, so an upsampled
    map lies on the input voxels it came from. A map already at ``size`` is returned as is.
    """
    size = tuple(int(s) for s in size)
    if tuple(cam.shape[2:]) == size:
        return cam
    mode = _LINEAR_MODES[len(size)]
    return F.interpolate(cam, size=size, mode=mode, align_corners=False)


def normalize(cam: torch.Tensor) -> torch.Tensor:
    """Min-max scale each sample to [0, 1] over all its axes; high means important.

    Computes ``(M - min) / (max - min)`` per sample, so a clip ``(B, 1, T, H, W)`` is normalised
    over the whole clip, not per frame. A constant map (all zero, say) becomes all zero, never NaN;
    the maximum of any other map is exactly 1, however small its range (no additive epsilon).
    """
    flat = cam.flatten(1)
    view = (-1, *[1] * (cam.ndim - 1))
    low = flat.amin(dim=1).view(view)
    span = flat.amax(dim=1).view(view) - low
    return (cam - low) / torch.where(span > 0, span, torch.ones_like(span))


def like_input(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Give ``cam`` the affine and metadata of ``x`` when ``x`` is a MONAI ``MetaTensor``.

    The map is on the input grid, so the input's affine places it in patient space as it is.
    MONAI is looked up in ``sys.modules`` rather than imported: an input cannot be a
    ``MetaTensor`` unless MONAI is already loaded, and importing it costs time and memory.
    """
    monai_data = sys.modules.get("monai.data")
    if monai_data is None or not isinstance(x, monai_data.MetaTensor):
        return cam
    return monai_data.MetaTensor(cam, meta=dict(x.meta), applied_operations=list(x.applied_operations))
