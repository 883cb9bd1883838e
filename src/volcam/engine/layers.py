"""Finding layers by name: exact look-up with helpful errors, and the ``"auto"`` choice.

Pure helpers over ``model.named_modules()``; the forward passes that record output shapes live in
:mod:`volcam.engine` (the one module that registers hooks).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from volcam.engine.tokens import Layout
from volcam.errors import LayerError, MethodError

__all__ = [
    "LayerRecord",
    "call_counts",
    "find_linear_head",
    "get_layer",
    "layer_names",
    "module_tags",
    "pick_auto_layer",
    "pick_call",
]


@dataclass(frozen=True)
class LayerRecord:
    """One module call seen during a forward, in completion order.

    Attributes:
        name: the module's name in ``model.named_modules()``.
        shape: the output's shape as the module returned it.
        is_output: whether the tensor is the model's own output (a container passing its last
            child's output through, a segmentation head).
        layout: how the output lies on a grid (:mod:`volcam.engine.tokens`); ``None`` when it has
            none (a pooled vector, tokens whose grid the model does not tell).
        pointwise: the module is a convolution with a kernel of 1 on every axis (a 1x1x1
            projection to the classes, in a segmentation network).
        block_norm: the module is a transformer block's first norm (``norm1`` beside ``attn``),
            where the literature explains ViT and Swin.
    """

    name: str
    shape: tuple[int, ...]
    is_output: bool
    layout: Layout | None = None
    pointwise: bool = False
    block_norm: bool = False

    @property
    def grid_shape(self) -> tuple[int, ...] | None:
        """``(B, C, *g)``, the output laid back on its grid, or ``None``."""
        return self.layout.grid_shape(self.shape[0]) if self.layout is not None else None

    @property
    def has_spatial_extent(self) -> bool:
        grid = self.grid_shape
        return grid is not None and has_spatial_extent(grid)


def has_spatial_extent(shape: Sequence[int]) -> bool:
    """Whether an output ``(B, C, *s)`` has more than one voxel to place a map on."""
    n = 1
    for s in shape[2:]:
        n *= s
    return len(shape) >= 3 and n > 1


def call_counts(records: Sequence[LayerRecord]) -> Counter[str]:
    """How many times each module ran in the recorded forward."""
    return Counter(r.name for r in records)


def layer_names(model: nn.Module) -> list[str]:
    """Every layer name of ``model`` as ``named_modules()`` spells it (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a :class:`LayerError` listing close matches if none is."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:  # a prefix such as "layer4" for "layer4.1.conv2" is a good hint too
        close = [n for n in names if n.startswith(name) or name.startswith(n)][-5:]
    hint = f"close matches: {', '.join(close)}" if close else "see volcam.layer_names(model) for the names"
    raise LayerError(f"the model has no layer {name!r}; {hint}")


def pick_auto_layer(records: Sequence[LayerRecord], output_shape: Sequence[int] | None = None) -> str:
    """The layer ``"auto"`` explains, from one recorded forward.

    ``records`` are module calls in completion order (a container such as ``layer4`` comes after
    its last child and is preferred to it, as people name it). A module that runs more than once
    per forward is never picked (which call would it be?), nor one whose output is the model's.

    - A segmentation network (its output ``output_shape`` has spatial extent): the last layer
      before the final projection to the classes, the last pointwise convolution giving the
      output's shape, or else the run of layers at the end that all give the output's shape
      (MONAI's ``UNet`` ends on a 3x3x3 convolution to the classes). Never the logits themselves.
    - A transformer: the first norm of the last block whose tokens lie on a grid with spatial
      extent (ViT: ``blocks[-1].norm1``; Swin: the last stage's last block), as the literature does.
    - Otherwise the last layer whose output still has spatial extent before the global pooling.
    """
    counts = call_counts(records)

    def usable(r: LayerRecord) -> bool:
        return r.has_spatial_extent and not r.is_output and counts[r.name] == 1

    end = len(records)
    if output_shape is not None and has_spatial_extent(output_shape):
        out = tuple(output_shape)
        projections = [i for i, r in enumerate(records) if r.pointwise and r.shape == out]
        if projections:
            end = projections[-1]
        else:
            while end > 0 and records[end - 1].shape == out:
                end -= 1
    else:
        blocks = [r for r in records if r.block_norm and not r.is_output and counts[r.name] == 1]
        on_grid = [r for r in blocks if usable(r)]
        if on_grid:
            return on_grid[-1].name
        unknown = [r for r in blocks if r.layout is None]
        if unknown:  # tokens whose grid the model does not tell: reshape= gives it, or the one error asks for it
            return unknown[-1].name
    for record in reversed(records[:end]):
        if usable(record):
            return record.name
    raise LayerError("no layer of this model keeps a spatial extent for this input; name a target layer explicitly")


def pick_call(layer: str, calls: int, call: int | None) -> int:
    """Which call of ``layer`` (run ``calls`` times per forward) to explain: ``call`` (negative
    counts from the last), which must be given when there is more than one."""
    if call is None:
        if calls > 1:
            raise LayerError(
                f"layer {layer!r} runs {calls} times per forward (a shared module); pass call= (0 to {calls - 1}, "
                "or -1 for the last) to pick one, or choose another layer"
            )
        return 0
    if not -calls <= call < calls:
        raise LayerError(f"call={call}: layer {layer!r} runs {calls} time(s) per forward")
    return call % calls


def module_tags(model: nn.Module) -> dict[str, tuple[bool, bool, bool]]:
    """Per module name: ``(pointwise, block_norm, last_axis)`` as :class:`LayerRecord` and
    :func:`volcam.engine.tokens.infer_layout` use them (``last_axis``: a ``LayerNorm`` or ``Linear``,
    or a block whose first norm is one, acting on the last axis of its output)."""
    tags = {}
    for name, m in model.named_modules():
        if not name:
            continue
        kernel = getattr(m, "kernel_size", None)
        pointwise = isinstance(m, nn.modules.conv._ConvNd) and all(k == 1 for k in kernel or ())
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        block_norm = child == "norm1" and isinstance(getattr(owner, "attn", None), nn.Module)
        norm1 = getattr(m, "norm1", None)
        last_axis = isinstance(m, (nn.LayerNorm, nn.Linear)) or (
            isinstance(norm1, nn.LayerNorm) and isinstance(getattr(m, "attn", None), nn.Module)
        )
        tags[name] = (pointwise, block_norm, last_axis)
    return tags


def find_linear_head(model: nn.Module, in_features: int, out_features: int, name: str | None = None) -> nn.Linear:
    """The fully connected layer after global pooling that CAM reads its class weights from.

    With ``name=None`` this is the last ``nn.Linear`` mapping ``in_features`` channels to
    ``out_features`` logits.
    """
    if name is not None:
        layer = get_layer(model, name)
        if not isinstance(layer, nn.Linear):
            raise MethodError(f"CAM needs a linear layer; {name!r} is a {type(layer).__name__}")
        return layer
    found = [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (in_features, out_features)
    ]
    if not found:
        raise MethodError(
            f"CAM needs a head of global pooling + one linear layer ({in_features} -> {out_features}); "
            "this model has none. Use a gradient method such as 'gradcam'"
        )
    return found[-1]
