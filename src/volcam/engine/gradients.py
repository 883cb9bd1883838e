"""What a captured forward gives besides its activations: gradients, their moments, CAM's class weights.

Every backward here starts at the target layers' leaves ``A`` (:mod:`volcam.engine.capture`), so it
runs through the head alone (pooling and a linear layer for a classifier).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from volcam.engine.capture import ForwardPass
from volcam.engine.layers import find_linear_head
from volcam.errors import LayerError, MethodError
from volcam.methods.registry import MethodInfo, get_method
from volcam.targets import ClassProbability, ClassTarget, Target, num_classes, target_score

__all__ = [
    "attention_gradients",
    "backward",
    "class_gradients",
    "class_weights",
    "gradient_moments",
    "joined_gradients",
    "moment_options",
    "target_gradients",
]

logger = logging.getLogger("volcam")

Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Means of ``g``, ``g**2``, ``g**3`` over noisy copies, each ``(B, K, *s)``."""


def backward(
    fwd: ForwardPass,
    outputs: torch.Tensor,
    grad_outputs: torch.Tensor | None = None,
    batched: bool = False,
    retain_graph: bool = True,
) -> dict[str, torch.Tensor]:
    """``d outputs / d A`` per target layer of ``fwd`` (zeros for a layer ``outputs`` does not use);
    ``batched``: ``grad_outputs`` ``(N, *outputs.shape)`` gives ``(N, B, K, *s)`` per layer."""
    if fwd.parts:
        raise MethodError("a joined forward has no graph of its own; its parts' gradients: target_gradients")
    _check_depends(fwd, outputs)
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
            g = torch.zeros((*grad_outputs.shape[:1], *a.shape) if batched else a.shape, dtype=a.dtype, device=a.device)
        result[name] = g
    return result


def target_gradients(
    fwd: ForwardPass, target: Target, select: Callable[[Any], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``d score / d A`` per target layer ``(B, K, *s)``, the score ``target`` of the raw output (of a
    joined forward's parts, :func:`joined_gradients`)."""
    if fwd.parts:
        return joined_gradients(fwd.parts, target, select)
    with torch.enable_grad():
        score = target_score(target, fwd.raw, select)
    return backward(fwd, score.sum())


def attention_gradients(
    fwd: ForwardPass, target: Target, select: Callable[[Any], torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """``d score / d A_l`` for each transformer block's attention weights ``(B, H, T, T)`` of a forward
    kept with ``attention_graph`` (:func:`~volcam.engine.capture.capture_forward`): the full gradient,
    through every later block (zeros for a block the score does not depend on). One backward call, the
    graph kept for the next target."""
    if fwd.attention_nodes is None:
        raise MethodError("this forward kept no attention graph (forward(x, attention_graph=True))")
    nodes = fwd.attention_nodes
    with torch.enable_grad():
        score = target_score(target, fwd.raw, select)
    if not score.requires_grad:
        raise MethodError("the model's output does not depend on its attention weights; nothing to weight them by")
    grads = torch.autograd.grad(score.sum(), nodes, retain_graph=True, allow_unused=True)
    return tuple(g if g is not None else torch.zeros_like(a) for g, a in zip(grads, nodes, strict=True))


def joined_gradients(
    parts: Sequence[ForwardPass], target: Target, select: Callable[[Any], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """:func:`target_gradients` of the forwards of one input's batches (a clip's, in order), joined
    along the batch axis ``(B, K, *s)``: one backward call through every part's head. A class target
    given per sample of the whole input is split among the parts."""
    per_part = _split_target(target, [p.output for p in parts])
    with torch.enable_grad():
        scores = [target_score(t, p.raw, select).sum() for t, p in zip(per_part, parts, strict=True)]
    for p, score in zip(parts, scores, strict=True):
        _check_depends(p, score)
    names = list(parts[0].activations)
    inputs = [p.activations[n] for p in parts for n in names]
    grads = torch.autograd.grad(scores, inputs, retain_graph=True, allow_unused=True)
    found = [g if g is not None else torch.zeros_like(a) for g, a in zip(grads, inputs, strict=True)]
    return {n: torch.cat(found[i :: len(names)]) for i, n in enumerate(names)}


def _split_target(target: Target, outputs: Sequence[torch.Tensor]) -> list[Target]:
    """``target`` for each part of a batch split along its first axis: a class target's classes per
    sample sliced to each part's; any other target as it is (it sees each part's output)."""
    if not isinstance(target, ClassTarget | ClassProbability):
        return [target] * len(outputs)
    classes = target.class_indices(torch.cat([o.detach() for o in outputs]))
    bounds = list(itertools.accumulate((len(o) for o in outputs), initial=0))
    return [type(target)(classes[a:b]) for a, b in itertools.pairwise(bounds)]


def _check_depends(fwd: ForwardPass, outputs: torch.Tensor) -> None:
    """A :class:`LayerError` when ``outputs`` were not computed from ``fwd``'s target layers."""
    if not outputs.requires_grad:
        raise LayerError(
            f"the model's output does not depend on layer(s) {', '.join(fwd.activations)}; "
            "choose a layer the output is computed from"
        )


def class_gradients(fwd: ForwardPass, classes: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Gradients of every class's logit (or of ``classes``), ``(N, B, K, *s)`` per layer.

    One batched backward through the head (``is_grads_batched``), falling back to one backward per
    class for models whose ops cannot be batched that way.
    """
    out = fwd.output
    classes = list(range(num_classes(out))) if classes is None else list(classes)
    grad_outputs = torch.stack([ClassTarget(c).grad_outputs(out.detach()) for c in classes])
    try:
        return backward(fwd, out, grad_outputs, batched=True)
    except RuntimeError as err:
        logger.debug("batched class gradients failed (%s); one backward per class", err)
        per_class = [backward(fwd, out, g) for g in grad_outputs]
        return {name: torch.stack([g[name] for g in per_class]) for name in fwd.activations}


def moment_options(
    n_samples: int | None, noise: float | None, batch_size: int | None, seed: int | None
) -> tuple[int, float, int, int]:
    """Smooth Grad-CAM++'s noisy-copy options, each left ``None`` taking its default from the method
    registry (the one home of those defaults: ``engine_options`` of ``"smoothgradcam++"``)."""
    info = get_method("smoothgradcam++")
    n_samples = int(_number_option(info, "n_samples")) if n_samples is None else n_samples
    noise = _number_option(info, "noise") if noise is None else noise
    batch_size = int(_number_option(info, "batch_size")) if batch_size is None else batch_size
    seed = int(_number_option(info, "seed")) if seed is None else seed
    if n_samples < 1 or batch_size < 1:
        raise MethodError("n_samples and batch_size must be at least 1")
    return n_samples, noise, batch_size, seed


def gradient_moments(
    x: torch.Tensor,
    clean: ForwardPass,
    target: Target,
    capture: Callable[[torch.Tensor], ForwardPass],
    select: Callable[[Any], torch.Tensor],
    *,
    n_samples: int,
    noise: float,
    batch_size: int,
    seed: int,
    smooth: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Moments]:
    """Means of ``g``, ``g**2``, ``g**3`` per target layer over ``n_samples`` noisy copies of ``x``.

    Args:
        x: the prepared input ``(B, C, *S)``; ``clean`` its forward, ``target`` resolved on it, so every
            copy explains the same class.
        capture: a forward with the target layers captured, for a batch of copies ``(m * B, C, *S)``.
        noise: σ of the Gaussian noise as a fraction of each sample's intensity range.
        batch_size: copies per forward (one for targets other than classes, which see batch-shaped
            input only).
        smooth: filters each copy's gradients (``gradient_sigma_mm``) before the moments are taken.
    """
    b = x.shape[0]
    flat = x.flatten(1)
    sigma = (noise * (flat.amax(1) - flat.amin(1))).view(b, *[1] * (x.ndim - 1))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    # class targets repeat over copies; any other target sees one batch-shaped copy at a time
    per_copy = target.class_indices(clean.output) if isinstance(target, ClassTarget) else None
    if per_copy is None:
        batch_size = 1
    sums = {n: [torch.zeros_like(a) for _ in range(3)] for n, a in clean.activations.items()}
    done = 0
    while done < n_samples:
        m = min(batch_size, n_samples - done)
        noisy = x.repeat(m, *[1] * (x.ndim - 1))
        noisy = noisy + torch.randn(noisy.shape, generator=gen, device=x.device, dtype=x.dtype) * sigma.repeat(
            m, *[1] * (x.ndim - 1)
        )
        fwd = capture(noisy)
        copy_target = ClassTarget(per_copy.repeat(m)) if per_copy is not None else target
        with torch.enable_grad():
            score = target_score(copy_target, fwd.raw, select).sum()
        for name, g in backward(fwd, score, retain_graph=False).items():
            if smooth is not None:
                g = smooth(name, g)
            g = g.view(m, b, *g.shape[1:])
            acc = sums[name]
            acc[0] += g.sum(0)
            acc[1] += g.pow(2).sum(0)
            acc[2] += g.pow(3).sum(0)
        done += m
    return {n: (s[0] / n_samples, s[1] / n_samples, s[2] / n_samples) for n, s in sums.items()}


def class_weights(
    model: nn.Module, fwd: ForwardPass, classes: torch.Tensor, fc_layer: str | None = None
) -> dict[str, torch.Tensor]:
    """CAM's ``(B, K)`` weights per layer: the linear layer's row of each sample's class ``(B,)``.

    CAM stands on the identity ``logits = W · GAP(A) + b``; it is checked on ``fwd`` (a ``(B, K)``
    product, nothing run again) and a :class:`MethodError` names the layer and what breaks it when it
    does not hold. ``fc_layer`` names the linear layer; ``None`` finds it.
    """
    n_out = fwd.output.shape[1]
    result = {}
    for name, a in fwd.activations.items():
        fc = find_linear_head(model, a.shape[1], n_out, fc_layer)
        _check_cam_identity(model, name, a, fc, fwd.output)
        w = fc.weight.detach().to(a.dtype)
        if n_out == 1:  # class 0 of a single-logit model is -logit
            result[name] = w[0][None, :] * (classes.to(a.dtype) * 2 - 1)[:, None]
        else:
            result[name] = w[classes]
    return result


def _check_cam_identity(model: nn.Module, layer: str, a: torch.Tensor, fc: nn.Linear, output: torch.Tensor) -> None:
    """One :class:`MethodError` line when ``output`` is not ``fc(GAP(a))`` (what lies between, if traceable)."""
    from volcam.engine.head import ops_between
    from volcam.methods.activation import gap_linear_mismatch, gap_linear_tolerance

    mismatch = gap_linear_mismatch(a, fc.weight, fc.bias, output)
    if mismatch <= gap_linear_tolerance(a.dtype):
        return
    fc_name = next(n for n, m in model.named_modules() if m is fc)
    between = ops_between(model, layer, fc_name)
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


def _number_option(info: MethodInfo, option: str) -> float:
    """``info``'s default for a numeric option, as the registry holds it."""
    value = info.options[option]
    if not isinstance(value, (int, float)):
        raise MethodError(f"{info.name}: the registered default {option}={value!r} is not a number")
    return value
