"""Perturbation methods: Score-CAM, Ablation-CAM and occlusion sensitivity.

Each is a function of tensors and a :class:`~volcam.methods.runner.ModelRunner`, which runs the model on
batches of perturbed copies without gradients. They cost many passes, so each reports progress
through the runner and skips work that cannot change the answer (constant channels in Score-CAM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import EllipsisType

import torch
import torch.nn.functional as F

from volcam.errors import MethodError
from volcam.maps.geometry import upsample
from volcam.methods.base import channel_weighted_sum
from volcam.methods.runner import ModelRunner

__all__ = ["ablationcam", "occlusion", "occlusion_drops", "occlusion_patches", "scorecam"]


def scorecam(
    activations: torch.Tensor,
    runner: ModelRunner,
    weights: str = "probability",
    max_channels: int | None = 128,
) -> torch.Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020): channels weighted by the score of the input they mask.

    ``H_k = minmax(upsample(A_k))`` masks the input; ``M = ReLU(sum_k s_k A_k)`` with

    * ``weights="probability"``: ``s_k`` the class probability of ``x * H_k`` (the default,
      ``docs/methods.md#scorecam``, as pytorch-grad-cam computes it);
    * ``weights="increase"``: ``s = softmax_k(y_c(x * H_k) - y_c(x))``, the paper's increase in
      confidence normalised over channels (as TorchCAM computes it).

    Constant channels mask nothing useful and are skipped (weight 0), which saves their forwards.
    Of the others, only the ``max_channels`` of highest spatial variance per sample are masked
    (Faster Score-CAM; the rest get weight 0): each masked channel costs a forward of the whole
    network, and a 3D layer of 2048 channels would take hours. ``None`` masks every channel.
    ``runner.details`` gets ``channels`` (the most masked for any sample) and ``channels_of`` (K).

    Args:
        activations: ``(B, K, *s)``.
        runner: scores the masked inputs, ``runner.batch_size`` at a time.

    Returns:
        ``(B, 1, *s)``.
    """
    if weights not in ("probability", "increase"):
        raise MethodError(f"Score-CAM weights must be 'probability' or 'increase', not {weights!r}")
    if max_channels is not None and (isinstance(max_channels, bool) or not isinstance(max_channels, int)):
        raise MethodError(f"Score-CAM max_channels must be a whole number or None, not {max_channels!r}")
    if max_channels is not None and max_channels < 1:
        raise MethodError(f"Score-CAM max_channels must be at least 1, not {max_channels}")
    b, k = activations.shape[:2]
    size = runner.inputs.shape[2:]
    varying = _top_variance_channels(activations, max_channels)  # (B, K)
    runner.details.update(channels=int(varying.sum(1).amax()) if b else 0, channels_of=k)
    scores = torch.zeros(b, k, dtype=activations.dtype, device=activations.device)
    if weights == "increase":
        scores.fill_(-math.inf)  # constant channels get weight 0 after the softmax
    with runner.progress(int(varying.sum()), "Score-CAM masked forwards") as bar:
        for i in range(b):
            channels = varying[i].nonzero()[:, 0]
            for chunk in channels.split(runner.batch_size):
                masks = upsample(activations[i, chunk][:, None].float(), size)  # (m, 1, *S)
                low = masks.flatten(1).amin(1).view(-1, *[1] * (masks.ndim - 1))
                high = masks.flatten(1).amax(1).view(-1, *[1] * (masks.ndim - 1))
                masks = (masks - low) / torch.where(high > low, high - low, torch.ones_like(high))
                sample = torch.full((len(chunk),), i, dtype=torch.long, device=masks.device)
                masked = runner.inputs[i : i + 1] * masks
                s = runner.input_scores(masked, sample, probability=weights == "probability")
                scores[i, chunk] = s.to(scores.dtype) - (runner.base_scores[i] if weights == "increase" else 0)
                bar.update(len(chunk))
    if weights == "increase":
        scores = torch.softmax(scores, dim=1).nan_to_num(0.0)  # all channels constant: all weights 0
    return F.relu(channel_weighted_sum(scores, activations))


def _top_variance_channels(activations: torch.Tensor, max_channels: int | None) -> torch.Tensor:
    """``(B, K)`` the channels Score-CAM masks: not constant, and among the ``max_channels`` of highest
    spatial variance per sample (all varying ones when ``None``)."""
    flat = activations.flatten(2).float()
    varying = flat.amax(2) > flat.amin(2)
    if max_channels is None or max_channels >= activations.shape[1]:
        return varying
    variance = flat.var(2, unbiased=False).masked_fill(~varying, -1.0)
    top = variance.topk(max_channels, dim=1).indices
    chosen = torch.zeros_like(varying).scatter_(1, top, True)
    return chosen & varying


def ablationcam(activations: torch.Tensor, runner: ModelRunner) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): ``w_k = (y_c - y_c[A_k := 0]) / y_c``.

    Each channel is zeroed in its own row of a batch of copies of ``A``; the runner sends them
    through the head alone when the model can be cut at the layer (K cheap passes), otherwise
    through the whole model with the layer's output replaced (K full forwards).

    Returns:
        ``ReLU(sum_k w_k A_k)``, ``(B, 1, *s)``.
    """
    b, k = activations.shape[:2]
    weights = torch.zeros(b, k, dtype=activations.dtype, device=activations.device)
    eye = torch.eye(k, dtype=torch.bool, device=activations.device)
    with runner.progress(b * k, "Ablation-CAM passes") as bar:
        for i in range(b):
            base = runner.base_scores[i]
            for chunk in torch.arange(k, device=activations.device).split(runner.batch_size):
                ablated = activations[i : i + 1].repeat(len(chunk), *[1] * (activations.ndim - 1))
                ablated[eye[chunk]] = 0  # row j zeroes channel chunk[j]
                sample = torch.full((len(chunk),), i, dtype=torch.long, device=activations.device)
                scores = runner.activation_scores(ablated, sample)
                weights[i, chunk] = ((base - scores) / torch.where(base != 0, base, torch.ones_like(base))).to(
                    weights.dtype
                )
                bar.update(len(chunk))
    return F.relu(channel_weighted_sum(weights, activations))


def occlusion_patches(
    size: Sequence[int],
    spacing: Sequence[float],
    patch_mm: float | Sequence[float] | None = None,
    stride_mm: float | Sequence[float] | None = None,
    max_forwards: int = 128,
) -> tuple[list[torch.Tensor], tuple[int, ...]]:
    """Start positions per axis and the patch size in voxels for a sliding-window occlusion.

    Widths are in mm (seconds on a time axis) and converted with ``spacing``. Windows start every
    ``stride`` voxels, and the last one is moved back to end at the border, so every voxel is
    covered (as MONAI's sliding windows are). With no ``patch_mm`` the grid is chosen so the whole
    volume takes about ``max_forwards`` forwards: ``n`` windows per axis of twice the stride, each
    voxel covered by one or two windows per axis. That keeps the default to minutes on a CPU.

    Returns:
        ``(starts, patch)``: one tensor of start indices per axis, and the patch size in voxels.
    """
    dims = len(size)
    if patch_mm is None:
        n = max(1, math.floor(max_forwards ** (1 / dims) + 1e-9))
        patch = tuple(max(1, math.ceil(2 * s / (n + 1))) for s in size)
        stride = tuple(max(1, math.ceil((s - p) / (n - 1))) if n > 1 else s for s, p in zip(size, patch, strict=True))
    else:
        pm = _per_axis(patch_mm, dims)
        sm = _per_axis(stride_mm if stride_mm is not None else [p / 2 for p in pm], dims)
        patch = tuple(min(s, max(1, round(p / sp))) for p, sp, s in zip(pm, spacing, size, strict=True))
        stride = tuple(max(1, round(st / sp)) for st, sp in zip(sm, spacing, strict=True))
    starts = []
    for s, p, st in zip(size, patch, stride, strict=True):
        pos = list(range(0, max(s - p, 0) + 1, st))
        if pos[-1] != s - p:
            pos.append(s - p)  # the last window ends at the border
        starts.append(torch.tensor(pos))
    return starts, patch


def occlusion(
    runner: ModelRunner,
    spacing: Sequence[float],
    patch_mm: float | Sequence[float] | None = None,
    stride_mm: float | Sequence[float] | None = None,
    baseline: str | float = "mean",
    roi: torch.Tensor | None = None,
    max_forwards: int = 128,
) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus, 2014) on the input grid, batched: the evidence *for*
    the target, ``ReLU`` of the mean score drop (:func:`occlusion_drops`).

    A patch (size and stride in mm) filled with ``baseline`` slides over the input; each voxel
    gets the mean drop of the target score ``y_c(x) - y_c(x occluded)`` over the patches covering
    it (0 outside every patch). ``roi``, a boolean ``(*S)`` mask, keeps only the patches that touch
    it: a lesion's neighbourhood in seconds instead of the whole volume.

    Drops are clipped at 0, as every other method keeps only the evidence for the class
    (``docs/methods.md#occlusion``): where hiding a patch *raises* the score the map is 0, so a
    model that every occlusion helps gives an all-zero map (and the result says so) instead of
    a min-max scaled map whose hottest voxel is where hiding hurts least.

    Args:
        runner: scores the occluded inputs.
        spacing: input voxel size per axis (mm, or s on a time axis).
        baseline: ``"mean"`` (the sample's mean intensity), ``"zero"``, or a number.

    Returns:
        ``(B, 1, *S)`` mean drop per voxel where positive (hiding the voxel lowers the score), else 0.
    """
    return F.relu(occlusion_drops(runner, spacing, patch_mm, stride_mm, baseline, roi, max_forwards))


def occlusion_drops(
    runner: ModelRunner,
    spacing: Sequence[float],
    patch_mm: float | Sequence[float] | None,
    stride_mm: float | Sequence[float] | None,
    baseline: str | float,
    roi: torch.Tensor | None,
    max_forwards: int,
) -> torch.Tensor:
    """The signed mean score drop per voxel behind :func:`occlusion` (its options, without defaults:
    they live in :func:`occlusion`'s signature), ``(B, 1, *S)``: negative where hiding helps."""
    x = runner.inputs
    b, size = x.shape[0], tuple(x.shape[2:])
    starts, patch = occlusion_patches(size, spacing, patch_mm, stride_mm, max_forwards)
    grids = torch.meshgrid(*starts, indexing="ij")
    corners = torch.stack([g.flatten() for g in grids], dim=1)  # (P, dims)
    if roi is not None:
        roi = torch.as_tensor(roi, dtype=torch.bool, device=x.device).reshape(size)
        keep = [
            bool(roi[tuple(slice(int(c), int(c) + p) for c, p in zip(corner, patch, strict=True))].any())
            for corner in corners
        ]
        corners = corners[torch.tensor(keep, dtype=torch.bool)]
        if len(corners) == 0:
            raise MethodError("the occlusion region of interest is empty")
    fill = _baseline(x, baseline)
    total = torch.zeros(b, 1, *size, dtype=torch.float32, device=x.device)
    count = torch.zeros(1, 1, *size, dtype=torch.float32, device=x.device)
    for corner in corners:
        count[_box((...,), corner, patch)] += 1
    with runner.progress(b * len(corners), "occlusion forwards") as bar:
        for i in range(b):
            for chunk in corners.split(runner.batch_size):
                batch = x[i : i + 1].repeat(len(chunk), *[1] * (x.ndim - 1))
                for j, corner in enumerate(chunk):
                    batch[_box((j, slice(None)), corner, patch)] = fill[i]
                sample = torch.full((len(chunk),), i, dtype=torch.long, device=x.device)
                drops = runner.base_scores[i] - runner.input_scores(batch, sample)
                for j, corner in enumerate(chunk):
                    total[_box((i, 0), corner, patch)] += drops[j].float()
                bar.update(len(chunk))
    return total / count.clamp_min(1)


def _box(
    head: tuple[int | slice | EllipsisType, ...], corner: torch.Tensor, patch: Sequence[int]
) -> tuple[int | slice | EllipsisType, ...]:
    """The index ``head`` followed by the patch at ``corner`` on the spatial axes."""
    return (*head, *(slice(int(c), int(c) + p) for c, p in zip(corner, patch, strict=True)))


def _baseline(x: torch.Tensor, baseline: str | float) -> torch.Tensor:
    """``(B,)`` fill values: the sample mean, zero, or a constant."""
    if baseline == "mean":
        return x.flatten(1).mean(1)
    if baseline == "zero":
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if isinstance(baseline, (int, float)):
        return torch.full((x.shape[0],), float(baseline), dtype=x.dtype, device=x.device)
    raise MethodError(f"occlusion baseline must be 'mean', 'zero' or a number, not {baseline!r}")


def _per_axis(value: float | Sequence[float], dims: int) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * dims
    value = tuple(float(v) for v in value)
    if len(value) != dims:
        raise MethodError(f"{len(value)} values were given for {dims} spatial axes")
    return value
