"""Which layers a model's forward calls, what each gives, and which one ``"auto"`` explains.

A probe records every module call of one sample's forward (its output shape and how that output lies
on a grid, :class:`volcam.engine.layers.LayerRecord`), on the ``meta`` device when the model's ops
allow (shapes only: milliseconds), else with a real ``no_grad`` forward. It runs once per model and
input shape (without the batch axis); what it found is kept per model (weakly) and serves the
automatic layer, each target layer's plan (its layout, which of its calls) and batch sizing.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from volcam.engine.head import attributes_kept
from volcam.engine.layers import LayerRecord, module_tags, pick_auto_layer, pick_call
from volcam.engine.tokens import Layout, Reshape, infer_layout, reshape_layout, token_error

__all__ = ["GridHistory", "LayerProbe", "Plan", "Probe"]

logger = logging.getLogger("volcam")

Probe = tuple[list[LayerRecord], tuple[int, ...]]
"""Every module call of one sample's forward, in completion order, and the explained output's shape."""
Plan = Mapping[str, tuple[Layout | None, int]]
"""Per target layer: how its output is laid back on its grid (``None``: as it comes) and which call."""

# model -> {input shape without batch -> auto-picked layer}: repeated volcam.explain() calls on
# one model probe its layers once.
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()
# model -> {input shape without batch -> its probe}
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], Probe]] = weakref.WeakKeyDictionary()


class GridHistory:
    """The distinct outputs of the input's rank seen so far in one forward, the latest last: the grids
    a token sequence after them can lie on (:func:`volcam.engine.tokens.infer_layout`)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.ndim = x.ndim
        self.batch = x.shape[0]
        self._shapes: dict[tuple[int, ...], None] = {}  # an ordered set

    def layout(self, shape: tuple[int, ...], last_axis: bool) -> Layout | None:
        """The layout of an output of ``shape`` given the outputs before it."""
        return infer_layout(shape, self.ndim, list(self._shapes), last_axis, self.batch)

    def add(self, shape: tuple[int, ...]) -> None:
        if len(shape) == self.ndim:
            self._shapes.pop(shape, None)
            self._shapes[shape] = None


class LayerProbe:
    """Probes one model's layers, once per input shape.

    Args:
        model: the network; its state is as before after every probe.
        modules: ``model.modules()``, listed once by the caller.
        freeze: the model frozen for one pass (eval mode, no trainable parameter), restored after it.
        select: the tensor explained out of the model's raw output.
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Sequence[nn.Module],
        freeze: Callable[[], contextlib.AbstractContextManager[None]],
        select: Callable[[Any], torch.Tensor],
    ) -> None:
        self.model = model
        self.modules = modules
        self.freeze = freeze
        self.select = select

    def probed(self, x: torch.Tensor) -> bool:
        """Whether inputs shaped like ``x`` have been probed on this model."""
        return tuple(x.shape[1:]) in _PROBES.get(self.model, {})

    def records(self, x: torch.Tensor) -> Probe:
        """Every module call of one sample's forward and the output's shape, probed once per input
        shape and model."""
        key = tuple(x.shape[1:])
        known = _PROBES.setdefault(self.model, {})
        if key not in known:
            known[key] = self._record_layer_outputs(x[:1])
        return known[key]

    def auto_layer(self, x: torch.Tensor) -> str:
        """The layer ``"auto"`` explains for inputs shaped like ``x`` (logged the first time)."""
        key = tuple(x.shape[1:])
        known = _AUTO_LAYERS.setdefault(self.model, {})
        if key not in known:
            records, output_shape = self.records(x)
            known[key] = name = pick_auto_layer(records, output_shape)
            layout = next(r.layout for r in records if r.name == name)
            where = f" ({layout.describe()})" if layout is not None and not layout.identity else ""
            logger.info("target layer 'auto' is %r%s for inputs of shape %s", name, where, key)
        return known[key]

    def plan(self, x: torch.Tensor, layers: Sequence[str], reshape: Reshape | None, call: int | None) -> Plan:
        """Per target layer: how its output is laid back on its grid and which call is captured.

        ``reshape`` when given, else the layout read off the probe; a token sequence without a
        grid, or a layer run several times without ``call``, is a :class:`LayerError`.
        """
        records, _ = self.records(x)
        plan: dict[str, tuple[Layout | None, int]] = {}
        for name in layers:
            calls = [r for r in records if r.name == name]
            if not calls:  # not called in the probe: the forward says so, or lays out what it gets
                plan[name] = (None, 0 if call is None else call)
                continue
            index = pick_call(name, len(calls), call)
            record = calls[index]
            if reshape is not None:
                layout: Layout | None = reshape_layout(reshape, record.shape, x.ndim, name)
            elif record.layout is None and len(record.shape) == 3 and x.ndim >= 4:
                raise token_error(name, record.shape)
            else:
                layout = record.layout
            plan[name] = (layout, index)
        return plan

    def _record_layer_outputs(self, x: torch.Tensor) -> Probe:
        """Output shapes of every module call, in completion order, each with its layout, and the
        shape of the output explained.

        Runs on the ``meta`` device (shapes only, no arithmetic: milliseconds) and falls back to a
        real ``no_grad`` forward for models whose ops have no meta kernels.
        """
        seen: list[tuple[str, tuple[int, ...], Any]] = []

        def record(name: str):
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                if torch.is_tensor(output):
                    # meta tensors cost nothing to keep; real ones are compared by storage
                    ident = output if output.is_meta else (output.data_ptr(), tuple(output.shape))
                    seen.append((name, tuple(output.shape), ident))

            return hook

        handles = [m.register_forward_hook(record(n)) for n, m in self.model.named_modules() if n]
        try:
            # the probe is not the user's forward: state the model keeps must not count it
            with self.freeze(), attributes_kept(self.model), torch.no_grad():
                try:
                    final = self._meta_forward(x)
                except Exception as err:
                    logger.debug("meta-device probe failed (%s); probing with a real forward", err)
                    seen.clear()
                    final = self.select(self.model(x))
        finally:
            for h in handles:
                h.remove()
        return self._records_of(x, seen, final), tuple(final.shape)

    def _records_of(
        self, x: torch.Tensor, seen: Sequence[tuple[str, tuple[int, ...], Any]], final: torch.Tensor
    ) -> list[LayerRecord]:
        """The probe's module calls as :class:`LayerRecord`, each laid out by the outputs before it."""
        tags = module_tags(self.model)
        final_ident = None if final.is_meta else (final.data_ptr(), tuple(final.shape))
        records = []
        grids = GridHistory(x)
        for n, s, ident in seen:
            pointwise, block_norm, last_axis = tags.get(n, (False, False, False))
            layout = grids.layout(s, last_axis)
            is_output = ident is final if final_ident is None else ident == final_ident
            records.append(LayerRecord(n, s, is_output, layout, pointwise, block_norm))
            grids.add(s)
        return records

    def _meta_forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        state = {k: torch.empty_like(v, device="meta") for k, v in self.model.named_parameters()}
        state.update({k: torch.empty_like(v, device="meta") for k, v in self.model.named_buffers()})
        # functional_call does not put every tensor back on a model that reaches a module by two paths
        # (MONAI's DynUNet): each module's own parameters and buffers are put back here
        saved = [(m, dict(m._parameters), dict(m._buffers)) for m in self.modules]
        try:
            return self.select(functional_call(self.model, state, (torch.empty_like(x, device="meta"),)))
        finally:
            for m, parameters, buffers in saved:
                m._parameters.update(parameters)
                m._buffers.update(buffers)
