"""The gradient family: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM, HiResCAM, Respond-CAM, LayerCAM.

Pure functions of the target layer's activations ``A`` and gradients ``g = d y_c / d A``, both
``(B, K, *s)`` with any number of spatial axes (images, volumes, clips); each returns the map at
the layer's resolution ``(B, 1, *s)``. Formulas in ``docs/methods.md#gradcam`` and the sections after it.

Example::

    >>> a, g = torch.rand(1, 16, 4, 4, 4), torch.randn(1, 16, 4, 4, 4)
    >>> gradcam(a, g).shape
    torch.Size([1, 1, 4, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from volcam.methods.base import channel_weighted_sum, spatial_dims

__all__ = [
    "gradcam",
    "gradcampp",
    "gradcampp_from_moments",
    "hirescam",
    "layercam",
    "layercam_fuse",
    "respondcam",
    "xgradcam",
]


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): ``ReLU(sum_k alpha_k A_k)``, ``alpha_k = mean_v g_k(v)``."""
    alpha = gradients.mean(dim=spatial_dims(gradients))
    return F.relu(channel_weighted_sum(alpha, activations))


def gradcampp(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al., 2018) with the exponential-score approximation.

    ``w_k = sum_v a_k(v) ReLU(g_k(v))`` with ``a_k(v) = g^2 / (2 g^2 + sum_u A_k(u) g^3)`` and
    ``a = 0`` where ``g = 0``.
    """
    g2 = gradients.pow(2)
    return gradcampp_from_moments(activations, gradients, g2, g2 * gradients)


def gradcampp_from_moments(
    activations: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM++ from gradient moments ``g``, ``g^2``, ``g^3`` (means over noisy inputs for Smooth
    Grad-CAM++, Omeiza et al., 2019; the plain powers of one gradient for Grad-CAM++)."""
    dims = spatial_dims(activations)
    total = activations.sum(dim=dims, keepdim=True)  # sum_u A_k(u), (B, K, 1, ...)
    denom = 2 * g2 + total * g3
    # a = 0 where the gradient vanishes; elsewhere guard the rare zero denominator
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(g2 != 0, g2 / safe, torch.zeros_like(g2))
    weights = (alpha * F.relu(g1)).sum(dim=dims)
    return F.relu(channel_weighted_sum(weights, activations))


def xgradcam(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020): ``alpha_k = sum_v A_k(v) g_k(v) / (sum_u A_k(u) + eps)``."""
    dims = spatial_dims(activations)
    alpha = (activations * gradients).sum(dim=dims) / (activations.sum(dim=dims) + eps)
    return F.relu(channel_weighted_sum(alpha, activations))


def hirescam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020): ``ReLU(sum_k g_k(v) A_k(v))``, no spatial averaging, so
    the map shows exactly where the score's first-order change comes from."""
    return F.relu((gradients * activations).sum(dim=1, keepdim=True))


def respondcam(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Respond-CAM (Zhao et al., MICCAI 2018, made for 3D): ``sum_k w_k A_k`` with
    ``w_k = sum_v g_k(v) A_k(v) / (sum_v A_k(v) + eps)``, and no ReLU: the map is signed, negative
    where the layer's evidence is against the class, and sums over ``v`` to ``sum_{k,v} g_k A_k``
    (up to ``eps``), the score's first-order term (the paper's sum-to-score property). With a ReLU
    it would be XGrad-CAM, whose weights are the same; the engine's min-max scaling puts the
    strongest negative evidence at 0 (``docs/methods.md#respondcam``)."""
    dims = spatial_dims(activations)
    weights = (activations * gradients).sum(dim=dims) / (activations.sum(dim=dims) + eps)
    return channel_weighted_sum(weights, activations)


def layercam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021): ``ReLU(sum_k ReLU(g_k(v)) A_k(v))``; works on early layers."""
    return F.relu((F.relu(gradients) * activations).sum(dim=1, keepdim=True))


def layercam_fuse(maps: Sequence[torch.Tensor], gamma: float = 2.0, eps: float = 1e-8) -> torch.Tensor:
    """Fuse LayerCAM maps of several layers, already upsampled to one grid ``(B, 1, *S)`` each.

    Each map is scaled by ``tanh(gamma * M / max M)`` per sample (shallow layers have small, noisy
    values; the scaling lifts them to a common range) and the fused map is the element-wise max.
    """
    scaled = []
    for m in maps:
        peak = m.flatten(1).amax(dim=1).view(-1, *[1] * (m.ndim - 1))
        scaled.append(torch.tanh(gamma * m / (peak + eps)))
    return torch.stack(scaled).amax(dim=0)
