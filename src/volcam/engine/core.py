"""CamEngine: hooks on the target layers, one cached forward, gradients from the target layer on.

This is the one module that registers hooks. Everything it computes is handed to pure method
functions (:mod:`volcam.methods`).

How a Grad-CAM costs about one forward
--------------------------------------
The forward runs under ``torch.no_grad()``. A forward hook on the target layer turns gradient
recording on at that point and hands the rest of the network a fresh leaf ``A`` that requires
grad, while every parameter's ``requires_grad`` is off for the duration. So nothing before the
target layer records a graph or keeps activations for a backward pass, and the backward of
``torch.autograd.grad(score, A)`` runs through the head alone (pooling and a linear layer for a
classifier). The cost is a bare inference forward plus a backward through the head, and memory is
the inference forward's peak plus ``A``. No full-backward module hooks are used: they break on
in-place ReLU. The model comes back as it was: hooks removed, each module's train/eval mode and
each parameter's ``requires_grad`` restored, also when an exception passes through.

Example::

    >>> from monai.networks.nets import resnet18
    >>> net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
    >>> with CamEngine(net, "layer4") as engine:
    ...     x = torch.rand(1, 1, 64, 64, 64)
    ...     gc = engine.explain(x, "gradcam")            # one forward + a backward through the head
    ...     pp = engine.explain(x, "gradcam++", target=0)  # reuses the forward: a head backward only
    >>> gc.map.shape
    torch.Size([1, 1, 64, 64, 64])
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import torch
from torch import nn

from volcam.engine.drive import frozen, input_spacing, module_device, module_dtype
from volcam.engine.head import attributes_kept, checked_head
from volcam.engine.layers import (
    LayerRecord,
    find_linear_head,
    get_layer,
    has_spatial_extent,
    module_tags,
    pick_auto_layer,
    pick_call,
)
from volcam.engine.tokens import Layout, Reshape, from_grid, infer_layout, reshape_layout, to_grid, token_error
from volcam.errors import InputError, LayerError, MethodError
from volcam.maps.geometry import like_input, normalize, upsample
from volcam.maps.result import CamResult
from volcam.methods.base import LayerCapture
from volcam.methods.registry import MethodInfo, get_method
from volcam.methods.runner import ModelRunner
from volcam.targets import (
    ClassTarget,
    OutputSpec,
    Target,
    TargetSpec,
    num_classes,
    probabilities,
    resolve_target,
    select_output,
    target_score,
)

__all__ = ["CamEngine", "ForwardPass"]

logger = logging.getLogger("volcam")

LayerSpec = str | Sequence[str]
_Engine = TypeVar("_Engine", bound="CamEngine")


class _LayerFields(TypedDict, total=False):
    """:class:`LayerCapture`'s keyword fields for one layer, filled in as the method's needs are met."""

    spacing: tuple[float, ...]
    input_spacing: tuple[float, ...]
    gradients: torch.Tensor
    gradient_moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    class_weights: torch.Tensor
    runner: ModelRunner
    attention: tuple[torch.Tensor, ...]


# model -> {input shape without batch -> auto-picked layer}: repeated volcam.explain() calls on
# one model probe its layers once.
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()
# model -> {input shape without batch -> (every module call of one sample's probe, the output's shape)}
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[list[LayerRecord], tuple[int, ...]]]] = (
    weakref.WeakKeyDictionary()
)
# where ViT-style attention modules apply dropout to their attention weights (B, H, T, T): MONAI's
# SABlock (drop_weights) and timm's Attention (attn_drop); read there, the model is left as it is
_ATTENTION_DROPOUTS = ("drop_weights", "attn_drop")


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


class CamEngine:
    """Explains a model's predictions at one or more target layers.

    Args:
        model: any ``nn.Module`` taking ``(B, C, *S)`` with 1, 2 or 3 spatial axes: images,
            volumes ``(D, H, W)`` or clips ``(T, H, W)``. It is not changed.
        target_layers: ``"auto"`` (the last layer whose output still has spatial extent before
            global pooling, chosen per input shape and logged), a name from
            ``model.named_modules()``, or a list of names (fused per method, e.g. LayerCAM).
        device: where to compute; ``None`` keeps the model's device. A model elsewhere is moved
            there (``model.to(device)``), as the caller asked; inputs always follow.
        labels: class names, so targets can be given as labels and results can name classes.
        fc_layer: the linear layer CAM reads class weights from; ``None`` finds it.
        spacing: default voxel size of inputs per spatial axis (mm, or s on a time axis), for
            inputs that do not carry one (a ``MetaTensor`` does).
        batch_size: rows per model call for perturbation methods; ``None`` sizes it from free memory.
        progress: show progress bars on methods that run many passes.
        eval_mode: run the model in eval mode (frozen batch-norm statistics, no dropout), as an
            explanation of its predictions should; its modes are restored afterwards.
        reshape: for a transformer layer whose token grid the model does not tell, a function
            ``(B, N, C) -> (B, C, *grid)`` that only selects and reorders (pytorch-grad-cam's
            ``reshape_transform``); applied to every target layer. Without it, tokens and
            channels-last outputs are laid back on the grid read off the model (the patch
            embedding's, a Swin stage's).
        call: which call to explain of a target layer the forward runs more than once (a shared
            activation module): 0 for the first, -1 for the last. Naming such a layer without it is
            a :class:`LayerError`; ``"auto"`` never picks one.
        output: which of the model's outputs is explained, for models returning a dict, tuple or
            list: a key, an index, or a callable ``output -> tensor``
            (:func:`volcam.targets.select_output`); ``None`` takes the only tensor there is and
            refuses, listing keys and shapes, when there are several. Callable targets still
            receive the whole output.

    The last forward is cached per input tensor (by identity and version), so several methods
    or classes on one input cost one forward in all and a backward through the head each.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: LayerSpec = "auto",
        *,
        device: str | torch.device | None = None,
        labels: Sequence[str] | None = None,
        fc_layer: str | None = None,
        eval_mode: bool = True,
        spacing: Sequence[float] | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        reshape: Reshape | None = None,
        call: int | None = None,
        output: OutputSpec = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = model
        self.labels = tuple(labels) if labels is not None else None
        self.fc_layer = fc_layer
        self.eval_mode = eval_mode
        self.reshape = reshape
        self.call = call
        self.output = output
        # listed once: walking a model's modules and parameters on every forward costs as much as a
        # small network's last layers
        self._parts = (list(model.modules()), list(model.parameters()))
        self.spacing = tuple(spacing) if spacing is not None else None
        self.batch_size = batch_size
        self.progress = progress
        self._heads: dict[str, nn.Module | None] = {}
        self.device = torch.device(device) if device is not None else module_device(model)
        if device is not None and module_device(model) != self.device:
            model.to(self.device)
        if isinstance(target_layers, str):
            target_layers = [target_layers]
        self.target_layers = tuple(target_layers)
        if not self.target_layers:
            raise LayerError("no target layer was given")
        self._auto = self.target_layers == ("auto",)
        if not self._auto:
            for name in self.target_layers:
                get_layer(model, name)  # fail now, with close matches, not at the first forward
        self._cache: tuple[weakref.ref[torch.Tensor], int, ForwardPass, tuple[str, ...]] | None = None

    # -- context manager: the engine holds no hooks between calls, only the cached forward ----------
    def __enter__(self: _Engine) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the cached forward (its graph and activations)."""
        self._cache = None

    # -- layers --------------------------------------------------------------------------------
    def layers_for(self, x: torch.Tensor) -> tuple[str, ...]:
        """The target layers used for inputs shaped like ``x`` (resolves ``"auto"``)."""
        if not self._auto:
            return self.target_layers
        return (self._auto_layer(self._prepare(x)),)

    def _auto_layer(self, x: torch.Tensor) -> str:
        key = tuple(x.shape[1:])
        known = _AUTO_LAYERS.setdefault(self.model, {})
        if key not in known:
            records, output_shape = self._records(x)
            known[key] = name = pick_auto_layer(records, output_shape)
            layout = next(r.layout for r in records if r.name == name)
            where = f" ({layout.describe()})" if layout is not None and not layout.identity else ""
            logger.info("target layer 'auto' is %r%s for inputs of shape %s", name, where, key)
        return known[key]

    def _records(self, x: torch.Tensor) -> tuple[list[LayerRecord], tuple[int, ...]]:
        """Every module call of one sample's forward and the output's shape, probed once per input
        shape and model."""
        key = tuple(x.shape[1:])
        known = _PROBES.setdefault(self.model, {})
        if key not in known:
            known[key] = self._record_layer_outputs(x[:1])
        return known[key]

    def _plan(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, tuple[Layout | None, int]]:
        """Per target layer: how its output is laid back on its grid and which call is captured.

        ``reshape=`` when given, else the layout read off the probe; a token sequence without a
        grid, or a layer run several times without ``call=``, is a :class:`LayerError`.
        """
        records, _ = self._records(x)
        plan: dict[str, tuple[Layout | None, int]] = {}
        for name in layers:
            calls = [r for r in records if r.name == name]
            if not calls:  # not called in the probe: the forward says so, or lays out what it gets
                plan[name] = (None, 0 if self.call is None else self.call)
                continue
            index = pick_call(name, len(calls), self.call)
            record = calls[index]
            if self.reshape is not None:
                layout: Layout | None = reshape_layout(self.reshape, record.shape, x.ndim, name)
            elif record.layout is None and len(record.shape) == 3 and x.ndim >= 4:
                raise token_error(name, record.shape)
            else:
                layout = record.layout
            plan[name] = (layout, index)
        return plan

    def _record_layer_outputs(self, x: torch.Tensor) -> tuple[list[LayerRecord], tuple[int, ...]]:
        """Output shapes of every module call, in completion order, each with its layout, and the
        shape of the output explained.

        Runs on the ``meta`` device (shapes only, no arithmetic: milliseconds) and falls back to a
        real ``no_grad`` forward for models whose ops have no meta kernels.
        """
        seen: list[tuple[str, tuple[int, ...], Any]] = []
        tags = module_tags(self.model)

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
            with self._freeze(), attributes_kept(self.model), torch.no_grad():
                try:
                    final = self._meta_forward(x)
                except Exception as err:
                    logger.debug("meta-device probe failed (%s); probing with a real forward", err)
                    seen.clear()
                    final = self._select(self.model(x))
        finally:
            for h in handles:
                h.remove()
        final_ident = None if final.is_meta else (final.data_ptr(), tuple(final.shape))
        records = []
        grids: dict[tuple[int, ...], None] = {}  # distinct outputs of the input's rank, the latest last
        for n, s, ident in seen:
            pointwise, block_norm, last_axis = tags.get(n, (False, False, False))
            layout = infer_layout(s, x.ndim, list(grids), last_axis, x.shape[0])
            is_output = ident is final if final_ident is None else ident == final_ident
            records.append(LayerRecord(n, s, is_output, layout, pointwise, block_norm))
            if len(s) == x.ndim:
                grids.pop(s, None)
                grids[s] = None
        return records, tuple(final.shape)

    def _meta_forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        state = {k: torch.empty_like(v, device="meta") for k, v in self.model.named_parameters()}
        state.update({k: torch.empty_like(v, device="meta") for k, v in self.model.named_buffers()})
        # functional_call does not put every tensor back on a model that reaches a module by two paths
        # (MONAI's DynUNet): each module's own parameters and buffers are put back here
        saved = [(m, dict(m._parameters), dict(m._buffers)) for m in self._parts[0]]
        try:
            return self._select(functional_call(self.model, state, (torch.empty_like(x, device="meta"),)))
        finally:
            for m, parameters, buffers in saved:
                m._parameters.update(parameters)
                m._buffers.update(buffers)

    def _select(self, output: Any) -> torch.Tensor:
        """The tensor explained out of the model's raw ``output`` (``output=``)."""
        return select_output(output, self.output)

    def _freeze(self) -> contextlib.AbstractContextManager[None]:
        """The model in eval mode with no trainable parameter for one pass, restored after it."""
        return frozen(self.model, self.eval_mode, *self._parts)

    # -- forward and gradients -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, graph: bool = True, attention: bool = False) -> ForwardPass:
        """Run (or reuse) the forward for ``x``, capturing the target layers.

        ``graph=False`` is for callers that need no gradients (activations and output only): the
        head then runs with autograd off. A cached pass with a graph serves such calls too; a
        cached pass without one is run again when gradients are asked for. ``attention=True``
        also keeps each transformer block's attention weights (attention rollout).
        """
        if self._cache is not None:
            ref, version, cached, _ = self._cache
            if (
                ref() is x
                and x._version == version
                and (cached.graph or not graph)
                and (cached.attention is not None or not attention)
            ):
                return cached
        self._cache = None  # free the previous graph before building the next one
        prepared = self._prepare(x)
        layers = self.target_layers if not self._auto else (self._auto_layer(prepared),)
        result = self._capture(prepared, layers, graph, attention)
        self._cache = (weakref.ref(x), x._version, result, layers)
        return result

    def _capture(
        self, x: torch.Tensor, layers: Sequence[str], graph: bool = True, attention: bool = False
    ) -> ForwardPass:
        activations: dict[str, torch.Tensor] = {}
        layouts: dict[str, Layout] = {}
        outputs: dict[str, torch.Tensor] = {}
        counts = dict.fromkeys(layers, 0)
        # A named layer with neither reshape= nor call= is planned during this forward itself, from the
        # module calls completed before it (exactly what the probe would record): the probe's meta
        # forward would import torch._dynamo (meta pooling and norms run Python decompositions), over a
        # second once per process.
        online = self.reshape is None and self.call is None and tuple(x.shape[1:]) not in _PROBES.get(self.model, {})
        plan = None if online else self._plan(x, layers)
        grids: dict[tuple[int, ...], None] = {}  # online: distinct channel-first outputs so far, latest last
        tags = module_tags(self.model) if online else {}

        def capture(name: str):
            planned, index = plan[name] if plan is not None else (None, 0)

            def hook(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor | None:
                nonlocal planned
                counts[name] += 1
                if counts[name] - 1 != index:
                    return None  # another call of a shared module: not the one explained
                if not torch.is_tensor(output):
                    raise LayerError(
                        f"layer {name!r} returns a {type(output).__name__}, not a tensor; "
                        "choose a layer that returns one"
                    )
                if plan is None:
                    last_axis = tags.get(name, (False, False, False))[2]
                    planned = infer_layout(tuple(output.shape), x.ndim, list(grids), last_axis, x.shape[0])
                    if planned is None and output.ndim == 3 and x.ndim >= 4:
                        raise token_error(name, tuple(output.shape))
                layout = planned or Layout("grid", tuple(output.shape[2:]), output.shape[1] if output.ndim > 1 else 1)
                layouts[name] = layout
                if not graph or output.requires_grad:  # no gradients wanted, or downstream of an earlier
                    a = to_grid(output, layout)  # target layer, whose graph it keeps
                else:
                    torch.set_grad_enabled(True)  # autograd starts here; no_grad's exit restores it
                    a = to_grid(output.detach(), layout).detach().requires_grad_(True)
                activations[name] = a
                if layout.identity:
                    # the network goes on with a copy, so an in-place op downstream (ReLU(inplace=True))
                    # cannot overwrite A or trip autograd's leaf check
                    return a.clone()
                # tokens go on in their own layout, rebuilt from A so gradients arrive on the grid
                outputs[name] = output.detach()
                return from_grid(a, outputs[name], layout)

            return hook

        weights: list[torch.Tensor] = []

        def keep_attention(_module: nn.Module, inputs: Any, _output: Any) -> None:
            if inputs and torch.is_tensor(inputs[0]) and inputs[0].ndim == 4:
                weights.append(inputs[0].detach())

        def note(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if torch.is_tensor(output) and output.ndim == x.ndim:
                shape = tuple(output.shape)
                grids.pop(shape, None)
                grids[shape] = None

        handles = []
        start = time.perf_counter()
        try:
            with self._freeze(), torch.no_grad():
                for name in layers:  # before note(): a layer's own output is not among the grids before it
                    handles.append(get_layer(self.model, name).register_forward_hook(capture(name)))
                if online:
                    handles += [m.register_forward_hook(note) for n, m in self.model.named_modules() if n]
                if attention:
                    handles += [
                        m.register_forward_hook(keep_attention)
                        for n, m in self.model.named_modules()
                        if n.rpartition(".")[2] in _ATTENTION_DROPOUTS
                    ]
                raw = self.model(x)
                output = self._select(raw)
        finally:
            for h in handles:
                h.remove()
        if online:
            for name in layers:  # a shared module found on the way: which call to explain is the user's choice
                pick_call(name, counts[name], None)
        missing = [n for n in layers if n not in activations]
        if missing:
            raise LayerError(f"layer(s) {', '.join(map(repr, missing))} were not called by the model's forward")
        if attention and not weights:
            raise MethodError(
                "attention rollout needs the attention weights of ViT-style blocks; this model has no "
                f"attention module applying dropout to them ({', '.join(_ATTENTION_DROPOUTS)}: MONAI's SABlock, "
                "timm's Attention), or computes attention in one fused kernel"
            )
        for name, a in activations.items():
            # a vector (Linear), tokens, a pooled output: nothing to place a map on
            if a.ndim != x.ndim or a.shape[0] != x.shape[0] or not has_spatial_extent(a.shape):
                raise LayerError(
                    f"layer {name!r} gives {tuple(a.shape)}, which has no spatial extent like the input's "
                    f"{tuple(x.shape)} (B, C, *S); choose a convolutional layer before the pooling (or 'auto')"
                )
        return ForwardPass(
            output,
            {n: activations[n] for n in layers},
            time.perf_counter() - start,
            graph,
            raw,
            layouts=layouts,
            layer_outputs=outputs,
            calls={n: plan[n][1] if plan is not None else 0 for n in layers},
            attention=tuple(weights) if attention else None,
        )

    def gradients(self, x: torch.Tensor, target: TargetSpec | Target = None) -> dict[str, torch.Tensor]:
        """``d score / d A`` per target layer, ``(B, K, *s)`` each, for ``target`` (default: the
        predicted class per sample). Reuses the cached forward; costs a backward through the head."""
        fwd = self.forward(x)
        tgt, _ = resolve_target(target, fwd.output.detach(), self.labels)
        with torch.enable_grad():
            score = target_score(tgt, fwd.raw, self._select)
        return self._backward(fwd, score.sum())

    def class_gradients(self, x: torch.Tensor, classes: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Gradients of every class's logit (or of ``classes``), ``(N, B, K, *s)`` per layer.

        One batched backward through the head (``is_grads_batched``), falling back to one
        backward per class for models whose ops cannot be batched that way.
        """
        fwd = self.forward(x)
        out = fwd.output
        classes = list(range(num_classes(out))) if classes is None else list(classes)
        grad_outputs = torch.stack([ClassTarget(c).grad_outputs(out.detach()) for c in classes])
        try:
            return self._backward(fwd, out, grad_outputs, batched=True)
        except RuntimeError as err:
            logger.debug("batched class gradients failed (%s); one backward per class", err)
            per_class = [self._backward(fwd, out, g) for g in grad_outputs]
            return {name: torch.stack([g[name] for g in per_class]) for name in fwd.activations}

    def _backward(
        self,
        fwd: ForwardPass,
        outputs: torch.Tensor,
        grad_outputs: torch.Tensor | None = None,
        batched: bool = False,
        retain_graph: bool = True,
    ) -> dict[str, torch.Tensor]:
        if not outputs.requires_grad:
            raise LayerError(
                f"the model's output does not depend on layer(s) {', '.join(fwd.activations)}; "
                "choose a layer the output is computed from"
            )
        names = list(fwd.activations)
        inputs = [fwd.activations[n] for n in names]
        grads = torch.autograd.grad(
            outputs,
            inputs,
            grad_outputs=grad_outputs,
            retain_graph=retain_graph,
            allow_unused=True,
            is_grads_batched=batched,
        )
        result = {}
        for name, a, g in zip(names, inputs, grads, strict=True):
            if g is None:  # the score does not depend on this layer: no evidence anywhere
                g = torch.zeros(
                    (*grad_outputs.shape[:1], *a.shape) if batched else a.shape, dtype=a.dtype, device=a.device
                )
            result[name] = g
        return result

    def gradient_moments(
        self,
        x: torch.Tensor,
        target: TargetSpec | Target = None,
        *,
        n_samples: int | None = None,
        noise: float | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        smooth: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Means of ``g``, ``g**2``, ``g**3`` over ``n_samples`` noisy copies of ``x``.

        The noise is Gaussian with σ = ``noise`` × the sample's intensity range; copies run
        ``batch_size`` at a time (each a cheap forward as in :meth:`forward`), and the target is
        the one resolved on the clean input, so every copy explains the same class. ``smooth``
        filters each copy's gradients (``gradient_sigma_mm``) before the moments are taken.
        An option left ``None`` takes Smooth Grad-CAM++'s default from the method registry.
        """
        # the registry is these defaults' one home (engine_options of "smoothgradcam++")
        info = get_method("smoothgradcam++")
        n_samples = int(_number_option(info, "n_samples")) if n_samples is None else n_samples
        noise = _number_option(info, "noise") if noise is None else noise
        batch_size = int(_number_option(info, "batch_size")) if batch_size is None else batch_size
        seed = int(_number_option(info, "seed")) if seed is None else seed
        if n_samples < 1 or batch_size < 1:
            raise MethodError("n_samples and batch_size must be at least 1")
        clean = self.forward(x, graph=False)
        tgt, _ = resolve_target(target, clean.output.detach(), self.labels)
        xp = self._prepare(x)
        layers = tuple(clean.activations)
        b = xp.shape[0]
        flat = xp.flatten(1)
        sigma = (noise * (flat.amax(1) - flat.amin(1))).view(b, *[1] * (xp.ndim - 1))
        gen = torch.Generator(device=xp.device).manual_seed(seed)
        # class targets repeat over copies; any other target sees one batch-shaped copy at a time
        per_copy = tgt.class_indices(clean.output) if isinstance(tgt, ClassTarget) else None
        if per_copy is None:
            batch_size = 1
        sums = {n: [torch.zeros_like(a) for _ in range(3)] for n, a in clean.activations.items()}
        done = 0
        while done < n_samples:
            m = min(batch_size, n_samples - done)
            noisy = xp.repeat(m, *[1] * (xp.ndim - 1))
            noisy = noisy + torch.randn(noisy.shape, generator=gen, device=xp.device, dtype=xp.dtype) * sigma.repeat(
                m, *[1] * (xp.ndim - 1)
            )
            fwd = self._capture(noisy, layers)
            copy_target = ClassTarget(per_copy.repeat(m)) if per_copy is not None else tgt
            with torch.enable_grad():
                score = target_score(copy_target, fwd.raw, self._select).sum()
            grads = self._backward(fwd, score, retain_graph=False)
            for name, g in grads.items():
                if smooth is not None:
                    g = smooth(name, g)
                g = g.view(m, b, *g.shape[1:])
                acc = sums[name]
                acc[0] += g.sum(0)
                acc[1] += g.pow(2).sum(0)
                acc[2] += g.pow(3).sum(0)
            done += m
        return {n: (s[0] / n_samples, s[1] / n_samples, s[2] / n_samples) for n, s in sums.items()}

    def class_weights(self, x: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """CAM's ``(B, K)`` weights per layer: the linear layer's row of each sample's class.

        CAM stands on the identity ``logits = W · GAP(A) + b``; it is checked on the cached forward
        (a ``(B, K)`` product, nothing run again) and a :class:`MethodError` names the layer and what
        breaks it when it does not hold.
        """
        fwd = self.forward(x, graph=False)
        n_out = fwd.output.shape[1]
        result = {}
        for name, a in fwd.activations.items():
            fc = find_linear_head(self.model, a.shape[1], n_out, self.fc_layer)
            self._check_cam_identity(name, a, fc, fwd.output)
            w = fc.weight.detach().to(a.dtype)
            if n_out == 1:  # class 0 of a single-logit model is -logit
                result[name] = w[0][None, :] * (classes.to(a.dtype) * 2 - 1)[:, None]
            else:
                result[name] = w[classes]
        return result

    def _check_cam_identity(self, layer: str, a: torch.Tensor, fc: nn.Linear, output: torch.Tensor) -> None:
        """One :class:`MethodError` line when ``output`` is not ``fc(GAP(a))`` (what lies between, if traceable)."""
        from volcam.engine.head import ops_between
        from volcam.methods.activation import gap_linear_mismatch, gap_linear_tolerance

        mismatch = gap_linear_mismatch(a, fc.weight, fc.bias, output)
        if mismatch <= gap_linear_tolerance(a.dtype):
            return
        fc_name = next(n for n, m in self.model.named_modules() if m is fc)
        between = ops_between(self.model, layer, fc_name)
        what = (
            f"{', '.join(between)} between layer {layer!r} and the pooling"
            if between
            else f"something other than global average pooling between layer {layer!r} and {fc_name!r}"
        )
        off = f"off by {mismatch:.2g} of their size" if math.isfinite(mismatch) else "of another shape"
        raise MethodError(
            f"cam: the logits are not {fc_name}(mean of {layer}) ({off}): {what}; CAM's identity does not hold "
            "there, so use a gradient method such as 'gradcam', or the layer that feeds the pooling"
        )

    # -- explanations ----------------------------------------------------------------------------
    def explain(
        self,
        x: torch.Tensor,
        method: str = "gradcam",
        target: TargetSpec | Target = None,
        *,
        spacing: Sequence[float] | None = None,
        gradient_sigma_mm: float | Sequence[float] | None = None,
        normalize: bool = True,
        **options: Any,
    ) -> CamResult:
        """Explain ``x`` with ``method`` for ``target`` (default: each sample's predicted class).

        Args:
            x: ``(B, C, *S)``; a MONAI ``MetaTensor`` gives a map with its affine and metadata,
                and its spacing is used unless ``spacing`` is given.
            method: a name from :func:`volcam.methods`.
            target: class index or label (one, or one per sample), or any :class:`Target`.
            spacing: the input's voxel size per spatial axis in mm (seconds on a time axis);
                by default the ``MetaTensor``'s, the engine's, or 1 per voxel.
            gradient_sigma_mm: smooth the gradients with a Gaussian of this σ in mm (one value,
                or one per axis) at the layer's resolution before the method weighs them; for
                gradient methods only.
            normalize: min-max scale each sample's map to [0, 1]. ``False`` keeps the method's
                own scale on the input grid, for callers who normalise over a larger set (all
                frames of a clip, a cohort).
            options: the method's options (see ``MethodInfo.options``).

        Returns:
            a :class:`CamResult` whose ``map`` is ``(B, 1, *S)``, in [0, 1] when normalised.
        """
        info, opts = _request(method, gradient_sigma_mm, options)
        timings: dict[str, float] = {}
        fwd = self.forward(x, graph=info.needs_gradients, attention="attention" in info.needs)
        timings["forward"] = fwd.seconds
        tgt, classes = resolve_target(target, fwd.output.detach(), self.labels)
        start = time.perf_counter()
        fields = self._layer_fields(x, fwd, spacing)
        smooth = self._gradient_filter(gradient_sigma_mm, fields)
        if "gradients" in info.needs:
            for n, g in self.gradients(x, tgt).items():
                fields[n]["gradients"] = smooth(n, g)
        if "gradient_moments" in info.needs:
            moments = self.gradient_moments(
                x, tgt, smooth=smooth, **_engine_options(opts, "n_samples", "noise", "batch_size", "seed")
            )
            for n, m in moments.items():
                fields[n]["gradient_moments"] = m
        if "class_weights" in info.needs:
            for n, w in self.class_weights(x, classes).items():
                fields[n]["class_weights"] = w
        timings["backward"] = time.perf_counter() - start
        if fwd.attention is not None and "attention" in info.needs:
            for n in fields:
                fields[n]["attention"] = fwd.attention
        if info.needs_runner:
            runner = self.runner(x, tgt, batch_size=opts.get("batch_size"))
            for n in fields:
                fields[n]["runner"] = runner
        captures = [LayerCapture(n, a.detach(), classes=classes, **fields[n]) for n, a in fwd.activations.items()]
        if info.input_space:
            captures = captures[:1]
        return self._finish(x, info, captures, fwd, tgt, classes, timings, opts, normalize)

    def explain_classes(
        self,
        x: torch.Tensor,
        method: str = "gradcam",
        classes: Sequence[int] | None = None,
        *,
        spacing: Sequence[float] | None = None,
        gradient_sigma_mm: float | Sequence[float] | None = None,
        **options: Any,
    ) -> list[CamResult]:
        """One :class:`CamResult` per class (all classes by default).

        For gradient methods the gradients of every class come from one batched backward; other
        methods run once per class.
        """
        info, opts = _request(method, gradient_sigma_mm, options)  # checked before any pass runs
        fwd = self.forward(x, graph=info.needs_gradients)
        out = fwd.output.detach()
        classes = list(range(num_classes(out))) if classes is None else list(classes)
        if info.needs != frozenset({"gradients"}) and info.needs != frozenset({"class_weights"}):
            return [
                self.explain(x, method, c, spacing=spacing, gradient_sigma_mm=gradient_sigma_mm, **options)
                for c in classes
            ]
        base = self._layer_fields(x, fwd, spacing)
        smooth = self._gradient_filter(gradient_sigma_mm, base)
        timings: dict[str, float] = {"forward": fwd.seconds}
        start = time.perf_counter()
        grads = self.class_gradients(x, classes) if "gradients" in info.needs else None
        timings["backward"] = time.perf_counter() - start
        results = []
        for i, c in enumerate(classes):
            tgt, cls = resolve_target(c, out, self.labels)
            weights = self.class_weights(x, cls) if "class_weights" in info.needs else {}
            captures = [
                LayerCapture(
                    n,
                    a.detach(),
                    gradients=smooth(n, grads[n][i]) if grads is not None else None,
                    class_weights=weights.get(n),
                    spacing=base[n]["spacing"],
                    input_spacing=base[n]["input_spacing"],
                )
                for n, a in fwd.activations.items()
            ]
            results.append(self._finish(x, info, captures, fwd, tgt, cls, dict(timings), opts))
        return results

    def runner(self, x: torch.Tensor, target: TargetSpec | Target = None, batch_size: int | None = None) -> ModelRunner:
        """A :class:`ModelRunner` for perturbation methods on ``x`` (uses the cached forward)."""
        fwd = self.forward(x, graph=False)
        tgt, _ = resolve_target(target, fwd.output.detach(), self.labels)
        xp = self._prepare(x)
        layer = next(iter(fwd.activations))
        with torch.no_grad():
            base = target_score(tgt, fwd.raw, self._select).detach()

        def run_inputs(batch: torch.Tensor) -> Any:
            with self._freeze(), torch.no_grad():
                return self.model(batch)

        def run_activations(acts: torch.Tensor, sample: torch.Tensor) -> Any:
            head = self._head(layer, fwd)  # traced on first use only: Score-CAM never needs it
            runner.head_only = head is not None
            # in the layer's own layout (tokens rebuilt from the cached forward's), and a copy: in-place
            # ops after the layer (ReLU) must not write into the caller's rows
            acts = from_grid(acts, fwd.layer_outputs.get(layer, acts)[sample], fwd.layouts[layer])
            with self._freeze(), torch.no_grad():
                if head is not None:
                    return head(acts)
                return self._forward_replacing(xp[sample], layer, acts, fwd.calls[layer])

        runner = ModelRunner(
            target=tgt,
            inputs=xp,
            base_scores=base,
            batch_size=batch_size or self.batch_size or self._auto_batch_size(xp),
            run_inputs=run_inputs,
            run_activations=run_activations,
            select=self._select,
            show_progress=self.progress,
        )
        return runner

    def _head(self, layer: str, fwd: ForwardPass) -> nn.Module | None:
        """The layers after ``layer`` as a module (checked on the cached forward), or ``None``."""
        if layer not in self._heads:
            cut = fwd.layer_outputs.get(layer, fwd.activations[layer])  # the layer's output as the head takes it
            with self._freeze():
                head = checked_head(self.model, layer, cut.detach(), fwd.output.detach(), self._select)
            if head is None:
                logger.info("layer %r: no head-only pass possible; perturbations run the whole model", layer)
            self._heads[layer] = head
        return self._heads[layer]

    def _forward_replacing(self, x: torch.Tensor, layer: str, activations: torch.Tensor, call: int = 0) -> Any:
        """The model's raw output when ``layer`` outputs ``activations`` instead (a full forward)."""
        calls = 0

        def replace(_module: nn.Module, _inputs: Any, _output: Any) -> torch.Tensor | None:
            nonlocal calls
            calls += 1
            return activations if calls - 1 == call else None  # only the call explained

        handle = get_layer(self.model, layer).register_forward_hook(replace)
        try:
            return self.model(x)
        finally:
            handle.remove()

    def _auto_batch_size(self, x: torch.Tensor, budget: float = 0.25, cap: int = 64) -> int:
        """Rows per model call so a batch's activations fit in ``budget`` of the free memory.

        A forward's peak is a few times its largest layer output; the shapes come from the
        meta-device probe, the free memory from CUDA or the operating system.
        """
        records, _ = self._records(x)
        largest = max((math.prod(r.shape) for r in records), default=x[:1].numel())
        per_row = 4 * largest * x.element_size() + x[:1].numel() * x.element_size()
        return int(max(1, min(cap, budget * _free_memory(x.device) // per_row)))

    def _layer_fields(
        self, x: torch.Tensor, fwd: ForwardPass, spacing: Sequence[float] | None
    ) -> dict[str, _LayerFields]:
        """Per target layer, what every method may read besides its tensors: the layer's voxel size
        (the input's times the layer's stride) and the input's, in mm."""
        given = self._input_spacing(x, spacing)
        return {
            n: {"spacing": _feature_spacing(given, x.shape[2:], a.shape[2:]), "input_spacing": given}
            for n, a in fwd.activations.items()
        }

    def _input_spacing(self, x: torch.Tensor, spacing: Sequence[float] | None) -> tuple[float, ...]:
        dims = x.ndim - 2
        if spacing is None:
            spacing = input_spacing(x, dims) or self.spacing
        if spacing is None:
            return (1.0,) * dims
        spacing = tuple(float(s) for s in (spacing if isinstance(spacing, Sequence) else [spacing] * dims))
        if len(spacing) != dims or any(s <= 0 for s in spacing):
            raise InputError(f"spacing {spacing} does not give a positive size for each of the {dims} spatial axes")
        return spacing

    def _gradient_filter(
        self, sigma_mm: float | Sequence[float] | None, fields: Mapping[str, _LayerFields]
    ) -> Callable[[str, torch.Tensor], torch.Tensor]:
        """``(layer, gradients) -> gradients`` smoothed at that layer's spacing (identity if no σ)."""
        if sigma_mm is None:
            return lambda _name, g: g
        from volcam.maps.filters import gaussian_filter_mm

        def smooth(name: str, g: torch.Tensor) -> torch.Tensor:
            flat = g.reshape(-1, *g.shape[-len(fields[name]["spacing"]) - 1 :])  # batched class grads too
            try:
                out = gaussian_filter_mm(flat, sigma_mm, fields[name]["spacing"])
            except ValueError as err:  # a negative σ, or one value per axis too many
                raise MethodError(f"gradient_sigma_mm={sigma_mm!r}: {err}") from None
            return out.reshape(g.shape)

        return smooth

    def _finish(
        self,
        x: torch.Tensor,
        info: MethodInfo,
        captures: Sequence[LayerCapture],
        fwd: ForwardPass,
        tgt: Target,
        classes: torch.Tensor,
        timings: dict[str, float],
        opts: Mapping[str, Any],
        scale: bool = True,
    ) -> CamResult:
        start = time.perf_counter()
        with torch.no_grad():
            raw: list[torch.Tensor] = []
            details: dict[str, Any] = {}
            for c in captures:
                if c.runner is not None:
                    c.runner.details.clear()  # what this layer's run reports (Score-CAM's channels)
                raw.append(info.compute(c, **opts).detach())
                if c.runner is not None and c.runner.details:
                    reported = dict(c.runner.details)
                    details.update(reported if len(captures) == 1 else {c.layer: reported})
            if captures and captures[0].runner is not None:
                details["forwards"] = captures[0].runner.forwards
            timings["method"] = time.perf_counter() - start
            explained = [
                "the custom target" if k < 0 else f"class {self.labels[k] if self.labels else str(k)!r}"
                for k in classes.tolist()
            ]
            raw, warnings = _flat_maps(info, captures, raw, explained)
            start = time.perf_counter()
            size = x.shape[2:]
            if len(raw) == 1:
                cam = upsample(raw[0].float(), size)
            else:
                maps = [upsample(r.float(), size) for r in raw]
                cam = info.fuse(maps) if info.fuse is not None else torch.stack([normalize(m) for m in maps]).mean(0)
            if scale:
                cam = normalize(cam)
            timings["upsample"] = time.perf_counter() - start
            output = fwd.output.detach()
            scores = target_score(tgt, fwd.raw, self._select).detach()
        probs = probabilities(output) if output.ndim == 2 else None
        return CamResult(
            map=like_input(cam, x),
            method=info.name,
            layers=tuple(c.layer for c in captures),
            classes=classes,
            scores=scores,
            output=output,
            probabilities=probs,
            raw=raw[0],
            labels=self.labels,
            timings=timings,
            warnings=tuple(warnings),
            details=details,
        )

    # -- inputs ----------------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A plain tensor on the engine's device, in the model's floating dtype."""
        if not torch.is_tensor(x):
            raise InputError(f"the input must be a torch.Tensor (B, C, *S), not {type(x).__name__}")
        if not 3 <= x.ndim <= 5:
            raise InputError(
                f"the input has shape {tuple(x.shape)}; volcam expects (B, C, *S) with 1 to 3 spatial axes "
                "(add the batch axis with x[None])"
            )
        monai_data = sys.modules.get("monai.data")
        if monai_data is not None and isinstance(x, monai_data.MetaTensor):
            x = x.as_tensor()  # plain tensors skip MetaTensor's per-op bookkeeping in the forward
        dtype = module_dtype(self.model)
        return x.detach().to(device=self.device, dtype=dtype)


def _request(
    method: str, gradient_sigma_mm: float | Sequence[float] | None, options: Mapping[str, Any]
) -> tuple[MethodInfo, dict[str, Any]]:
    """The one check of what a caller asked for, shared by every entry point: the method exists, its
    options are its own, and a gradient filter is asked only of a method that uses gradients."""
    info = get_method(method)
    opts = _method_options(info, options)
    if gradient_sigma_mm is not None and not info.needs_gradients:
        raise MethodError(f"{info.name!r} uses no gradients, so gradient_sigma_mm does not apply to it")
    return info, opts


# a Grad-CAM-family map below this fraction of its gradient × activation terms' size has cancelled out
_CANCELLED = 1e-3


def _flat_maps(
    info: MethodInfo, captures: Sequence[LayerCapture], raw: Sequence[torch.Tensor], names: Sequence[str]
) -> tuple[list[torch.Tensor], list[str]]:
    """The maps ``(B, 1, *s)`` per layer, and one line for each one that shows nothing for what it
    explains (``names``: ``"class 'covid'"`` per sample).

    A map is flat when it is constant (all zero, say). A map of the Grad-CAM family (``gradient_terms``)
    that is far below the size of its terms ``max_v sum_k |g_k A_k|`` has cancelled out (HiResCAM after a
    LayerNorm, which makes ``sum_k g_k A_k`` vanish) and is set to exactly 0, so the picture agrees with
    the warning. Cheap: the terms' size is first bounded by per-channel maxima (reductions only), and
    computed exactly only for a map that small.
    """
    out, lines = [], []
    for c, r in zip(captures, raw, strict=True):
        flat = r.flatten(1).float()
        top = flat.abs().amax(1)
        constant = (flat.amax(1) - flat.amin(1)) <= 1e-6 * top  # all zero, too
        cancelled = torch.zeros_like(constant)
        everywhere = torch.zeros_like(constant)  # sum_k g_k A_k vanishes at every position
        if info.gradient_terms and c.gradients is not None and c.gradients.shape == c.activations.shape:
            g, a = c.gradients.flatten(2).float(), c.activations.flatten(2).float()
            g_lo, g_hi = torch.aminmax(g, dim=2)
            a_lo, a_hi = torch.aminmax(a, dim=2)
            bound = (torch.maximum(-g_lo, g_hi) * torch.maximum(-a_lo, a_hi)).sum(1)  # >= the terms' size
            for i in (top <= _CANCELLED * bound).nonzero()[:, 0].tolist():
                terms = g[i] * a[i]  # (K, n): one sample, only when its map is this small
                size = terms.abs().sum(0).amax()
                cancelled[i] = (top[i] > 0) & (top[i] <= _CANCELLED * size)
                everywhere[i] = (size > 0) & (terms.sum(0).abs().amax() <= _CANCELLED * size)
        if bool(cancelled.any()):
            r = r.clone()
            r[cancelled] = 0
        out.append(r)
        for i in (constant | cancelled).nonzero()[:, 0].tolist():
            where = "" if info.input_space else f" at layer {c.layer!r}"
            sample = f" (sample {i})" if len(names) > 1 else ""
            head = f"{info.name}: the map of {names[i]}{where}{sample}"
            if everywhere[i]:
                why = (
                    "is all zero: gradient × activation cancels over the channels at every position, as when a "
                    "LayerNorm follows the layer (the score ignores its scale); use gradcam, or a layer after the norm"
                )
            elif cancelled[i] or top[i] == 0:
                why = "is all zero: nothing there is evidence for the class"
            else:
                why = f"is constant ({float(flat[i, 0]):.3g}): it shows no location"
            lines.append(f"{head} {why}")
    return out, lines


def _engine_options(opts: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {n: opts[n] for n in names if n in opts and opts[n] is not None}


def _number_option(info: MethodInfo, option: str) -> float:
    """``info``'s default for a numeric option, as the registry holds it."""
    value = info.options[option]
    if not isinstance(value, (int, float)):
        raise MethodError(f"{info.name}: the registered default {option}={value!r} is not a number")
    return value


def _feature_spacing(spacing: Sequence[float], size: Sequence[int], feature_size: Sequence[int]) -> tuple[float, ...]:
    """A layer's voxel size: the input's times the layer's stride per axis."""
    return tuple(float(sp) * s / f for sp, s, f in zip(spacing, size, feature_size, strict=True))


def _free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (CUDA's free memory, else the OS's available memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3  # no way to ask: assume a modest machine


def _method_options(info: MethodInfo, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(info.options)
    if unknown:
        takes = ", ".join(info.options) if info.options else "no options"
        raise MethodError(f"{info.name!r} does not take {', '.join(sorted(unknown))}; it takes {takes}")
    return {**info.options, **options}
