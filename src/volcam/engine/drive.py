"""How volcam runs a network: frozen, its input on its device and dtype, its output read as asked.

The one home of what every part that calls a network needs (the engine, the metrics, the sanity and
robustness checks, L-CAM training):

- :func:`frozen`: eval mode and ``requires_grad=False`` for the duration, restored exactly;
- :func:`module_device`, :func:`module_dtype`, :func:`model_input`: where and in which floating dtype
  the network computes, and an input moved there;
- :func:`input_spacing`: an input's voxel size in mm, from a ``MetaTensor``'s affine;
- :func:`read_output`: the tensor a caller scores, picked from the network's raw output by
  ``output=`` (a card's ``"output"``, or :meth:`volcam.Model.output_of`), never by guessing the first
  of several tensors: an auxiliary head may come first.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from volcam.targets import OutputSpec, select_output

__all__ = ["frozen", "input_spacing", "model_input", "module_device", "module_dtype", "plain_tensor", "read_output"]


@contextlib.contextmanager
def frozen(
    model: nn.Module,
    eval_mode: bool = True,
    modules: Sequence[nn.Module] | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
) -> Iterator[None]:
    """Eval mode (with ``eval_mode``) and ``requires_grad=False`` on every parameter, restored exactly
    on exit, also when an exception passes through.

    Only what differs is touched: a model already in eval mode without trainable parameters (as
    :func:`volcam.load_model` gives it) costs two scans of its modules, not thousands of attribute
    writes, which matters beside a small network's forward of a few milliseconds. ``modules`` and
    ``parameters`` are the model's, listed by a caller that freezes it often.
    """
    all_modules: Iterable[nn.Module] = model.modules() if modules is None else modules
    all_parameters: Iterable[nn.Parameter] = model.parameters() if parameters is None else parameters
    training = [m for m in all_modules if m.training] if eval_mode else []
    trainable = [p for p in all_parameters if p.requires_grad]
    try:
        if training:
            model.eval()  # through the model's own train() override, if it has one
        for p in trainable:
            p.requires_grad_(False)
        yield
    finally:
        for m in training:
            m.training = True
        for p in trainable:
            p.requires_grad_(True)


def module_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without either."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def module_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter; torch's default without one."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def plain_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` without its ``MetaTensor`` metadata or autograd history (MONAI is not imported for this)."""
    monai_data = sys.modules.get("monai.data")
    if monai_data is not None and isinstance(t, monai_data.MetaTensor):
        return t.as_tensor()
    return t.detach()


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain tensor (:func:`plain_tensor`) on the model's device, in its floating dtype."""
    return plain_tensor(x).to(device=module_device(model), dtype=module_dtype(model))


def input_spacing(x: torch.Tensor, dims: int) -> tuple[float, ...] | None:
    """The voxel size (mm) of an input ``(B, C, *S)`` or ``(C, *S)`` from a ``MetaTensor``'s affine (the
    column norms of its linear part, :func:`volcam.io.image.voxel_spacing`); ``None`` for a plain tensor
    or an affine of fewer axes."""
    from volcam.io.image import voxel_spacing

    monai_data = sys.modules.get("monai.data")
    if monai_data is None or not isinstance(x, monai_data.MetaTensor):
        return None
    affine = torch.as_tensor(x.affine, dtype=torch.float64)
    if affine.ndim == 3:
        affine = affine[0]
    if affine.shape[0] < dims + 1:
        return None
    return voxel_spacing(affine.cpu().numpy(), dims)


def read_output(model: nn.Module, x: torch.Tensor, output: OutputSpec = None) -> torch.Tensor:
    """The network's output on ``x`` as ``output`` picks it (:func:`volcam.targets.select_output`):
    what the engine explains is what every metric scores."""
    raw: Any = model(x)
    return select_output(raw, output)
