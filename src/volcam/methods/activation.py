"""CAM (Zhou et al., CVPR 2016): class weights of the linear layer after global average pooling.

One forward and no backward: for a GAP + linear head, ``y_c = sum_k w_k^c mean_v A_k(v) + b_c``,
so ``sum_k w_k^c A_k(v)`` tells how much each position adds to the logit. That identity is what CAM
stands on, and a linear layer of the right shape does not make it true (a LayerNorm or a ReLU between
the layer and the pooling breaks it), so the engine checks it on the forward it already has
(:func:`gap_linear_mismatch`) before it computes a CAM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from volcam.methods.base import channel_weighted_sum

__all__ = ["cam", "gap_linear_mismatch", "gap_linear_tolerance"]


def cam(activations: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Class activation map ``ReLU(sum_k w_k^c A_k)``.

    Args:
        activations: ``(B, K, *s)`` input of the global pooling.
        class_weights: ``(B, K)``, the linear layer's row for each sample's class (negated for the
            negative class of a single-logit model).

    Returns:
        ``(B, 1, *s)``; ReLU keeps the evidence *for* the class, as every gradient method does, so
        CAM, Grad-CAM, HiResCAM and XGrad-CAM agree up to scale on a GAP + linear head.

    Example::

        >>> a = torch.rand(2, 8, 4, 5, 6)
        >>> cam(a, torch.randn(2, 8)).shape
        torch.Size([2, 1, 4, 5, 6])
    """
    return F.relu(channel_weighted_sum(class_weights, activations))


def gap_linear_mismatch(
    activations: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, logits: torch.Tensor
) -> float:
    """How far ``logits`` are from ``W · mean_v(A) + b``, relative to the size of its terms.

    Args:
        activations: ``(B, K, *s)`` the target layer's output.
        weight: ``(C, K)`` and ``bias`` ``(C,)`` (or ``None``): the linear layer's.
        logits: ``(B, C)`` the model's output on the same forward.

    Returns:
        ``max |y - (W·GAP(A) + b)| / max(sum_k |w_k^c GAP(A)_k| + |b_c|)``: rounding error (about
        1e-7 in float32) when the head is global average pooling and that linear layer, order 1
        when something else sits between them; ``inf`` when the shapes do not fit at all.

    Example::

        >>> a, fc = torch.rand(2, 8, 3, 3, 3), torch.nn.Linear(8, 2)
        >>> gap_linear_mismatch(a, fc.weight, fc.bias, fc(a.mean((2, 3, 4)))) < 1e-6
        True
    """
    if logits.ndim != 2 or logits.shape != (activations.shape[0], weight.shape[0]):
        return float("inf")
    pooled = activations.detach().double().flatten(2).mean(2)  # (B, K)
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    b = b.to(pooled.device)
    expected = pooled @ w.T + b
    size = (pooled.abs() @ w.abs().T + b.abs()).amax()
    error = (logits.detach().double() - expected).abs().amax()
    if size > 0:
        return float(error / size)
    return 0.0 if error == 0 else float("inf")  # all terms zero: the logits must be exactly zero too


def gap_linear_tolerance(dtype: torch.dtype) -> float:
    """The largest :func:`gap_linear_mismatch` rounding explains in ``dtype`` (1e-3 in float32, more
    for half precision): far below what any layer between the pooling and the layer gives."""
    return max(1e-3, 50 * torch.finfo(dtype).eps)
