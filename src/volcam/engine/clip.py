"""Explaining a clip batch by batch: a frame-based 2D model (POCOVID-style lung ultrasound classifiers)
sees its frames as a batch; a spatio-temporal model trained on short windows sees its windows
(:mod:`volcam.engine.windows`).

One pass over the clip keeps, per batch, the target layer's activations and the head's graph
(:meth:`CamEngine.forward`), as the engine keeps them for a volume: the clip's class is read from
that pass's logits (the highest mean probability over the batch items), and every class or gradient
method after it costs a backward through the head per batch (:meth:`CamEngine.explain_forward`).
Methods that run the model on changed inputs (perturbation, noisy copies) take the batches again.
A frame model's maps stack back along T, normalised over the whole clip so a weak frame stays weak.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from volcam.engine.capture import ForwardPass, join_passes
from volcam.engine.core import CamEngine, LayerSpec
from volcam.errors import InputError
from volcam.maps.geometry import like_input, normalize_, upsample
from volcam.maps.result import CamResult, MapInfo
from volcam.methods.registry import get_method
from volcam.targets import Target, TargetSpec, probabilities

__all__ = ["Batches", "ClipPass", "ClipResult", "Items", "clip_map", "explain_clip", "explain_frames", "frame_spacing"]

Batches = Callable[[], Iterable[torch.Tensor]]
"""Gives a clip's batches in clip order, each ``(N, C, *S)`` as the model takes it; called once per pass."""

# what a kept forward serves without the model's input (CamEngine.explain_forward)
_FROM_KEPT = frozenset({"gradients", "class_weights"})


@dataclass(frozen=True)
class ClipResult:
    """One explanation of a clip.

    Attributes:
        map: ``(1, T, H, W)`` in [0, 1] over the whole clip, on the grid of the clip the model saw
            ``(C, T, H, W)``; a ``MetaTensor`` with that clip's affine when the clip was one.
        method: the method's registry name.
        layers: the target layer(s).
        target_class: the class explained (-1 for a custom target).
        labels: the class names, when known.
        frame_probabilities: ``(T, num_classes)``, each frame's class probabilities: the curve
            that shows when in the clip the evidence appears (a windowed model's: its windows'
            probabilities weighted onto each frame as their maps are).
        probabilities: ``(num_classes,)``, the clip's: the mean over frames (over windows).
        frame_scores: ``(T,)`` the target score per frame.
        window_starts: the first frame of each window (a windowed model); empty for a frame model.
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
    window_starts: tuple[int, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        """The clip's predicted class: argmax of the mean frame (window) probability."""
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


@dataclass(frozen=True)
class Items:
    """Every batch item's explanation of one class, joined along the batch axis."""

    maps: torch.Tensor  # (N, 1, *s) on the target layer's grid or the input's, each on the method's own scale
    size: tuple[int, ...]  # the input's grid *S, where the maps go (upsample)
    scores: torch.Tensor  # (N,)
    outputs: torch.Tensor  # (N, num_classes)
    method: str
    layers: tuple[str, ...]
    target_class: int
    timings: dict[str, float]


class ClipPass:
    """A clip through its model batch by batch, each batch's forward kept at the target layer(s).

    Args:
        engine: the model at its target layer(s); the passes are kept here, not in its cache.
        batches: the clip's batches (its frames, or its windows along T); called for each pass.
        spacing: a batch item's voxel size per spatial axis (mm; s on a time axis).

    Memory: the activations ``(N, K, *s)`` of every batch item, and the head's graph from them (a
    pooling and a linear layer after a ResNet's last block: 300 frames × 512 × 7 × 7 floats, 30 MB);
    not the input.
    """

    def __init__(self, engine: CamEngine, batches: Batches, spacing: Sequence[float] | None = None) -> None:
        self.engine = engine
        self.batches = batches
        self.spacing = tuple(spacing) if spacing is not None else None
        self._kept: ForwardPass | None = None  # the batches' forwards, joined
        self._item: tuple[int, ...] = ()  # one batch item's input shape (C, *S)
        self.passes = 0  # passes over the whole clip so far (for tests and timings)

    def run(self, graph: bool) -> float:
        """One pass over the batches keeping each forward, unless one is kept already (with a graph
        when ``graph``); the seconds it took (0 when kept)."""
        if self._kept is not None and (self._kept.graph or not graph):
            return 0.0
        self._kept = None  # the old pass goes before the new one is made
        start = time.perf_counter()
        parts = []
        try:
            for batch in self.batches():
                parts.append(self.engine.forward(batch, graph=graph))
                self._item = tuple(batch.shape[1:])
        finally:
            self.engine.close()  # its cache would hold the last batch twice
        if not parts:
            raise InputError("the clip has no frames")
        self._kept = join_passes(parts)
        self.passes += 1
        return time.perf_counter() - start

    @property
    def outputs(self) -> torch.Tensor:
        """``(N, num_classes)`` the kept pass's outputs, every batch item's (run it first)."""
        if self._kept is None:
            raise RuntimeError("no pass over the clip yet: run() first")
        return self._kept.output

    def explain(self, method: str, target: TargetSpec | Target, options: dict[str, Any]) -> Items:
        """Every batch item explained for ``target``, unnormalised; ``None`` explains the clip's class
        (the highest mean probability over the batch items)."""
        info = get_method(method)
        from_kept = info.needs <= _FROM_KEPT
        seconds = self.run(graph=from_kept and info.needs_gradients) if from_kept or target is None else 0.0
        if target is None:
            target = int(probabilities(self.outputs).mean(0).argmax())
        opts = {"spacing": self.spacing, "normalize": False, **options}
        if from_kept and self._kept is not None:  # the clip as one batch, the map on the layer's grid
            # the input is not kept: a stand-in with its shape on the meta device, where anything that
            # tried to read it would fail rather than compute on made-up values
            like = torch.empty((len(self._kept.output), *self._item), device="meta")
            results = [self.engine.explain_forward(self._kept, like, method, target, on_layer=True, **opts)]
        else:  # the model runs on changed inputs: the batches again, each explained from its input
            results = [self.engine.explain(batch, method, target, **opts) for batch in self.batches()]
            self.engine.close()
            like = results[0].map
        forward = seconds + (0.0 if from_kept else sum(r.timings.get("forward", 0.0) for r in results))
        return _joined(results, tuple(like.shape[2:]), forward)


def _joined(results: Sequence[CamResult], size: tuple[int, ...], forward_seconds: float) -> Items:
    """The batches' results joined along the batch axis; timings summed, ``forward`` what ran now."""
    timings: dict[str, float] = {"forward": forward_seconds}
    for result in results:
        for step, seconds in result.timings.items():
            if step != "forward":
                timings[step] = timings.get(step, 0.0) + seconds
    first = results[0]
    return Items(
        torch.cat([r.map.detach() for r in results]),
        size,
        torch.cat([r.scores.detach() for r in results]),
        torch.cat([r.output.detach() for r in results]),
        first.method,
        first.layers,
        int(first.classes[0]),
        timings,
    )


def explain_frames(
    clip_pass: ClipPass,
    like: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec | Target = None,
    *,
    frame_interval: float | None = None,
    temporal_sigma_s: float | None = None,
    min_frame_probability: float | None = None,
    labels: Sequence[str] | None = None,
    **options: Any,
) -> ClipResult:
    """A frame model's explanation of a clip from its pass over the frames (:class:`ClipPass` whose
    batches are frames ``(N, C, H, W)``); ``like`` is the clip the model saw ``(C, T, H, W)`` (or a
    ``MetaTensor`` with its shape and affine), whose metadata the map gets. The other arguments are
    :func:`explain_clip`'s."""
    meta = getattr(like, "meta", {}) or {}
    interval = float(frame_interval or meta.get("frame_interval") or 1.0)
    frames = clip_pass.explain(method, target, options)
    frame_probs = probabilities(frames.outputs)
    cam = upsample(frames.maps.float(), frames.size)[:, 0][None, None]  # (1, 1, T, H, W)
    cam = clip_map(cam, frame_probs, frames.target_class, interval, temporal_sigma_s, min_frame_probability)
    return ClipResult(
        map=like_input(cam, like),
        method=frames.method,
        layers=frames.layers,
        target_class=frames.target_class,
        frame_probabilities=frame_probs,
        probabilities=frame_probs.mean(0),
        frame_scores=frames.scores,
        labels=tuple(labels) if labels is not None else None,
        timings=frames.timings,
    )


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
            explains the clip's class (highest mean frame probability), read from the same pass.
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
    like = channel_first_clip(clip)
    if chunk_size < 1:
        raise InputError("chunk_size must be at least 1")
    plain = like.as_tensor() if hasattr(like, "as_tensor") else like
    with CamEngine(model, layer, device=device, labels=labels) as engine:
        frames = ClipPass(engine, lambda: plain.permute(1, 0, 2, 3).split(chunk_size), frame_spacing(like))
        return explain_frames(
            frames, like, method, target,
            frame_interval=frame_interval, temporal_sigma_s=temporal_sigma_s,
            min_frame_probability=min_frame_probability, labels=labels, **options,
        )  # fmt: skip


def channel_first_clip(clip: torch.Tensor) -> torch.Tensor:
    """The clip as ``(C, T, H, W)`` (a leading batch of one dropped); an :class:`InputError` otherwise."""
    if clip.ndim == 5 and clip.shape[0] == 1:
        clip = clip[0]
    if clip.ndim != 4:
        raise InputError(f"a clip must be (C, T, H, W) or (1, C, T, H, W); got shape {tuple(clip.shape)}")
    return clip


def clip_map(
    cam: torch.Tensor,
    frame_probs: torch.Tensor,
    target_class: int,
    interval: float,
    temporal_sigma_s: float | None,
    min_frame_probability: float | None,
) -> torch.Tensor:
    """The maps along T ``(1, 1, T, H, W)`` → ``(1, T, H, W)``: smoothed in time, quiet frames emptied,
    and normalised over the whole clip so a weak frame stays weak."""
    if temporal_sigma_s:
        from volcam.maps.filters import gaussian_filter_mm

        cam = gaussian_filter_mm(cam, (temporal_sigma_s, 0.0, 0.0), (interval, 1.0, 1.0))
    if min_frame_probability is not None and target_class >= 0:
        quiet = frame_probs[:, target_class] < min_frame_probability
        cam[:, :, quiet.to(cam.device)] = 0
    return normalize_(cam)[0]  # in place: the clip's map is the largest thing made here


def frame_spacing(clip: torch.Tensor) -> tuple[float, float] | None:
    """(row, column) spacing in mm of a clip ``(C, T, H, W)`` from its metadata (spacing is (T, H, W))."""
    spacing = (getattr(clip, "meta", {}) or {}).get("spacing")
    if spacing is None or len(spacing) != 3:
        return None
    return (float(spacing[1]), float(spacing[2]))
