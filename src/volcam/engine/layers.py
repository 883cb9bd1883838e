"""Finding layers by name: exact look-up with helpful errors, and the ``"auto"`` choice.

Pure helpers over ``model.named_modules()``; the forward passes that record output shapes live in
:mod:`volcam.engine` (the one module that registers hooks).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from volcam.errors import LayerError, MethodError

__all__ = ["LayerRecord", "find_linear_head", "get_layer", "layer_names", "pick_auto_layer"]


@dataclass(frozen=True)
class LayerRecord:
    """One module call seen during a forward, in completion order.

    ``shape`` is the output's shape ``(B, C, *s)``; ``is_output`` tells whether the tensor is the
    model's own output (a container passing its last child's output through, a segmentation head).
    """

    name: str
    shape: tuple[int, ...]
    is_output: bool

    @property
    def has_spatial_extent(self) -> bool:
        return has_spatial_extent(self.shape)


def has_spatial_extent(shape: Sequence[int]) -> bool:
    """Whether an output ``(B, C, *s)`` has more than one voxel to place a map on."""
    n = 1
    for s in shape[2:]:
        n *= s
    return len(shape) >= 3 and n > 1


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


def pick_auto_layer(records: Sequence[LayerRecord]) -> str:
    """The last module whose output still has spatial extent before the global pooling.

    ``records`` are module calls in completion order, so a container (``layer4``) comes after its
    last child and is preferred to it, as people name it. Modules whose output *is* the model's
    output are skipped, so a segmentation network is explained at its last feature layer rather
    than at its logits.
    """
    for record in reversed(records):
        if record.has_spatial_extent and not record.is_output:
            return record.name
    raise LayerError("no layer of this model keeps a spatial extent for this input; name a target layer explicitly")


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
