"""The one-call API: ``volcam.explain(model, x)`` and ``volcam.methods()``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from volcam.engine.core import CamEngine, LayerSpec
from volcam.engine.tokens import Reshape
from volcam.maps.result import CamResult
from volcam.methods.registry import MethodInfo
from volcam.methods.registry import methods as _methods
from volcam.targets import OutputSpec, Target, TargetSpec

__all__ = ["explain", "methods"]


def explain(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec | Target = None,
    layer: LayerSpec = "auto",
    *,
    device: str | torch.device | None = None,
    labels: Sequence[str] | None = None,
    reshape: Reshape | None = None,
    call: int | None = None,
    output: OutputSpec = None,
    **options: Any,
) -> CamResult:
    """Explain ``model``'s output on ``x`` with one CAM method.

    Args:
        model: a classifier (or, with a :class:`~volcam.targets.RegionTarget`, a segmentation net).
        x: ``(B, C, *S)`` image, volume or clip batch; a MONAI ``MetaTensor`` keeps its affine.
        method: see :func:`methods`; ``"gradcam"`` by default.
        target: class index or label per sample, or a :class:`~volcam.targets.Target`;
            ``None`` explains each sample's predicted class.
        layer: ``"auto"``, a layer name, or several names.
        device: where to compute (the model's device by default).
        labels: class names.
        reshape: for a transformer whose token grid the model does not tell, ``(B, N, C) ->
            (B, C, *grid)`` (select and reorder only); ViT and Swin grids are read off the model.
        call: which call of a layer the forward runs more than once (0 the first, -1 the last).
        output: for a model returning a dict, tuple or list: the key, index or callable that picks
            the tensor explained (a callable target still receives the whole output).
        options: method options, e.g. ``n_samples=`` for ``"smoothgradcam++"``.

    Returns:
        :class:`~volcam.maps.result.CamResult` with ``map`` ``(B, 1, *S)`` in [0, 1].

    For several methods or classes on one input, use :class:`~volcam.engine.CamEngine`: it
    keeps the forward pass and pays only a backward through the head per explanation.

    Example::

        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
        >>> result = explain(net, torch.rand(1, 1, 32, 32, 32), "gradcam++")
        >>> result.map.shape, result.layer
        (torch.Size([1, 1, 32, 32, 32]), 'layer4')
    """
    with CamEngine(model, layer, device=device, labels=labels, reshape=reshape, call=call, output=output) as engine:
        return engine.explain(x, method, target, **options)


def methods() -> tuple[MethodInfo, ...]:
    """Every CAM method volcam has, with what each needs (gradients? extra passes?)."""
    return _methods()
