"""Does the model need what the map marks? Deletion/insertion, Average Drop/Increase, ROAD.

Each function takes the model, its input ``x`` ``(B, C, *S)`` (as the model takes it) and maps
``(B, 1, *S)`` on the input grid (e.g. ``CamResult.map``), and scores perturbed copies of ``x`` in
batches under ``torch.no_grad()`` with the model in eval mode (its modes are restored). Scores are
the probability of the explained class (the predicted class unless ``target`` says otherwise).
The definitions are those of docs/methods.md#faithfulness.

Example::

    >>> result = volcam.explain(net, ct, "gradcam")
    >>> curves = deletion_insertion(net, ct, result.map, steps=100, region=lung_mask)
    >>> curves.deletion.auc, curves.insertion.auc     # lower / higher is better
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from volcam.engine.drive import model_input
from volcam.metrics._common import MetricInputError, Scorer, as_map, as_mask, spacing_of
from volcam.metrics.imputation import noisy_linear_imputation
from volcam.targets import ClassProbability, OutputSpec, TargetSpec

__all__ = [
    "BASELINES",
    "ConfidenceChange",
    "Curve",
    "DeletionInsertion",
    "Road",
    "average_drop_increase",
    "deletion_insertion",
    "removal_order",
    "road",
]

Baseline = str | float
#: The named baselines: what deleted voxels become (or insertion starts from), besides a number.
BASELINES = ("zero", "mean", "blur")


@dataclass(frozen=True)
class Curve:
    """A class-probability curve over the fraction of voxels changed.

    Attributes:
        fractions: ``(S + 1,)`` 0, 1/S, ..., 1: the fraction of ranked voxels removed (deletion) or
            restored (insertion).
        scores: ``(B, S + 1)`` the class probability at each fraction.
        auc: ``(B,)`` area under the curve by the trapezoid rule over [0, 1].
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


@dataclass(frozen=True)
class DeletionInsertion:
    """Deletion and insertion curves of a batch of maps.

    Attributes:
        deletion: removing the most salient voxels first; a low AUC is a faithful map.
        insertion: restoring the most salient voxels first into the insertion baseline; high is good.
        classes: ``(B,)`` the class whose probability is scored.
        forwards: model rows run (``2·S + 1`` per sample: the input once, ``S`` per curve).
        seconds: wall time.
    """

    deletion: Curve
    insertion: Curve
    classes: torch.Tensor
    forwards: int
    seconds: float


def removal_order(
    cam: torch.Tensor, region: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    """Rank of each voxel of one map ``(*S)``: 0 for the most salient, ties broken at random.

    Voxels outside ``region`` (``(*S)`` boolean) are never ranked: they get the rank ``n``, where
    ``n`` (returned) is the number of ranked voxels, so ``rank < k`` selects the top ``k``.
    """
    flat = cam.reshape(-1).float()
    shuffle = torch.randperm(flat.numel(), generator=generator).to(flat.device)
    # a stable sort of a random permutation: equal values keep a random order
    order = shuffle[torch.sort(flat[shuffle], descending=True, stable=True).indices]
    if region is not None:
        order = order[region.reshape(-1)[order]]
    rank = torch.full((flat.numel(),), order.numel(), dtype=torch.long, device=flat.device)
    rank[order] = torch.arange(order.numel(), device=flat.device)
    return rank.view(cam.shape), order.numel()


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    cam: torch.Tensor,
    target: TargetSpec = None,
    *,
    steps: int = 100,
    baseline: Baseline = "zero",
    insertion_baseline: Baseline = "blur",
    region: torch.Tensor | None = None,
    blur_sigma_mm: float | Sequence[float] = 5.0,
    spacing: float | Sequence[float] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    output: OutputSpec = None,
) -> DeletionInsertion:
    """Deletion and insertion curves (RISE, Petsiuk et al., BMVC 2018) in ``1/steps`` steps.

    Voxels are ranked by the map (ties at random, only inside ``region`` when given). Deletion
    replaces the top ``k/steps`` of them by ``baseline``; insertion starts from
    ``insertion_baseline`` and restores the top ``k/steps`` from ``x``. Each curve costs ``steps``
    model rows (the unchanged input is scored once for both), run ``batch_size`` at a time.

    Args:
        model: the classifier; not changed.
        x: ``(B, C, *S)`` the model's input.
        cam: ``(B, 1, *S)`` or ``(*S)`` maps on the input grid; higher is more salient.
        target: the class scored (index or label per sample); ``None``: the predicted class.
        steps: S, the number of steps (100: 1% each).
        baseline: what deleted voxels become: ``"zero"``, ``"mean"`` (the sample's mean per
            channel), ``"blur"`` (a Gaussian-blurred copy) or a constant.
        insertion_baseline: what insertion starts from (same choices; RISE blurs).
        region: ``(*S)``, ``(B, *S)`` or ``(B, 1, *S)`` body or lung mask; only its voxels are
            ranked, changed and counted. ``None``: the whole input.
        blur_sigma_mm: σ of the blur in mm (per axis or one value).
        spacing: voxel size in mm; default: the ``MetaTensor``'s, else 1.
        batch_size: model rows per call.
        seed: for the tie-breaking.
        output: the tensor scored, of a model returning several (a key, an index or a callable: the
            engine's ``output=``, a card's ``"output"``); ``None``: the model's only tensor.

    Returns:
        :class:`DeletionInsertion`.
    """
    if steps < 1:
        raise MetricInputError(f"steps must be at least 1, not {steps}")
    start = time.perf_counter()
    xp = model_input(model, x)
    cam = as_map(cam).to(xp.device)
    _check_grid(cam, xp)
    regions = as_mask(region, cam, "region") if region is not None else None
    sp = spacing_of(x, spacing, xp.ndim - 2)
    scorer = Scorer(model, batch_size, output)
    classes, base = scorer.resolve(xp, target)
    generator = torch.Generator().manual_seed(seed)
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    deletion = torch.empty(xp.shape[0], steps + 1, dtype=torch.float64)
    insertion = torch.empty_like(deletion)
    for i in range(xp.shape[0]):
        sample = xp[i]
        rank, n = removal_order(cam[i, 0], regions[i, 0] if regions is not None else None, generator)
        counts = torch.round(fractions * n).long().to(xp.device)
        removed_to = _baseline(sample, baseline, sp, blur_sigma_mm)
        inserted_into = _baseline(sample, insertion_baseline, sp, blur_sigma_mm)
        cls = int(classes[i])
        # deletion at k = 1..S: the top counts[k] voxels become the baseline
        deletion[i, 0] = base[i]
        deletion[i, 1:] = _curve(scorer, cls, rank, counts[1:], removed_to, sample, batch_size)
        # insertion at k = 0..S-1: the top counts[k] voxels come back from the input
        insertion[i, :-1] = _curve(scorer, cls, rank, counts[:-1], sample, inserted_into, batch_size)
        insertion[i, -1] = base[i]
    return DeletionInsertion(
        deletion=Curve(fractions, deletion, torch.trapezoid(deletion, fractions, dim=1)),
        insertion=Curve(fractions, insertion, torch.trapezoid(insertion, fractions, dim=1)),
        classes=classes.cpu(),
        forwards=scorer.forwards,
        seconds=time.perf_counter() - start,
    )


def _curve(
    scorer: Scorer,
    cls: int,
    rank: torch.Tensor,
    counts: torch.Tensor,
    top: torch.Tensor,
    rest: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """Probabilities of the images that take ``top`` at the ``counts[j]`` best-ranked voxels and ``rest`` elsewhere."""
    out = []
    view = (-1, *[1] * rank.ndim)
    for chunk in counts.split(batch_size):
        # (m, 1, *S) masks broadcast over channels: one batch holds m steps
        chosen = (rank[None] < chunk.view(view))[:, None]
        out.append(scorer.probability(torch.where(chosen, top[None], rest[None]), cls).double().cpu())
    return torch.cat(out)


def _baseline(
    sample: torch.Tensor, kind: Baseline, spacing: tuple[float, ...], sigma_mm: float | Sequence[float]
) -> torch.Tensor:
    """``(C, *S)`` what removed voxels of ``sample`` ``(C, *S)`` are replaced with."""
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(sample, float(kind))
    if kind == "zero":
        return torch.zeros_like(sample)
    if kind == "mean":
        return sample.flatten(1).mean(1).view(-1, *[1] * (sample.ndim - 1)).expand_as(sample)
    if kind == "blur":
        from volcam.maps.filters import gaussian_filter_mm

        try:
            return gaussian_filter_mm(sample[None], sigma_mm, spacing)[0]
        except ValueError as err:
            raise MetricInputError(f"blur_sigma_mm={sigma_mm!r}: {err}") from None
    named = ", ".join(repr(name) for name in BASELINES)
    raise MetricInputError(f"baseline must be {named} or a number, not {kind!r}")


def _check_grid(cam: torch.Tensor, x: torch.Tensor) -> None:
    if tuple(cam.shape[2:]) != tuple(x.shape[2:]) or cam.shape[0] not in (1, x.shape[0]):
        raise MetricInputError(
            f"the map has shape {tuple(cam.shape)}; the input {tuple(x.shape)} needs (B, 1, *S) on the same grid"
        )


def _maps_for(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    cam = as_map(cam).to(x.device)
    _check_grid(cam, x)
    return cam.expand(x.shape[0], *cam.shape[1:])


# -- Average Drop / Increase in Confidence ---------------------------------------------------------
@dataclass(frozen=True)
class ConfidenceChange:
    """Average Drop and Increase in Confidence (Grad-CAM++, Chattopadhay et al., WACV 2018).

    Attributes:
        average_drop: ``100/N Σ max(0, Y − O) / Y`` in percent; lower is better.
        increase: ``100/N Σ [O > Y]`` in percent; higher is better.
        original: ``(B,)`` Y, the class probability on the input.
        explained: ``(B,)`` O, the class probability on the explanation image ``E = M ⊙ x``.
        classes: ``(B,)``.
    """

    average_drop: float
    increase: float
    original: torch.Tensor
    explained: torch.Tensor
    classes: torch.Tensor


def average_drop_increase(
    model: nn.Module,
    x: torch.Tensor,
    cam: torch.Tensor,
    target: TargetSpec = None,
    *,
    window: tuple[float, float] | None = None,
    batch_size: int = 16,
    output: OutputSpec = None,
) -> ConfidenceChange:
    """Average Drop and Increase in Confidence of maps ``(B, 1, *S)`` with values in [0, 1].

    The explanation image multiplies the [0, 1]-windowed intensities by the map,
    ``E = M ⊙ clip((x − low) / (high − low), 0, 1)``, and goes back to the model's units as
    ``low + (high − low) · E``, so voxels the map leaves out become ``low``.

    Args:
        window: ``(low, high)`` in the model's input units (e.g. the intensity range the
            preprocessing maps to [0, 1]); ``None``: each sample's own minimum and maximum.
    """
    xp = model_input(model, x)
    cam = _maps_for(cam, xp).to(xp.dtype)
    if float(cam.min()) < 0 or float(cam.max()) > 1:
        raise MetricInputError("Average Drop needs maps in [0, 1] (normalise them first)")
    view = (-1, *[1] * (xp.ndim - 1))
    if window is None:
        low, high = xp.flatten(1).amin(1).view(view), xp.flatten(1).amax(1).view(view)
    else:
        if not window[1] > window[0]:
            raise MetricInputError(f"window {window} must be (low, high) with high > low")
        low, high = (torch.tensor(float(v), device=xp.device, dtype=xp.dtype) for v in window)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    explained_image = low + span * cam * ((xp - low) / span).clamp(0, 1)
    scorer = Scorer(model, batch_size, output)
    classes, y = scorer.resolve(xp, target)
    o = ClassProbability(classes)(scorer.outputs(explained_image)).float()
    y, o = y.double().cpu(), o.double().cpu()
    drop = (y - o).clamp_min(0) / y.clamp_min(torch.finfo(torch.float64).tiny)
    return ConfidenceChange(
        average_drop=float(100 * drop.mean()),
        increase=float(100 * (o > y).double().mean()),
        original=y,
        explained=o,
        classes=classes.cpu(),
    )


# -- ROAD -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Road:
    """ROAD (Rong et al., ICML 2022): remove and debias with noisy linear imputation.

    Attributes:
        percentages: ``(P,)`` the percentages of ranked voxels removed.
        morf: ``(B, P)`` class probability with the most relevant first removed; lower is better.
        lerf: ``(B, P)`` with the least relevant first removed; higher is better.
        score: ``(B,)`` the mean over the percentages of ``(LeRF − MoRF) / 2``; higher is better.
        classes: ``(B,)``.
        seconds: wall time (imputation dominates on large volumes).
    """

    percentages: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    score: torch.Tensor
    classes: torch.Tensor
    seconds: float


def road(
    model: nn.Module,
    x: torch.Tensor,
    cam: torch.Tensor,
    target: TargetSpec = None,
    *,
    percentages: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    neighbours: int = 26,
    noise: float = 0.01,
    region: torch.Tensor | None = None,
    batch_size: int = 16,
    seed: int = 0,
    output: OutputSpec = None,
) -> Road:
    """ROAD MoRF and LeRF curves with noisy linear imputation (:mod:`volcam.metrics.imputation`).

    For each percentage p, the top (MoRF) or bottom (LeRF) p% of the ranked voxels (ties at
    random; only inside ``region`` when given) are imputed from their 6 or 26 neighbours plus
    Gaussian noise of σ ``noise`` (in the input's units), and the class probability is taken; all
    ``2·P`` images of a sample are scored in batches.
    """
    if any(not 0 < p < 100 for p in percentages):
        raise MetricInputError(f"ROAD percentages must lie strictly between 0 and 100, got {tuple(percentages)}")
    start = time.perf_counter()
    xp = model_input(model, x)
    cam = _maps_for(cam, xp)
    regions = as_mask(region, cam, "region") if region is not None else None
    scorer = Scorer(model, batch_size, output)
    classes, _ = scorer.resolve(xp, target)
    generator = torch.Generator().manual_seed(seed)
    fractions = torch.tensor([float(p) / 100 for p in percentages], dtype=torch.float64)
    morf = torch.empty(xp.shape[0], len(fractions), dtype=torch.float64)
    lerf = torch.empty_like(morf)
    for i in range(xp.shape[0]):
        rank, n = removal_order(cam[i, 0], regions[i, 0] if regions is not None else None, generator)
        rank = rank.cpu()
        images = []
        for f in fractions.tolist():
            k = round(f * n)
            for removed in (rank < k, (rank >= n - k) & (rank < n)):
                images.append(
                    noisy_linear_imputation(xp[i], removed, neighbours=neighbours, noise=noise, generator=generator)
                )
        probs = scorer.probability(torch.stack(images), int(classes[i])).double().cpu().view(-1, 2)
        morf[i], lerf[i] = probs[:, 0], probs[:, 1]
    return Road(
        percentages=fractions * 100,
        morf=morf,
        lerf=lerf,
        score=((lerf - morf) / 2).mean(1),
        classes=classes.cpu(),
        seconds=time.perf_counter() - start,
    )
