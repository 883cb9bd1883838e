"""Explaining a clip with a frame-based 2D model (POCOVID-style lung ultrasound classifiers).

A spatio-temporal model (3D convolutions over T, H, W) takes a clip as a volume and needs nothing
here: ``volcam.explain(model, clip[None])``. A frame-based model sees one frame at a time: the
frames go through it as a batch, chunk by chunk to bound memory, the clip's class is the one with
the highest mean frame probability, and the frame maps stack back along T, normalised over the
whole clip so a weak frame stays weak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from volcam.engine.core import CamEngine, LayerSpec
from volcam.errors import InputError
from volcam.maps.geometry import like_input, normalize
from volcam.maps.result import MapInfo
from volcam.targets import Target, TargetSpec, probabilities

__all__ = ["ClipResult", "explain_clip"]


@dataclass(frozen=True)
class ClipResult:
    """One explanation of a clip.

    Attributes:
        map: ``(1, T, H, W)`` in [0, 1] over the whole clip, laid out like the clip
            ``(C, T, H, W)``; a ``MetaTensor`` with the clip's affine when the clip was one.
        method: the method's registry name.
        layers: the target layer(s).
        target_class: the class explained (-1 for a custom target).
        labels: the class names, when known.
        frame_probabilities: ``(T, num_classes)``, each frame's class probabilities: the curve
            that shows when in the clip the evidence appears.
        probabilities: ``(num_classes,)``, the clip's: the mean over frames.
        frame_scores: ``(T,)`` the target score per frame.
        timings: wall seconds of the passes.
    """

    map: torch.Tensor
    method: str
    layers: tuple[str, ...]
    target_class: int
    frame_probabilities: torch.Tensor
    probabilities: torch.Tensor
    frame_scores: torch.Tensor
    labels: tuple[str, ...] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        """The clip's predicted class: argmax of the mean frame probability."""
        return int(self.probabilities.argmax())

    @property
    def samples(self) -> int:
        return 1

    def describe(self, index: int = 0) -> MapInfo:
        klass = self.target_class
        label = self.labels[klass] if self.labels and 0 <= klass < len(self.labels) else str(klass)
        probability = float(self.probabilities[klass]) if 0 <= klass < self.probabilities.numel() else None
        return MapInfo(self.method, self.layers[0], label, float(self.frame_scores.mean()), probability)

    def decision(self, index: int = 0) -> tuple[int, int, torch.Tensor | None]:
        return self.target_class, self.predicted, self.probabilities


def explain_clip(
    model: nn.Module,
    clip: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec | Target = None,
    layer: LayerSpec = "auto",
    *,
    chunk_size: int = 16,
    frame_interval: float | None = None,
    temporal_sigma_s: float | None = None,
    min_frame_probability: float | None = None,
    device: str | torch.device | None = None,
    labels: Sequence[str] | None = None,
    **options: Any,
) -> ClipResult:
    """Explain a clip ``(C, T, H, W)`` (or ``(1, C, T, H, W)``) with a frame-based 2D model.

    Args:
        model: takes frames ``(N, C, H, W)``.
        clip: channel-first clip; a ``MetaTensor`` from :func:`volcam.load` carries its frame
            interval and pixel spacing.
        method: any method of :func:`volcam.methods`.
        target: a class index or label for the whole clip, or a :class:`Target`; ``None``
            explains the clip's class (highest mean frame probability), which costs one
            gradient-free pass over the frames first.
        layer: the frame model's target layer(s).
        chunk_size: frames per batch.
        frame_interval: seconds between frames (default: the clip's metadata, else 1 s).
        temporal_sigma_s: smooth the maps along T with a Gaussian of this σ in seconds.
        min_frame_probability: frames whose probability for the explained class is below this
            get an empty map, so only frames confident for the class light up.
        options: passed to :meth:`CamEngine.explain` (method options, ``gradient_sigma_mm``...).

    Example::

        >>> frames_model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ...                                    torch.nn.Linear(8, 3))
        >>> result = explain_clip(frames_model, torch.rand(3, 20, 64, 64), temporal_sigma_s=0.5)
        >>> result.map.shape, result.frame_probabilities.shape
        (torch.Size([1, 20, 64, 64]), torch.Size([20, 3]))
    """
    original = clip
    clip = _channel_first_clip(clip, chunk_size)
    meta = getattr(original, "meta", {}) or {}
    interval = float(frame_interval or meta.get("frame_interval") or 1.0)
    spacing = _frame_spacing(meta)
    plain = clip.as_tensor() if hasattr(clip, "as_tensor") else clip
    chunks = plain.permute(1, 0, 2, 3).split(chunk_size)  # frames as a batch: (T, C, H, W)
    with CamEngine(model, layer, device=device, labels=labels) as engine:
        if target is None:  # the clip's class needs every frame's probabilities first
            outputs = torch.cat([engine.forward(chunk, graph=False).output.detach() for chunk in chunks])
            target = int(probabilities(outputs).mean(0).argmax())
        frames = _explain_frames(engine, chunks, method, target, spacing, options)
    frame_probs = probabilities(frames.outputs)
    cam = _clip_map(frames, frame_probs, interval, temporal_sigma_s, min_frame_probability)
    return ClipResult(
        map=like_input(cam, original if original.ndim == 4 else original[0]),
        method=frames.method,
        layers=frames.layers,
        target_class=frames.target_class,
        frame_probabilities=frame_probs,
        probabilities=frame_probs.mean(0),
        frame_scores=frames.scores,
        labels=tuple(labels) if labels is not None else None,
        timings=frames.timings,
    )


def _channel_first_clip(clip: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """The clip as ``(C, T, H, W)`` (a leading batch of one dropped); an :class:`InputError` otherwise."""
    if clip.ndim == 5 and clip.shape[0] == 1:
        clip = clip[0]
    if clip.ndim != 4:
        raise InputError(f"a clip must be (C, T, H, W) or (1, C, T, H, W); got shape {tuple(clip.shape)}")
    if chunk_size < 1:
        raise InputError("chunk_size must be at least 1")
    return clip


@dataclass(frozen=True)
class _Frames:
    """Every frame's explanation of one class, chunks joined along T."""

    maps: torch.Tensor  # (T, 1, H, W), each frame on the method's own scale
    scores: torch.Tensor  # (T,)
    outputs: torch.Tensor  # (T, num_classes)
    method: str
    layers: tuple[str, ...]
    target_class: int
    timings: dict[str, float]


def _explain_frames(
    engine: CamEngine,
    chunks: Sequence[torch.Tensor],
    method: str,
    target: TargetSpec | Target,
    spacing: tuple[float, float] | None,
    options: dict[str, Any],
) -> _Frames:
    """Each chunk of frames ``(N, C, H, W)`` explained for ``target``, unnormalised, timings summed."""
    maps, scores, outs = [], [], []
    timings: dict[str, float] = {}
    for chunk in chunks:
        result = engine.explain(chunk, method, target, spacing=spacing, normalize=False, **options)
        maps.append(result.map.detach())
        scores.append(result.scores)
        outs.append(result.output)
        for step, seconds in result.timings.items():
            timings[step] = timings.get(step, 0.0) + seconds
    return _Frames(
        torch.cat(maps),
        torch.cat(scores),
        torch.cat(outs),
        result.method,
        result.layers,
        int(result.classes[0]),
        timings,
    )


def _clip_map(
    frames: _Frames,
    frame_probs: torch.Tensor,
    interval: float,
    temporal_sigma_s: float | None,
    min_frame_probability: float | None,
) -> torch.Tensor:
    """The frame maps stacked along T ``(1, T, H, W)``, smoothed in time, quiet frames emptied, and
    normalised over the whole clip so a weak frame stays weak."""
    cam = frames.maps[:, 0][None, None]  # (1, 1, T, H, W)
    if temporal_sigma_s:
        from volcam.maps.filters import gaussian_filter_mm

        cam = gaussian_filter_mm(cam, (temporal_sigma_s, 0.0, 0.0), (interval, 1.0, 1.0))
    if min_frame_probability is not None and frames.target_class >= 0:
        quiet = frame_probs[:, frames.target_class] < min_frame_probability
        cam[:, :, quiet.to(cam.device)] = 0
    return normalize(cam)[0]


def _frame_spacing(meta: dict) -> tuple[float, float] | None:
    """(row, column) spacing in mm from a clip's metadata (spacing is (T, H, W))."""
    spacing = meta.get("spacing")
    if spacing is None or len(spacing) != 3:
        return None
    return (float(spacing[1]), float(spacing[2]))
