"""L-CAM-Fm / L-CAM-Img: an attention head trained on a frozen classifier, one forward to explain.

Gkartzonika, Gkalelis, Mezaris, "Learning Visual Explanations for DCNN-Based Image Classifiers Using
an Attention Mechanism" (ECCV workshops 2022). A 1×1(×1) convolution and a sigmoid turn the target
layer's feature maps ``A (B, K, *s)`` into one attention map per class ``(B, C, *s)``. It is trained
(see :mod:`volcam.workflows.lcam_training`) with the classifier frozen so that the class's map, multiplied into
``A`` (L-CAM-Fm) or, upsampled, into the input (L-CAM-Img), keeps the classifier's decision while
staying small (area penalty) and smooth (total-variation penalty). Explaining is then the forward
that gives ``A`` plus this convolution: no gradients, no extra passes.

This module holds the attention module, the map (a pure function of tensors) and the loss terms;
training and the weights file live in :mod:`volcam.workflows.lcam_training`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from volcam.defaults import LCAM_LOSS
from volcam.errors import MethodError

__all__ = ["LCamAttention", "area_loss", "lcam", "lcam_loss", "masked_logits_target", "select_class", "tv_loss"]

VARIANTS = ("fm", "img")

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class LCamAttention(nn.Module):
    """``A (B, K, *s) -> sigmoid(W A + b) (B, C, *s)``: a 1×1(×1) convolution, any number of spatial axes.

    The weight is stored as ``(C, K)`` and viewed as a ``C × K × 1 × … × 1`` kernel for the input's
    dimensionality, so one trained module works on 1D, 2D and 3D feature maps alike.

    Args:
        in_channels: ``K``, the target layer's channels.
        num_classes: ``C``, the classifier's classes (2 for a single-logit model).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        # the fan-in initialisation of a 1×1 convolution (what nn.ConvNd does)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        bound = 1 / in_channels**0.5
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, activations: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid maps ``(B, C, *s)``."""
        dims = activations.ndim - 2
        if dims not in _CONV:
            raise MethodError(f"L-CAM takes feature maps (B, K, *s) with 1 to 3 spatial axes, not {activations.ndim}D")
        if activations.shape[1] != self.in_channels:
            raise MethodError(
                f"the L-CAM module was trained on a layer with {self.in_channels} channels; "
                f"this layer has {activations.shape[1]}"
            )
        kernel = self.weight.to(activations.dtype).view(*self.weight.shape, *[1] * dims)
        return _CONV[dims](activations, kernel, self.bias.to(activations.dtype))

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(activations))


def select_class(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Each sample's class map: ``(B, C, *s)`` and ``(B,)`` class indices -> ``(B, 1, *s)``."""
    classes = torch.as_tensor(classes, device=maps.device, dtype=torch.long).flatten()
    if classes.numel() == 1:
        classes = classes.expand(maps.shape[0])
    if bool(((classes < 0) | (classes >= maps.shape[1])).any()):
        raise MethodError(
            f"L-CAM explains classes 0..{maps.shape[1] - 1} (one map per class); "
            f"got {classes.tolist()} (custom targets have no class map)"
        )
    index = classes.view(-1, 1, *[1] * (maps.ndim - 2)).expand(-1, 1, *maps.shape[2:])
    return maps.gather(1, index)


def lcam(activations: torch.Tensor, classes: torch.Tensor | None, module: LCamAttention | None = None) -> torch.Tensor:
    """The L-CAM map of each sample's class: ``A (B, K, *s)`` -> ``(B, 1, *s)`` in (0, 1).

    The same function serves L-CAM-Fm and L-CAM-Img: they differ in how the module was trained.

    Args:
        activations: the target layer's feature maps.
        classes: ``(B,)`` the class explained per sample.
        module: the trained :class:`LCamAttention` (a model card's, or ``module=`` given to explain).
    """
    if module is None:
        raise MethodError(
            "L-CAM needs a trained attention module: train one with volcam.train_lcam (volcam train-lcam), "
            "explain through the model card that records it, or pass module=..."
        )
    if classes is None:
        raise MethodError("L-CAM needs the explained class of each sample")
    with torch.no_grad():
        return select_class(module.to(activations.device)(activations), classes)


# -- training loss (the paper's: weighted cross-entropy + area + total variation) --------------------


def area_loss(masks: torch.Tensor, power: float = LCAM_LOSS.area_power, eps: float = 5e-4) -> torch.Tensor:
    """Mean of ``(m + eps) ** power`` over the selected maps ``(B, 1, *s)``: small masks are cheap.

    A power below 1 pushes weak values to exactly zero harder than a plain mean would; ``eps`` keeps
    the gradient of the power finite at 0.
    """
    return (masks + eps).pow(power).mean() if power != 1 else masks.mean()


def tv_loss(masks: torch.Tensor, power: float = 2.0, border: float = LCAM_LOSS.tv_border) -> torch.Tensor:
    """Total variation of ``(B, 1, *s)`` maps: summed ``|Δm| ** power`` along every spatial axis,
    plus ``border`` × the mask on the faces of the grid, divided by ``power × B`` (as in the paper)."""
    total = masks.new_zeros(())
    for axis in range(2, masks.ndim):
        total = total + masks.diff(dim=axis).abs().pow(power).sum()
        if border > 0:
            n = masks.shape[axis]
            faces = masks.narrow(axis, 0, 1).pow(power).sum()
            if n > 1:
                faces = faces + masks.narrow(axis, n - 1, 1).pow(power).sum()
            total = total + border * faces
    return total / (power * masks.shape[0])


def masked_logits_target(output: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, C)`` for cross-entropy; a single-logit model's ``(B, 1)`` becomes ``[0, l]``, whose
    softmax is ``[1 - σ(l), σ(l)]`` (volcam's two classes of a sigmoid model)."""
    if output.ndim != 2:
        raise MethodError(f"L-CAM trains on classifier logits (B, C); the model returned {tuple(output.shape)}")
    return torch.cat([torch.zeros_like(output), output], 1) if output.shape[1] == 1 else output


def lcam_loss(
    masked_output: torch.Tensor,
    classes: torch.Tensor,
    masks: torch.Tensor,
    *,
    ce_weight: float = LCAM_LOSS.ce_weight,
    area_weight: float = LCAM_LOSS.area_weight,
    area_power: float = LCAM_LOSS.area_power,
    tv_weight: float = LCAM_LOSS.tv_weight,
    tv_border: float = LCAM_LOSS.tv_border,
) -> dict[str, torch.Tensor]:
    """The L-CAM objective on one batch; the defaults are the paper's weights.

    Args:
        masked_output: the frozen classifier's logits on the masked features or input, ``(B, C)``.
        classes: ``(B,)`` the class to keep (the model's own decision, or the label).
        masks: the selected attention maps ``(B, 1, *s)``.

    Returns:
        ``{"loss", "ce", "area", "tv"}``, the weighted terms and their sum (0-d tensors).
    """
    ce = ce_weight * F.cross_entropy(masked_logits_target(masked_output), classes)
    area = area_weight * area_loss(masks, area_power)
    tv = tv_weight * tv_loss(masks, border=tv_border)
    return {"loss": ce + area + tv, "ce": ce, "area": area, "tv": tv}
