"""From a captured forward to a method's inputs, and from its per-layer maps to one :class:`CamResult`.

What a caller asked for is checked once (:func:`request`); each target layer's voxel size and the
input's are worked out once (:func:`layer_fields`); gradients may be smoothed in mm at the layer's
resolution (:func:`gradient_filter`); the method's maps ``(B, 1, *s)`` per layer are checked for
showing nothing (:func:`flat_maps`), brought to the input's grid, fused and scaled (:func:`finish`).
No hooks and no forward here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

import torch

from volcam.engine.capture import ForwardPass
from volcam.engine.drive import input_spacing
from volcam.errors import InputError, MethodError
from volcam.maps.geometry import like_input, normalize, upsample
from volcam.maps.result import CamResult
from volcam.methods.base import LayerCapture
from volcam.methods.registry import MethodInfo, get_method
from volcam.methods.runner import ModelRunner
from volcam.targets import Target, probabilities, target_score

__all__ = [
    "LayerFields",
    "engine_options",
    "feature_spacing",
    "finish",
    "flat_maps",
    "gradient_filter",
    "input_spacing_of",
    "layer_fields",
    "request",
]

# a Grad-CAM-family map below this fraction of its gradient × activation terms' size has cancelled out
_CANCELLED = 1e-3


class LayerFields(TypedDict, total=False):
    """:class:`LayerCapture`'s keyword fields for one layer, filled in as the method's needs are met."""

    spacing: tuple[float, ...]
    input_spacing: tuple[float, ...]
    gradients: torch.Tensor
    gradient_moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    class_weights: torch.Tensor
    runner: ModelRunner
    attention: tuple[torch.Tensor, ...]


# -- what was asked ---------------------------------------------------------------------------------
def request(
    method: str, gradient_sigma_mm: float | Sequence[float] | None, options: Mapping[str, Any]
) -> tuple[MethodInfo, dict[str, Any]]:
    """The one check of what a caller asked for, shared by every entry point: the method exists, its
    options are its own, and a gradient filter is asked only of a method that uses gradients."""
    info = get_method(method)
    opts = _method_options(info, options)
    if gradient_sigma_mm is not None and not info.needs_gradients:
        raise MethodError(f"{info.name!r} uses no gradients, so gradient_sigma_mm does not apply to it")
    return info, opts


def engine_options(opts: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """Those of ``names`` that ``opts`` sets (not ``None``): a method's options the engine acts on."""
    return {n: opts[n] for n in names if n in opts and opts[n] is not None}


def _method_options(info: MethodInfo, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(info.options)
    if unknown:
        takes = ", ".join(info.options) if info.options else "no options"
        raise MethodError(f"{info.name!r} does not take {', '.join(sorted(unknown))}; it takes {takes}")
    return {**info.options, **options}


# -- a method's inputs ------------------------------------------------------------------------------
def layer_fields(
    x: torch.Tensor, fwd: ForwardPass, spacing: Sequence[float] | None, default: Sequence[float] | None = None
) -> dict[str, LayerFields]:
    """Per target layer, what every method may read besides its tensors: the layer's voxel size
    (the input's times the layer's stride) and the input's, in mm (:func:`input_spacing_of`)."""
    given = input_spacing_of(x, spacing, default)
    return {
        n: {"spacing": feature_spacing(given, x.shape[2:], a.shape[2:]), "input_spacing": given}
        for n, a in fwd.activations.items()
    }


def input_spacing_of(
    x: torch.Tensor, spacing: Sequence[float] | None, default: Sequence[float] | None = None
) -> tuple[float, ...]:
    """The voxel size of ``x`` ``(B, C, *S)`` per spatial axis in mm: ``spacing`` (one value for all
    axes, or one each), else the ``MetaTensor``'s, else ``default``, else 1 per voxel."""
    dims = x.ndim - 2
    if spacing is None:
        spacing = input_spacing(x, dims) or default
    if spacing is None:
        return (1.0,) * dims
    spacing = tuple(float(s) for s in (spacing if isinstance(spacing, Sequence) else [spacing] * dims))
    if len(spacing) != dims or any(s <= 0 for s in spacing):
        raise InputError(f"spacing {spacing} does not give a positive size for each of the {dims} spatial axes")
    return spacing


def feature_spacing(spacing: Sequence[float], size: Sequence[int], feature_size: Sequence[int]) -> tuple[float, ...]:
    """A layer's voxel size: the input's times the layer's stride per axis."""
    return tuple(float(sp) * s / f for sp, s, f in zip(spacing, size, feature_size, strict=True))


def gradient_filter(
    sigma_mm: float | Sequence[float] | None, fields: Mapping[str, LayerFields]
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


# -- the result -------------------------------------------------------------------------------------
def finish(
    x: torch.Tensor,
    info: MethodInfo,
    captures: Sequence[LayerCapture],
    fwd: ForwardPass,
    tgt: Target,
    classes: torch.Tensor,
    timings: dict[str, float],
    opts: Mapping[str, Any],
    *,
    scale: bool = True,
    labels: tuple[str, ...] | None = None,
    select: Callable[[Any], torch.Tensor],
    on_layer: bool = False,
) -> CamResult:
    """Run the method on each layer's capture and make the :class:`CamResult`: the map ``(B, 1, *S)``
    on ``x``'s grid (layers fused; min-max scaled per sample with ``scale``), the scores of ``tgt``,
    the lines on maps that show nothing; ``timings`` gains ``method`` and ``upsample`` seconds.
    ``on_layer`` leaves a single layer's map on that layer's grid ``(B, 1, *s)``."""
    start = time.perf_counter()
    with torch.no_grad():
        raw, details = _run_method(info, captures, opts)
        timings["method"] = time.perf_counter() - start
        explained = [
            "the custom target" if k < 0 else f"class {labels[k] if labels else str(k)!r}" for k in classes.tolist()
        ]
        raw, warnings = flat_maps(info, captures, raw, explained)
        start = time.perf_counter()
        cam = _on_input_grid(info, raw, raw[0].shape[2:] if on_layer and len(raw) == 1 else x.shape[2:])
        if scale:
            cam = normalize(cam)
        timings["upsample"] = time.perf_counter() - start
        output = fwd.output.detach()
        scores = target_score(tgt, fwd.raw, select).detach()
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
        labels=labels,
        timings=timings,
        warnings=tuple(warnings),
        details=details,
    )


def _run_method(
    info: MethodInfo, captures: Sequence[LayerCapture], opts: Mapping[str, Any]
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The method's map ``(B, 1, *s)`` per layer, and what its runs reported (Score-CAM's channels,
    the number of forwards) per layer, or flat for one layer."""
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
    return raw, details


def _on_input_grid(info: MethodInfo, raw: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """The per-layer maps brought to the input's grid ``size`` and fused into one ``(B, 1, *S)``
    (the method's fusion, else the mean of the normalised maps)."""
    if len(raw) == 1:
        return upsample(raw[0].float(), size)
    maps = [upsample(r.float(), size) for r in raw]
    return info.fuse(maps) if info.fuse is not None else torch.stack([normalize(m) for m in maps]).mean(0)


def flat_maps(
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
        cancelled, everywhere = _cancelled(info, c, top)
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


def _cancelled(info: MethodInfo, c: LayerCapture, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample ``(B,)``: whether a Grad-CAM-family map of largest value ``top`` has cancelled out,
    and whether ``sum_k g_k A_k`` vanishes at every position (both all false for other methods)."""
    cancelled = torch.zeros_like(top, dtype=torch.bool)
    everywhere = torch.zeros_like(cancelled)
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
    return cancelled, everywhere
