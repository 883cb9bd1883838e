"""The hooked forward: one pass that keeps each target layer's output as a leaf ``A`` gradients start at.

The forward runs under ``torch.no_grad()``. A forward hook on the target layer turns gradient
recording on at that point and hands the rest of the network a fresh leaf ``A`` that requires grad,
while every parameter's ``requires_grad`` is off for the duration (the caller's ``freeze``). So nothing
before the target layer records a graph or keeps activations for a backward pass: the backward of
``torch.autograd.grad(score, A)`` runs through the head alone. Hooks are removed in ``finally``, also
when an exception passes through; the model is not changed.

Attention methods read each transformer block's attention weights where the model applies dropout to
them. Gradient-weighted attention needs ``d score / d A_l`` for every block: the first block's weights
become a leaf that requires grad (recording starts there, as a target layer's does), and every later
block's are nodes of that graph, so each gradient is the full one, through every later block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from volcam.engine.layers import get_layer, has_spatial_extent, module_tags, pick_call
from volcam.engine.probe import GridHistory, Plan
from volcam.engine.tokens import Layout, from_grid, to_grid, token_error
from volcam.errors import LayerError, MethodError

__all__ = ["ATTENTION_DROPOUTS", "ForwardPass", "capture_forward", "forward_replacing", "join_passes"]

# where ViT-style attention modules apply dropout to their attention weights (B, H, T, T): MONAI's
# SABlock (drop_weights) and timm's Attention (attn_drop); read there, the model is left as it is
ATTENTION_DROPOUTS = ("drop_weights", "attn_drop")


@dataclass(frozen=True)
class ForwardPass:
    """One forward through the model with the target layers captured.

    Attributes:
        output: the tensor explained (the model's output, or the one ``output=`` picks from it);
            with ``graph``, its graph starts at the target layers (``requires_grad``).
        activations: layer name -> ``A`` ``(B, K, *s)``, the tensors gradients are taken against.
        seconds: wall time of the forward.
        graph: whether autograd recorded the head (from ``A`` to the output); methods that use no
            gradients skip that recording, which costs about a tenth of a small network's forward.
        layouts: layer name -> how its output lies (:class:`volcam.engine.tokens.Layout`); ``A``
            is that output laid back on its grid ``(B, C, *g)``.
        layer_outputs: layer name -> its output as the network saw it, for layers whose output is
            not ``A`` itself (tokens, channels-last); activations put back go through it.
        calls: layer name -> which of its calls in the forward was captured (0 for most).
        attention: each transformer block's attention weights ``(B, H, T, T)``, when asked for.
        attention_nodes: the same weights as nodes of the forward's graph, when their gradients are
            asked for (:func:`volcam.engine.gradients.attention_gradients`).
        parts: the forwards this one joins (:func:`join_passes`, a clip's batches): it has no graph
            of its own, its gradients go through theirs.
    """

    output: torch.Tensor
    activations: Mapping[str, torch.Tensor]
    seconds: float
    graph: bool = True
    raw: Any = None
    """The model's output as it returned it (a dict, a tuple): what callable targets receive."""
    layouts: Mapping[str, Layout] = field(default_factory=dict)
    layer_outputs: Mapping[str, torch.Tensor] = field(default_factory=dict)
    calls: Mapping[str, int] = field(default_factory=dict)
    attention: tuple[torch.Tensor, ...] | None = None
    parts: tuple[ForwardPass, ...] = ()
    attention_nodes: tuple[torch.Tensor, ...] | None = None


class _Capture:
    """What the target layers' hooks keep during one forward of ``x``.

    With a ``plan`` (from the probe) each layer's layout and call are known beforehand; without one
    (``online``) a layer is laid out from the module calls completed before it, exactly what the probe
    would record, which :meth:`note` tracks.
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, layers: Sequence[str], plan: Plan | None, graph: bool
    ) -> None:
        self.x = x
        self.plan = plan
        self.graph = graph
        self.activations: dict[str, torch.Tensor] = {}
        self.layouts: dict[str, Layout] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.counts = dict.fromkeys(layers, 0)
        self.grids = GridHistory(x)
        self.tags = module_tags(model) if plan is None else {}

    def hook(self, name: str) -> Callable[[nn.Module, Any, Any], torch.Tensor | None]:
        """The forward hook of target layer ``name``: keeps ``A`` and hands the network on from it."""
        planned, index = self.plan[name] if self.plan is not None else (None, 0)

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor | None:
            self.counts[name] += 1
            if self.counts[name] - 1 != index:
                return None  # another call of a shared module: not the one explained
            if not torch.is_tensor(output):
                raise LayerError(
                    f"layer {name!r} returns a {type(output).__name__}, not a tensor; choose a layer that returns one"
                )
            return self._keep(name, output, planned if self.plan is not None else self._layout_online(name, output))

        return hook

    def _layout_online(self, name: str, output: torch.Tensor) -> Layout | None:
        last_axis = self.tags.get(name, (False, False, False))[2]
        layout = self.grids.layout(tuple(output.shape), last_axis)
        if layout is None and output.ndim == 3 and self.x.ndim >= 4:
            raise token_error(name, tuple(output.shape))
        return layout

    def _keep(self, name: str, output: torch.Tensor, planned: Layout | None) -> torch.Tensor:
        layout = planned or Layout("grid", tuple(output.shape[2:]), output.shape[1] if output.ndim > 1 else 1)
        self.layouts[name] = layout
        if not self.graph or output.requires_grad:  # no gradients wanted, or downstream of an earlier
            a = to_grid(output, layout)  # target layer, whose graph it keeps
        else:
            torch.set_grad_enabled(True)  # autograd starts here; no_grad's exit restores it
            a = to_grid(output.detach(), layout).detach().requires_grad_(True)
        self.activations[name] = a
        if layout.identity:
            # the network goes on with a copy, so an in-place op downstream (ReLU(inplace=True))
            # cannot overwrite A or trip autograd's leaf check
            return a.clone()
        # tokens go on in their own layout, rebuilt from A so gradients arrive on the grid; the tokens
        # not on it (a class token) stay in a graph recorded before this layer, so no gradient through
        # them is cut
        self.outputs[name] = output.detach()
        return from_grid(a, output if output.requires_grad else self.outputs[name], layout)

    def note(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        """Every module's forward hook when online: the grids a later token layer can lie on."""
        if torch.is_tensor(output) and output.ndim == self.x.ndim:
            self.grids.add(tuple(output.shape))

    def check_calls(self, layers: Sequence[str]) -> None:
        """A :class:`LayerError` for a layer the forward did not call, or called more than once unasked."""
        if self.plan is None:
            for name in layers:  # a shared module found on the way: which call to explain is the user's choice
                pick_call(name, self.counts[name], None)
        missing = [n for n in layers if n not in self.activations]
        if missing:
            raise LayerError(f"layer(s) {', '.join(map(repr, missing))} were not called by the model's forward")

    def check_extent(self) -> None:
        """A :class:`LayerError` for a captured layer with no grid like the input's to place a map on."""
        x = self.x
        for name, a in self.activations.items():
            # a vector (Linear), tokens, a pooled output: nothing to place a map on
            if a.ndim != x.ndim or a.shape[0] != x.shape[0] or not has_spatial_extent(a.shape):
                raise LayerError(
                    f"layer {name!r} gives {tuple(a.shape)}, which has no spatial extent like the input's "
                    f"{tuple(x.shape)} (B, C, *S); choose a convolutional layer before the pooling (or 'auto')"
                )


def capture_forward(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    plan: Plan | None,
    *,
    freeze: Callable[[], contextlib.AbstractContextManager[None]],
    select: Callable[[Any], torch.Tensor],
    graph: bool = True,
    attention: bool = False,
    attention_graph: bool = False,
) -> ForwardPass:
    """One forward of ``x`` ``(B, C, *S)`` (on the model's device and dtype) capturing ``layers``.

    Args:
        plan: each layer's layout and call from the probe; ``None`` lays each layer out during this
            forward (a named layer without ``reshape=`` or ``call=``, on an input shape not probed yet).
        freeze: the model frozen for the pass (eval mode, no trainable parameter), restored after it.
        select: the tensor explained out of the model's raw output.
        graph: record the head's graph from each ``A`` to the output (gradient methods).
        attention: keep each transformer block's attention weights ``(B, H, T, T)`` (rollout).
        attention_graph: keep them in the graph too, recorded from the first block on, so their
            gradients can be taken (gradient-weighted attention); implies ``attention``.
    """
    state = _Capture(model, x, layers, plan, graph)
    attention = attention or attention_graph
    weights: list[torch.Tensor] = []
    nodes: list[torch.Tensor] | None = [] if attention_graph else None
    handles: list[RemovableHandle] = []
    start = time.perf_counter()
    try:
        with freeze(), torch.no_grad():
            for name in layers:  # before note(): a layer's own output is not among the grids before it
                handles.append(get_layer(model, name).register_forward_hook(state.hook(name)))
            if plan is None:
                handles += [m.register_forward_hook(state.note) for n, m in model.named_modules() if n]
            if attention:
                handles += _attention_hooks(model, weights, nodes)
            raw = model(x)
            output = select(raw)
    finally:
        for h in handles:
            h.remove()
    state.check_calls(layers)
    if attention and not weights:
        raise MethodError(
            "attention methods (rollout, attention-gradient) need the attention weights of ViT-style blocks; "
            "this model has no "
            f"attention module applying dropout to them ({', '.join(ATTENTION_DROPOUTS)}: MONAI's SABlock, "
            "timm's Attention), or computes attention in one fused kernel"
        )
    state.check_extent()
    return ForwardPass(
        output,
        {n: state.activations[n] for n in layers},
        time.perf_counter() - start,
        graph,
        raw,
        layouts=state.layouts,
        layer_outputs=state.outputs,
        calls={n: plan[n][1] if plan is not None else 0 for n in layers},
        attention=tuple(weights) if attention else None,
        attention_nodes=tuple(nodes) if nodes is not None else None,
    )


def join_passes(parts: Sequence[ForwardPass]) -> ForwardPass:
    """The forwards of one input's batches (a clip's) as one pass over the whole input: activations,
    outputs and raw outputs joined along the batch axis, so a method runs once on all of them. Its
    ``graph`` says whether every part kept one; gradients go through the parts' graphs
    (:func:`volcam.engine.gradients.target_gradients`)."""
    first = parts[0]
    return ForwardPass(
        torch.cat([p.output.detach() for p in parts]),
        {n: torch.cat([p.activations[n].detach() for p in parts]) for n in first.activations},
        sum(p.seconds for p in parts),
        all(p.graph for p in parts),
        _joined([p.raw for p in parts]),
        layouts=first.layouts,
        layer_outputs={n: torch.cat([p.layer_outputs[n] for p in parts]) for n in first.layer_outputs},
        calls=first.calls,
        parts=tuple(parts),
    )


def _joined(values: Sequence[Any]) -> Any:
    """Raw outputs of the same structure (tensors, in dicts, tuples, lists) joined along the batch axis."""
    first = values[0]
    if torch.is_tensor(first):
        return torch.cat([v.detach() for v in values])
    if isinstance(first, Mapping):
        return {k: _joined([v[k] for v in values]) for k in first}
    if isinstance(first, tuple | list):
        return type(first)(_joined([v[i] for v in values]) for i in range(len(first)))
    return first


def _attention_hooks(
    model: nn.Module, weights: list[torch.Tensor], nodes: list[torch.Tensor] | None = None
) -> list[RemovableHandle]:
    """Pre-hooks that append each attention block's weights ``(B, H, T, T)`` (its dropout's input) to
    ``weights``, and with ``nodes`` the same weights as graph nodes gradients can be taken against:
    where nothing before them is recorded (the first block, before any target layer), recording starts
    there, with the weights as a leaf the dropout then takes."""

    def keep(_module: nn.Module, inputs: Any) -> tuple[Any, ...] | None:
        if not (inputs and torch.is_tensor(inputs[0]) and inputs[0].ndim == 4):
            return None
        a = inputs[0]
        weights.append(a.detach())
        if nodes is None:
            return None
        if a.requires_grad:  # downstream of a leaf already: a node of its graph
            nodes.append(a)
            return None
        torch.set_grad_enabled(True)  # autograd starts here; no_grad's exit restores it
        leaf = a.detach().requires_grad_(True)
        nodes.append(leaf)
        return (leaf, *inputs[1:])

    return [
        m.register_forward_pre_hook(keep)
        for n, m in model.named_modules()
        if n.rpartition(".")[2] in ATTENTION_DROPOUTS
    ]


def forward_replacing(model: nn.Module, x: torch.Tensor, layer: str, activations: torch.Tensor, call: int = 0) -> Any:
    """The model's raw output when ``layer`` outputs ``activations`` instead at its ``call``-th call
    (a full forward, as the caller runs it: frozen, with or without autograd)."""
    calls = 0

    def replace(_module: nn.Module, _inputs: Any, _output: Any) -> torch.Tensor | None:
        nonlocal calls
        calls += 1
        return activations if calls - 1 == call else None  # only the call explained

    handle = get_layer(model, layer).register_forward_hook(replace)
    try:
        return model(x)
    finally:
        handle.remove()
