"""A spatio-temporal model trained on short windows, explained on a longer clip.

The clip ``(C, T, H, W)`` is cut along T into windows of ``frames`` every ``stride`` frames, the last
one aligned to the clip's end so every frame is covered (MONAI's ``dense_patch_slices``, what its
sliding-window inference runs). The windows go through the model in batches ``(B, C, frames, H, W)``
with their forwards kept (:class:`~volcam.engine.clip.ClipPass`); the clip's class is the one with the
highest mean window probability; each window's map ``(1, frames, H, W)`` is stitched back along T
with the overlap weighting of MONAI's sliding-window inference (``compute_importance_map``).

Weighting: ``"gaussian"`` (σ = 0.125 × the window, MONAI's default) is volcam's default. A 3D
convolution sees a window's first and last frames with zero padding on one side, so a frame's
evidence is read best from the window it sits in the middle of; the Gaussian takes each frame's map
mostly from that window and blends smoothly between neighbours (no seams every ``stride`` frames).
``"constant"`` averages every window covering a frame alike. The weights vary along T only: the
windows span the whole frame, so MONAI's in-plane factors would cancel in the normalisation anyway.

A clip shorter than one window is refused with one line rather than padded: frames made up to fill
the window (zeros, or the last frame repeated) would be part of what the model was asked about.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from volcam.engine.clip import ClipPass, ClipResult, channel_first_clip, clip_map
from volcam.engine.core import CamEngine, LayerSpec
from volcam.errors import InputError
from volcam.maps.geometry import like_input, upsample
from volcam.targets import Target, TargetSpec, probabilities

__all__ = [
    "DEFAULT_MODE",
    "WINDOWS_PER_BATCH",
    "explain_windowed",
    "explain_windows",
    "stitch",
    "window_batches",
    "window_starts",
    "window_weights",
]

DEFAULT_MODE = "gaussian"  # how overlapping windows' maps are weighted, when a card does not say (see above)
SIGMA_SCALE = 0.125  # σ of the Gaussian weighting as a fraction of the window (MONAI's default)
WINDOWS_PER_BATCH = 4  # windows per forward


def window_starts(total: int, frames: int, stride: int) -> tuple[int, ...]:
    """The first frame of each window over a clip of ``total`` frames: every ``stride`` frames, the
    last aligned to the clip's end (as MONAI's sliding window). An :class:`InputError` when the clip
    is shorter than a window."""
    from monai.data.utils import dense_patch_slices

    if frames < 1 or not 1 <= stride <= frames:
        raise InputError(f"a window of {frames} frames every {stride}: need 1 <= stride <= frames")
    if total < frames:
        raise InputError(
            f"the clip has {total} frames, fewer than the model's window of {frames}; "
            "volcam does not pad a clip with made-up frames"
        )
    return tuple(int(patch[0].start) for patch in dense_patch_slices((total,), (frames,), (stride,)))


def window_weights(frames: int, mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(frames,)`` MONAI's importance of each frame of a window (``compute_importance_map``)."""
    from monai.data.utils import compute_importance_map

    try:
        return compute_importance_map((frames,), mode=mode, sigma_scale=SIGMA_SCALE, device=device).float()
    except ValueError:  # MONAI's BlendMode names the modes
        raise InputError(f"window mode {mode!r}; use 'gaussian' or 'constant'") from None


def stitch(values: torch.Tensor, starts: Sequence[int], total: int, weights: torch.Tensor) -> torch.Tensor:
    """Per-window values ``(n, frames, ...)`` overlap-added along T into ``(total, ...)``: each frame
    the ``weights``-weighted mean of the windows covering it (MONAI's sliding-window blending)."""
    frames = values.shape[1]
    shape = (-1, *[1] * (values.ndim - 2))
    w = weights.to(values.device, values.dtype)
    out = values.new_zeros((total, *values.shape[2:]))
    count = values.new_zeros((total,))
    for value, start in zip(values, starts, strict=True):
        out[start : start + frames] += value * w.view(shape)
        count[start : start + frames] += w
    return out / count.view(shape)


def window_batches(clip: torch.Tensor, starts: Sequence[int], frames: int, per_batch: int) -> Iterator[torch.Tensor]:
    """The windows of a clip ``(C, T, H, W)`` as batches ``(B, C, frames, H, W)``, ``per_batch`` at a time."""
    for i in range(0, len(starts), per_batch):
        yield torch.stack([clip[:, s : s + frames] for s in starts[i : i + per_batch]])


def explain_windows(
    clip_pass: ClipPass,
    like: torch.Tensor,
    starts: Sequence[int],
    method: str = "gradcam",
    target: TargetSpec | Target = None,
    *,
    mode: str = DEFAULT_MODE,
    frame_interval: float | None = None,
    temporal_sigma_s: float | None = None,
    min_frame_probability: float | None = None,
    labels: Sequence[str] | None = None,
    **options: Any,
) -> ClipResult:
    """A windowed model's explanation of a clip from its pass over the windows (:class:`ClipPass` whose
    batches are :func:`window_batches` of ``like``, the clip the model saw ``(C, T, H, W)``, or a
    ``MetaTensor`` with its shape and affine); the window maps stitched along T and normalised over
    the clip. The other arguments are :func:`explain_windowed`'s."""
    meta = getattr(like, "meta", {}) or {}
    interval = float(frame_interval or meta.get("frame_interval") or 1.0)
    windows = clip_pass.explain(method, target, options)
    total, frames = int(like.shape[1]), windows.size[0]
    weights = window_weights(frames, mode)
    window_probs = probabilities(windows.outputs)
    maps = upsample(windows.maps.float(), windows.size)[:, 0]  # (n, frames, H, W)
    frame_probs = stitch(window_probs.float()[:, None].expand(-1, frames, -1), starts, total, weights)
    scores = stitch(windows.scores.float()[:, None].expand(-1, frames), starts, total, weights)
    cam = stitch(maps, starts, total, weights)[None, None]  # (1, 1, T, H, W)
    cam = clip_map(cam, frame_probs, windows.target_class, interval, temporal_sigma_s, min_frame_probability)
    return ClipResult(
        map=like_input(cam, like),
        method=windows.method,
        layers=windows.layers,
        target_class=windows.target_class,
        frame_probabilities=frame_probs,
        probabilities=window_probs.mean(0),
        frame_scores=scores,
        labels=tuple(labels) if labels is not None else None,
        window_starts=tuple(starts),
        timings=windows.timings,
    )


def explain_windowed(
    model: nn.Module,
    clip: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec | Target = None,
    layer: LayerSpec = "auto",
    *,
    frames: int,
    stride: int,
    mode: str = DEFAULT_MODE,
    windows_per_batch: int = WINDOWS_PER_BATCH,
    device: str | torch.device | None = None,
    labels: Sequence[str] | None = None,
    **options: Any,
) -> ClipResult:
    """Explain a clip ``(C, T, H, W)`` (or ``(1, C, T, H, W)``) with a 3D model over windows ``(C, frames, H, W)``.

    Args:
        model: takes windows ``(B, C, frames, H, W)``.
        frames, stride: the window's length and the step between windows, in frames.
        mode: how overlapping windows' maps are weighted: ``"gaussian"`` or ``"constant"``.
        windows_per_batch: windows per forward.
        options: :func:`~volcam.engine.clip.explain_clip`'s ``frame_interval``, ``temporal_sigma_s``,
            ``min_frame_probability``, and the method's options.

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> result = explain_windowed(net, torch.rand(1, 40, 32, 32), frames=16, stride=8)
        >>> result.map.shape, result.window_starts
        (torch.Size([1, 40, 32, 32]), (0, 8, 16, 24))
    """
    like = channel_first_clip(clip)
    if windows_per_batch < 1:
        raise InputError("windows_per_batch must be at least 1")
    starts = window_starts(int(like.shape[1]), frames, stride)
    plain = like.as_tensor() if hasattr(like, "as_tensor") else like
    spacing = (getattr(like, "meta", {}) or {}).get("spacing")
    with CamEngine(model, layer, device=device, labels=labels) as engine:
        windows = ClipPass(engine, lambda: window_batches(plain, starts, frames, windows_per_batch), spacing)
        return explain_windows(windows, like, starts, method, target, mode=mode, labels=labels, **options)
