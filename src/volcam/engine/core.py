"""CamEngine: explains a model at its target layers from one cached forward; the engine's front.

It holds what a caller configured and the last forward, and asks the parts that do the work:

- :mod:`~volcam.engine.probe`: which layers the forward calls, their shapes, the ``"auto"`` layer;
- :mod:`~volcam.engine.capture`: the hooked forward keeping each target layer's output ``A``;
- :mod:`~volcam.engine.gradients`: backwards through the head, gradient moments, CAM's weights;
- :mod:`~volcam.engine.perturb`: the model run on changed inputs or activations;
- :mod:`~volcam.engine.assembly`: the method's inputs, and its maps made into a :class:`CamResult`.

A Grad-CAM costs about one bare inference forward plus a backward through the head (how:
:mod:`volcam.engine.capture`). The model comes back as it was: hooks removed, each module's
train/eval mode and each parameter's ``requires_grad`` restored, also when an exception passes through.

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
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from volcam.engine import assembly, gradients, perturb
from volcam.engine.capture import ForwardPass, capture_forward
from volcam.engine.drive import frozen, module_device, module_dtype, plain_tensor
from volcam.engine.head import checked_head
from volcam.engine.layers import get_layer
from volcam.engine.probe import LayerProbe
from volcam.engine.tokens import Reshape
from volcam.errors import InputError, LayerError, MethodError
from volcam.maps.result import CamResult
from volcam.methods.base import LayerCapture
from volcam.methods.registry import MethodInfo
from volcam.methods.runner import ModelRunner
from volcam.targets import OutputSpec, Target, TargetSpec, num_classes, resolve_target, select_output

__all__ = ["CamEngine", "LayerSpec"]

logger = logging.getLogger("volcam")

LayerSpec = str | Sequence[str]
_Engine = TypeVar("_Engine", bound="CamEngine")


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
        self._heads: dict[str, nn.Module | None] = {}  # layer -> the layers after it, traced once
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
        self._probe = LayerProbe(model, self._parts[0], self._freeze, self._select)
        self._cache: tuple[weakref.ref[torch.Tensor], int, ForwardPass, tuple[str, ...]] | None = None

    # -- context manager: the engine holds no hooks between calls, only the cached forward ----------
    def __enter__(self: _Engine) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the cached forward (its graph and activations)."""
        self._cache = None

    # -- layers and how the model runs ---------------------------------------------------------------
    def layers_for(self, x: torch.Tensor) -> tuple[str, ...]:
        """The target layers used for inputs shaped like ``x`` (resolves ``"auto"``)."""
        if not self._auto:
            return self.target_layers
        return (self._probe.auto_layer(self._prepare(x)),)

    def _select(self, output: Any) -> torch.Tensor:
        """The tensor explained out of the model's raw ``output`` (``output=``)."""
        return select_output(output, self.output)

    def _freeze(self) -> contextlib.AbstractContextManager[None]:
        """The model in eval mode with no trainable parameter for one pass, restored after it."""
        return frozen(self.model, self.eval_mode, *self._parts)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A plain tensor on the engine's device, in the model's floating dtype."""
        if not torch.is_tensor(x):
            raise InputError(f"the input must be a torch.Tensor (B, C, *S), not {type(x).__name__}")
        if not 3 <= x.ndim <= 5:
            raise InputError(
                f"the input has shape {tuple(x.shape)}; volcam expects (B, C, *S) with 1 to 3 spatial axes "
                "(add the batch axis with x[None])"
            )
        # plain tensors skip MetaTensor's per-op bookkeeping in the forward
        return plain_tensor(x).detach().to(device=self.device, dtype=module_dtype(self.model))

    # -- forward and gradients -------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, graph: bool = True, attention: bool = False, attention_graph: bool = False
    ) -> ForwardPass:
        """Run (or reuse) the forward for ``x``, capturing the target layers.

        ``graph=False`` is for callers that need no gradients (activations and output only): the
        head then runs with autograd off. A cached pass with a graph serves such calls too; a
        cached pass without one is run again when gradients are asked for. ``attention=True``
        also keeps each transformer block's attention weights (attention rollout);
        ``attention_graph=True`` keeps them in the graph too, for their gradients.
        """
        if self._cache is not None:
            ref, version, cached, _ = self._cache
            if (
                ref() is x
                and x._version == version
                and (cached.graph or not graph)
                and (cached.attention is not None or not attention)
                and (cached.attention_nodes is not None or not attention_graph)
            ):
                return cached
        self._cache = None  # free the previous graph before building the next one
        prepared = self._prepare(x)
        layers = self.target_layers if not self._auto else (self._probe.auto_layer(prepared),)
        result = self._capture(prepared, layers, graph, attention, attention_graph)
        self._cache = (weakref.ref(x), x._version, result, layers)
        return result

    def _capture(
        self,
        x: torch.Tensor,
        layers: Sequence[str],
        graph: bool = True,
        attention: bool = False,
        attention_graph: bool = False,
    ) -> ForwardPass:
        # A named layer with neither reshape= nor call= is planned during the forward itself, from the
        # module calls completed before it (exactly what the probe would record): the probe's meta
        # forward would import torch._dynamo (meta pooling and norms run Python decompositions), over a
        # second once per process.
        online = self.reshape is None and self.call is None and not self._probe.probed(x)
        plan = None if online else self._probe.plan(x, layers, self.reshape, self.call)
        return capture_forward(
            self.model, x, layers, plan, freeze=self._freeze, select=self._select, graph=graph,
            attention=attention, attention_graph=attention_graph,
        )  # fmt: skip

    def gradients(self, x: torch.Tensor, target: TargetSpec | Target = None) -> dict[str, torch.Tensor]:
        """``d score / d A`` per target layer, ``(B, K, *s)`` each, for ``target`` (default: the
        predicted class per sample). Reuses the cached forward; costs a backward through the head."""
        fwd = self.forward(x)
        tgt, _ = resolve_target(target, fwd.output.detach(), self.labels)
        return self.target_gradients(fwd, tgt)

    def target_gradients(self, fwd: ForwardPass, target: Target) -> dict[str, torch.Tensor]:
        """``d score / d A`` per layer of a kept forward (a clip's joined pass too) for a resolved target:
        where every explanation's gradients come from, so a subclass that changes them (noise, clipping)
        changes every gradient method."""
        return gradients.target_gradients(fwd, target, self._select)

    def class_gradients(self, x: torch.Tensor, classes: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Gradients of every class's logit (or of ``classes``), ``(N, B, K, *s)`` per layer.

        One batched backward through the head (``is_grads_batched``), falling back to one
        backward per class for models whose ops cannot be batched that way.
        """
        return gradients.class_gradients(self.forward(x), classes)

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
        n_samples, noise, batch_size, seed = gradients.moment_options(n_samples, noise, batch_size, seed)
        clean = self.forward(x, graph=False)
        tgt, _ = resolve_target(target, clean.output.detach(), self.labels)
        layers = tuple(clean.activations)
        return gradients.gradient_moments(
            self._prepare(x),
            clean,
            tgt,
            lambda noisy: self._capture(noisy, layers),
            self._select,
            n_samples=n_samples,
            noise=noise,
            batch_size=batch_size,
            seed=seed,
            smooth=smooth,
        )

    def class_weights(self, x: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """CAM's ``(B, K)`` weights per layer: the linear layer's row of each sample's class.

        CAM stands on the identity ``logits = W · GAP(A) + b``; it is checked on the cached forward
        (a ``(B, K)`` product, nothing run again) and a :class:`MethodError` names the layer and what
        breaks it when it does not hold.
        """
        return gradients.class_weights(self.model, self.forward(x, graph=False), classes, self.fc_layer)

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
        info, opts = assembly.request(method, gradient_sigma_mm, options)
        fwd = self.forward(
            x,
            graph=info.needs_gradients,
            attention="attention" in info.needs,
            attention_graph="attention_gradients" in info.needs,
        )
        return self._explain(x, fwd, info, opts, target, spacing, gradient_sigma_mm, normalize)

    def explain_forward(
        self,
        fwd: ForwardPass,
        like: torch.Tensor,
        method: str = "gradcam",
        target: TargetSpec | Target = None,
        *,
        spacing: Sequence[float] | None = None,
        gradient_sigma_mm: float | Sequence[float] | None = None,
        normalize: bool = True,
        on_layer: bool = False,
        **options: Any,
    ) -> CamResult:
        """:meth:`explain` from a forward the caller kept (:meth:`forward` of an input since dropped),
        so it is explained again, for another class or method, by a head backward only.

        Args:
            fwd: the kept forward, with its graph (``graph=True``) for gradient methods; or the
                forwards of one input's batches joined (:func:`~volcam.engine.capture.join_passes`,
                a clip's chunks), explained as one batch: one method call, the gradients through each
                part's graph in one backward call.
            like: a tensor with the whole input's shape ``(B, C, *S)`` and metadata, never read
                (one on the ``meta`` device will do).
            method: one whose needs are gradients, CAM's class weights or the activations alone;
                methods that run the model again (perturbation, noisy copies) need :meth:`explain`.
            on_layer: leave a single target layer's map on its own grid ``(B, 1, *s)``, for a
                caller who brings it to the input's grid later (or never).
        """
        info, opts = assembly.request(method, gradient_sigma_mm, options)
        if info.needs_runner or "gradient_moments" in info.needs or "attention" in info.needs:
            raise MethodError(f"{info.name!r} runs the model on its input again; explain it with the input")
        if info.needs_gradients and not fwd.graph:
            raise MethodError(f"{info.name!r} needs gradients; this forward kept no graph (forward(x, graph=True))")
        return self._explain(like, fwd, info, opts, target, spacing, gradient_sigma_mm, normalize, on_layer)

    def _explain(
        self,
        x: torch.Tensor,
        fwd: ForwardPass,
        info: MethodInfo,
        opts: dict[str, Any],
        target: TargetSpec | Target,
        spacing: Sequence[float] | None,
        gradient_sigma_mm: float | Sequence[float] | None,
        normalize: bool,
        on_layer: bool = False,
    ) -> CamResult:
        """The method's inputs from ``fwd`` (``x``'s forward), the method run, the result made; ``x`` is
        read only by methods that run the model again."""
        timings: dict[str, float] = {"forward": fwd.seconds}
        tgt, classes = resolve_target(target, fwd.output.detach(), self.labels)
        start = time.perf_counter()
        fields = assembly.layer_fields(x, fwd, spacing, self.spacing)
        smooth = assembly.gradient_filter(gradient_sigma_mm, fields)
        if "gradients" in info.needs:
            for n, g in self.target_gradients(fwd, tgt).items():
                fields[n]["gradients"] = smooth(n, g)
        if "gradient_moments" in info.needs:
            moments = self.gradient_moments(
                x, tgt, smooth=smooth, **assembly.engine_options(opts, "n_samples", "noise", "batch_size", "seed")
            )
            for n, m in moments.items():
                fields[n]["gradient_moments"] = m
        if "class_weights" in info.needs:
            for n, w in gradients.class_weights(self.model, fwd, classes, self.fc_layer).items():
                fields[n]["class_weights"] = w
        attention_grads = None
        if "attention_gradients" in info.needs:
            attention_grads = gradients.attention_gradients(fwd, tgt, self._select)
        timings["backward"] = time.perf_counter() - start
        if fwd.attention is not None and "attention" in info.needs:
            for n in fields:
                fields[n]["attention"] = fwd.attention
        if info.needs_runner:
            runner = self.runner(x, tgt, batch_size=opts.get("batch_size"))
            for n in fields:
                fields[n]["runner"] = runner
        captures = [
            LayerCapture(n, a.detach(), classes=classes, attention_gradients=attention_grads, **fields[n])
            for n, a in fwd.activations.items()
        ]
        if info.input_space:
            captures = captures[:1]
        return self._finish(x, info, captures, fwd, tgt, classes, timings, opts, normalize, on_layer)

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
        info, opts = assembly.request(method, gradient_sigma_mm, options)  # checked before any pass runs
        fwd = self.forward(x, graph=info.needs_gradients)
        out = fwd.output.detach()
        classes = list(range(num_classes(out))) if classes is None else list(classes)
        if info.needs != frozenset({"gradients"}) and info.needs != frozenset({"class_weights"}):
            return [
                self.explain(x, method, c, spacing=spacing, gradient_sigma_mm=gradient_sigma_mm, **options)
                for c in classes
            ]
        base = assembly.layer_fields(x, fwd, spacing, self.spacing)
        smooth = assembly.gradient_filter(gradient_sigma_mm, base)
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
        return perturb.model_runner(
            self.model,
            xp,
            fwd,
            tgt,
            head=lambda: self._head(layer, fwd),
            freeze=self._freeze,
            select=self._select,
            batch_size=batch_size or self.batch_size or perturb.auto_batch_size(self._probe.records(xp)[0], xp),
            progress=self.progress,
        )

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

    def _finish(
        self,
        x: torch.Tensor,
        info: MethodInfo,
        captures: Sequence[LayerCapture],
        fwd: ForwardPass,
        tgt: Target,
        classes: torch.Tensor,
        timings: dict[str, float],
        opts: dict[str, Any],
        scale: bool = True,
        on_layer: bool = False,
    ) -> CamResult:
        return assembly.finish(
            x, info, captures, fwd, tgt, classes, timings, opts,
            scale=scale, labels=self.labels, select=self._select, on_layer=on_layer,
        )  # fmt: skip
