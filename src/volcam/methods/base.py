"""What a CAM method receives, and the small tensor helpers every method shares.

A method is a pure function of tensors. The engine fills a :class:`LayerCapture` per target layer
with only what the method asks for (see :mod:`volcam.methods.registry`), and the method returns a
map at the layer's resolution, ``(B, 1, *s)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from volcam.methods.runner import ModelRunner

__all__ = ["LayerCapture", "channel_weighted_sum", "spatial_dims"]


@dataclass(frozen=True)
class LayerCapture:
    """Tensors of one target layer for one target, all on the model's device.

    Attributes:
        layer: the layer's name in ``model.named_modules()``.
        activations: ``A``, ``(B, K, *s)``.
        gradients: ``dA = d score / d A``, ``(B, K, *s)``, for methods that need gradients.
        class_weights: ``(B, K)`` rows of the linear layer after global pooling, for CAM.
        gradient_moments: means of ``g``, ``g**2``, ``g**3`` over noisy inputs, each
            ``(B, K, *s)``, for Smooth Grad-CAM++.
        spacing: the feature map's voxel size per spatial axis, in mm (seconds on a time axis):
            the input's spacing times the layer's stride. Always filled (1.0 per input voxel when
            the input carries no spacing), so filters can take widths in mm.
        input_spacing: the input's voxel size per spatial axis, same units.
        runner: batched gradient-free model calls, for perturbation methods
            (:class:`volcam.methods.runner.ModelRunner`; it holds the input too).
        classes: ``(B,)`` the class explained per sample (-1 for a custom target), for methods
            that keep one map per class (L-CAM).
        attention: the attention weights of each transformer block of the forward, ``(B, H, T, T)``
            each, in the order the blocks ran, for attention rollout.
        attention_gradients: ``d score / d A`` for each of those blocks' weights, the same shapes, for
            gradient-weighted attention.
    """

    layer: str
    activations: torch.Tensor
    gradients: torch.Tensor | None = None
    class_weights: torch.Tensor | None = None
    gradient_moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    spacing: tuple[float, ...] | None = None
    input_spacing: tuple[float, ...] | None = None
    runner: ModelRunner | None = None
    classes: torch.Tensor | None = None
    attention: tuple[torch.Tensor, ...] | None = None
    attention_gradients: tuple[torch.Tensor, ...] | None = None


def spatial_dims(t: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of a channel-first ``(B, K, *s)`` tensor: ``(2, ..., ndim - 1)``."""
    return tuple(range(2, t.ndim))


def channel_weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k A_k`` for weights ``(B, K)`` and activations ``(B, K, *s)`` -> ``(B, 1, *s)``.

    Done as a batched matrix product rather than broadcast-multiply-then-sum, so no ``(B, K, *s)``
    temporary is made (that temporary is as large as the activations themselves).
    """
    b, k = activations.shape[:2]
    flat = activations.reshape(b, k, -1)
    out = torch.bmm(weights.to(flat.dtype).view(b, 1, k), flat)
    return out.view(b, 1, *activations.shape[2:])
