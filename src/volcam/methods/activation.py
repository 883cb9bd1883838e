"""CAM (Zhou et al., CVPR 2016): class weights of the linear layer after global average pooling.

One forward and no backward: for a GAP + linear head, ``y_c = sum_k w_k^c mean_v A_k(v) + b_c``,
so ``sum_k w_k^c A_k(v)`` tells how much each position adds to the logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from volcam.methods.base import channel_weighted_sum

__all__ = ["cam"]


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
