"""Cutting a model at a layer: the part after it, as a module of its own, when the graph allows.

Ablation-CAM re-runs the network once per ablated channel; re-running only the layers after the
target (the *head*) makes that K small passes instead of K full forwards. ``torch.fx`` traces the
model with the target layer kept whole, and the head is every node after it, provided the output
depends on nothing computed before the target except through it (a UNet's skip connections, for
instance, cross any cut, and then there is no head).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import fx, nn

from volcam.targets import select_output

__all__ = ["attributes_kept", "check_head", "checked_head", "extract_head", "ops_between"]

logger = logging.getLogger("volcam")


class _KeepLayer(fx.Tracer):
    """Traces into every module but the target layer, which stays one ``call_module`` node."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.layer or super().is_leaf_module(m, qualified_name)


def extract_head(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """The module mapping ``layer``'s output to the model's output, or ``None`` if there is none.

    The head shares the model's submodules (and so its weights and train/eval modes).

    Example::

        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
        >>> head = extract_head(net, "layer4")
        >>> head(torch.rand(1, 512, 2, 2, 2)).shape
        torch.Size([1, 2])
    """
    try:
        graph = _KeepLayer(layer).trace(model)
    except Exception as err:  # data-dependent control flow, untraceable ops, ...
        logger.debug("cannot trace %s for a head-only pass: %s", type(model).__name__, err)
        return None
    nodes = list(graph.nodes)
    cut = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(cut) != 1:  # not called, or called twice: no single cut
        return None
    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut[0]: head.placeholder("activations")}

    def copy(node: fx.Node) -> fx.Node | None:
        if node in env:
            return env[node]
        if node.op == "get_attr" or (node.op == "call_function" and not node.all_input_nodes):
            env[node] = head.node_copy(node, lambda d: env[d])  # constants may be used anywhere
            return env[node]
        return None

    for node in nodes[nodes.index(cut[0]) + 1 :]:
        if node.op == "output":
            if any(copy(d) is None for d in node.all_input_nodes):
                return None  # the output needs something from before the cut
            head.output(fx.node.map_arg(node.args[0], lambda d: env[d]))
            return fx.GraphModule(model, head)
        if node.op != "placeholder" and all(copy(d) is not None for d in node.all_input_nodes):
            env[node] = head.node_copy(node, lambda d: env[d])
    return None


def check_head(
    head: nn.Module,
    activations: torch.Tensor,
    output: torch.Tensor,
    select: Callable[[Any], torch.Tensor] = select_output,
) -> bool:
    """Whether ``head`` reproduces ``output`` (the tensor explained, ``select`` of the model's raw
    output) from ``activations`` (a guard against bad cuts)."""
    with torch.no_grad():
        raw = head(activations.clone())  # an in-place first op (ReLU) must not touch the caller's tensor
    try:
        out = select(raw)
    except Exception:  # the cut returns something the model's output= cannot read: not this model's head
        return False
    return out.shape == output.shape and torch.allclose(out, output, rtol=1e-4, atol=1e-5)


@contextlib.contextmanager
def attributes_kept(model: nn.Module) -> Iterator[None]:
    """Undo attribute assignments a model's ``forward`` makes while volcam probes or traces it.

    Tracing (and the meta-device shape probe) runs ``forward`` with stand-in values; a model that
    keeps state (a call counter, a cached shape) would be left holding them. Each module's
    attribute dictionary is restored.
    """
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        yield
    finally:
        for m, attributes in saved:
            m.__dict__.clear()
            m.__dict__.update(attributes)


def checked_head(
    model: nn.Module,
    layer: str,
    activations: torch.Tensor,
    output: torch.Tensor,
    select: Callable[[Any], torch.Tensor] = select_output,
) -> nn.Module | None:
    """The layers after ``layer`` as a module, when the model can be cut there and the cut reproduces
    ``output`` (``select`` of its raw output) from ``activations`` (one forward's, ``(B, K, *s)`` and
    ``(B, ...)``); else ``None``.

    Tracing runs ``forward`` with stand-ins, so the model's attributes are restored afterwards.
    """
    with attributes_kept(model):
        head = extract_head(model, layer)
    if head is not None and check_head(head, activations, output, select):
        return head
    return None


# what may stand between a layer and a linear head without breaking CAM's identity: pooling, layout
_PLAIN_MODULES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
)
_PLAIN_CALLS = {
    "mean", "flatten", "view", "reshape", "squeeze", "unsqueeze", "permute", "movedim", "moveaxis", "transpose",
    "contiguous", "size", "getitem", "getattr", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "dropout", "to", "float", "clone",
}  # fmt: skip


def ops_between(model: nn.Module, layer: str, linear: str, limit: int = 3) -> list[str]:
    """What lies on the path from ``layer``'s output to the linear layer ``linear`` other than pooling
    and reshaping, as people read it (``"LayerNorm 'norm'"``, ``"relu"``); at most ``limit``.

    Traced with ``torch.fx`` (the model's attributes restored afterwards); an empty list when the
    model cannot be traced or nothing of the kind is there.
    """
    with attributes_kept(model):
        try:
            graph = _KeepLayer(layer).trace(model)
        except Exception as err:  # data-dependent control flow, untraceable ops, ...
            logger.debug("cannot trace %s to name what follows %r: %s", type(model).__name__, layer, err)
            return []
    nodes = list(graph.nodes)
    starts = [n for n in nodes if n.op == "call_module" and n.target == layer]
    ends = [n for n in nodes if n.op == "call_module" and n.target == linear]
    if len(starts) != 1 or not ends:
        return []
    after: set[fx.Node] = {starts[0]}  # everything computed from the layer's output
    for node in nodes[nodes.index(starts[0]) + 1 :]:
        if any(d in after for d in node.all_input_nodes):
            after.add(node)
    before: set[fx.Node] = set()  # everything the linear layer's input is computed from
    stack = list(ends[0].all_input_nodes)
    while stack:
        node = stack.pop()
        if node not in before:
            before.add(node)
            stack.extend(node.all_input_nodes)
    modules = dict(model.named_modules())
    found = []
    for node in nodes:
        if node not in after or node not in before or node is starts[0]:
            continue
        if node.op == "call_module":
            module = modules.get(str(node.target))
            if module is not None and not isinstance(module, _PLAIN_MODULES):
                found.append(f"{type(module).__name__} {node.target!r}")
        elif node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            if name.strip("_") not in _PLAIN_CALLS:
                found.append(name)
    return found[:limit]
