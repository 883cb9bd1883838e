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
from collections.abc import Iterator

import torch
from torch import fx, nn

__all__ = ["attributes_kept", "check_head", "checked_head", "extract_head"]

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


def check_head(head: nn.Module, activations: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether ``head`` reproduces ``output`` from ``activations`` (a guard against bad cuts)."""
    with torch.no_grad():
        out = head(activations.clone())  # an in-place first op (ReLU) must not touch the caller's tensor
    out = out[0] if isinstance(out, (tuple, list)) else out
    return torch.is_tensor(out) and out.shape == output.shape and torch.allclose(out, output, rtol=1e-4, atol=1e-5)


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


def checked_head(model: nn.Module, layer: str, activations: torch.Tensor, output: torch.Tensor) -> nn.Module | None:
    """The layers after ``layer`` as a module, when the model can be cut there and the cut reproduces
    ``output`` from ``activations`` (one forward's, ``(B, K, *s)`` and ``(B, ...)``); else ``None``.

    Tracing runs ``forward`` with stand-ins, so the model's attributes are restored afterwards.
    """
    with attributes_kept(model):
        head = extract_head(model, layer)
    if head is not None and check_head(head, activations, output):
        return head
    return None
