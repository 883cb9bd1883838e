"""A clip explained as an ultrasound reader watches it: a video of the frames with the map fused over them.

Each frame of the video is the clip's frame with its map in the house colours
(:func:`volcam.maps.colour.fuse`, as in the montage) and, under it, the per-frame probability of the
explained class against time (s), the decisive frames (probability above a threshold) shaded and a
marker at the current frame. :func:`write_clip_video` writes it as an MP4 (H.264, yuv420p, the clip's
frame rate) and, for reports, as a smaller looping animated WebP (a GIF where PyAV's FFmpeg has no
WebP encoder).

The curve panel is drawn once with matplotlib (object API, Agg: no pyplot state); per frame only the
marker is stamped into a copy of it. Frames stream into both encoders one at a time (the next one is
rendered in a worker thread meanwhile), so memory holds two frames of the video, never the whole
video. PyAV (``pip install 'volcam[video]'``) is imported when a video is written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import DependencyError, InputError
from volcam.io.atomic import atomic_file
from volcam.maps.arrays import image_array, map_voxels
from volcam.maps.colour import fuse
from volcam.viz.display import display_limits
from volcam.viz.render import PICTURE_ALPHA, PICTURE_THRESHOLD

__all__ = ["FrameCurve", "animation_suffix", "clip_frames", "write_clip_video"]

#: A clip narrower than this (pixels) is shown enlarged by a whole factor, so the curve's text stays legible.
MIN_WIDTH = 480
#: The report animation is at most this wide (pixels) and plays at most this many frames per second
#: (every n-th frame, in real time): a report's size; the MP4 keeps every frame at full resolution.
ANIMATION_WIDTH = 480
ANIMATION_FPS = 10
#: Frames per second of a clip whose frame interval is unknown.
UNKNOWN_FPS = 10
_CURVE, _SHADE, _MARKER = "#1f77b4", "#ff7f0e", (214, 39, 40)


@dataclass(frozen=True)
class FrameCurve:
    """One class's probability per frame, and which frames are decisive.

    Attributes:
        values: ``(T,)`` the probability of class ``label`` in each frame, in [0, 1].
        label: the class's name.
        threshold: frames whose probability is above it are decisive.
        interval: seconds between frames; ``None`` when unknown (the axis then counts frames).
    """

    values: np.ndarray
    label: str
    threshold: float
    interval: float | None = None

    @property
    def decisive(self) -> np.ndarray:
        """``(K,)`` the indices of the decisive frames."""
        return np.flatnonzero(np.asarray(self.values) > self.threshold)

    @property
    def times(self) -> np.ndarray:
        """``(T,)`` each frame's time in s (its index when the interval is unknown)."""
        return np.arange(len(self.values)) * (self.interval or 1.0)

    @property
    def fps(self) -> Fraction:
        """The clip's frame rate (frames per second) as a fraction a container can keep."""
        if not self.interval:
            return Fraction(UNKNOWN_FPS)
        return Fraction(1.0 / self.interval).limit_denominator(1001)  # 1001: NTSC's 30000/1001


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs of sorted frame indices as (first, last) pairs."""
    if not len(indices):
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    starts = np.r_[indices[0], indices[breaks + 1]]
    ends = np.r_[indices[breaks], indices[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass(frozen=True)
class _CurvePanel:
    """The curve drawn once ``(h, w, 3)`` uint8, and where the marker goes at each frame (pixel rows
    and columns: the axes' top and bottom, the curve point per frame)."""

    base: np.ndarray
    columns: np.ndarray  # (T,)
    rows: np.ndarray  # (T,)
    top: int
    bottom: int

    def draw(self, out: np.ndarray, t: int) -> None:
        """The panel with the marker at frame ``t`` written into ``out`` (``base``'s shape)."""
        out[...] = self.base
        height, width = out.shape[:2]
        column, row = int(self.columns[t]), int(self.rows[t])
        out[self.top : self.bottom, max(column - 1, 0) : column + 1] = _MARKER
        radius = max(3, height // 40)
        dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        inside = dy**2 + dx**2 <= radius**2
        rr, cc = dy[inside] + row, dx[inside] + column
        keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        out[rr[keep], cc[keep]] = _MARKER


def _curve_panel(curve: FrameCurve, width: int, height: int, title: str | None) -> _CurvePanel:
    """Draw the probability curve ``width`` × ``height`` pixels: time (s) across, the decisive frames
    shaded, the threshold dashed; and where the marker lies at each frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    # axes placed in pixels (margins for the tick labels and the title), the same for every clip
    left, right, bottom, top = 52 / width, 1 - 14 / width, 34 / height, 1 - 22 / height
    ax = figure.add_axes((left, bottom, right - left, top - bottom))
    times, step = curve.times, curve.interval or 1.0
    for first, last in _runs(curve.decisive):
        ax.axvspan(times[first] - step / 2, times[last] + step / 2, color=_SHADE, alpha=0.3, linewidth=0)
    ax.axhline(curve.threshold, color="0.5", linestyle="--", linewidth=0.8)
    ax.plot(times, curve.values, color=_CURVE, linewidth=1.2)
    ax.set_xlim(times[0] - step / 2, times[-1] + step / 2)
    ax.set_ylim(-0.04, 1.04)  # a curve at 0 or 1 stays visible inside the frame
    ax.set_yticks([0.0, 0.5, 1.0])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("time (s)" if curve.interval else "frame", fontsize=8, labelpad=1)
    ax.set_ylabel(f"P({curve.label})", fontsize=8)
    shaded = f"shaded: decisive frames, P > {curve.threshold:g}"
    figure.text(0.01, 0.99, f"{title} · {shaded}" if title else shaded, fontsize=7, va="top")
    canvas.draw()
    base = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    points = ax.transData.transform(np.column_stack([times, np.clip(curve.values, 0.0, 1.0)]))
    box = ax.bbox  # display pixels, origin bottom left; rows count from the top
    return _CurvePanel(
        base=base,
        columns=np.clip(np.rint(points[:, 0]), 0, width - 1).astype(int),
        rows=np.clip(np.rint(height - points[:, 1]), 0, height - 1).astype(int),
        top=round(height - box.y1),
        bottom=round(height - box.y0),
    )


def _grey(data: np.ndarray, modality: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function frame ``(C, H, W)`` → ``(H, W)`` grey or ``(H, W, 3)`` RGB in [0, 1]: the clip's 1st-99th
    percentiles (:func:`volcam.maps.colour.percentile_limits`) mapped to black and white, as the montage shows
    it; 8-bit frames through a 256-entry table (one lookup per pixel)."""
    low, high = (np.float64(v) for v in display_limits(np.moveaxis(data, 1, 0), modality))  # frames first
    table = None
    if data.dtype == np.uint8:
        table = np.clip((np.arange(256, dtype=np.uint8) - low) / (high - low), 0.0, 1.0).astype(np.float32)

    def grey(frame: np.ndarray) -> np.ndarray:
        # RGB as it is, else the first channel as grey (as the montage shows a clip)
        frame = np.moveaxis(frame, 0, -1) if frame.shape[0] == 3 else frame[0]
        if table is not None:
            return np.take(table, frame)
        return np.clip((frame - low) / (high - low), 0.0, 1.0).astype(np.float32)

    return grey


@dataclass(frozen=True)
class _Layout:
    """The video's frame: the clip's picture enlarged ``scale`` times at the top, the curve panel under
    it; both sides even (yuv420p halves the colour resolution)."""

    scale: int
    picture: tuple[int, int]  # rows, columns
    size: tuple[int, int]  # the whole frame: rows, columns

    @classmethod
    def of(cls, rows: int, columns: int) -> _Layout:
        scale = max(1, math.ceil(MIN_WIDTH / columns))
        picture = (rows * scale, columns * scale)
        width = picture[1] + picture[1] % 2
        panel = min(220, max(120, round(0.25 * width)))
        panel += (picture[0] + panel) % 2
        return cls(scale, picture, (picture[0] + panel, width))


class _Renderer:
    """Draws the video's frames of one explained clip: the checks, the layout, the grey range and the
    curve panel once; then each frame on demand."""

    def __init__(self, image: Any, cam: Any, curve: FrameCurve, title: str | None) -> None:
        data, _, meta = image_array(image)
        values, _, _ = map_voxels(cam)  # a map still to be resampled gives each frame as it is drawn
        if data.ndim != 4 or tuple(values.shape) != tuple(data.shape[1:]):
            raise InputError(f"a map {tuple(values.shape)} on a clip (C, T, H, W) {tuple(data.shape)}: not its grid")
        if len(curve.values) != data.shape[1]:
            raise InputError(f"a curve of {len(curve.values)} frames for a clip of {data.shape[1]}")
        self.data, self.values, self.frames = data, values, data.shape[1]
        self.layout = _Layout.of(*data.shape[2:])
        self.grey = _grey(data, meta.get("modality"))
        rows, columns = self.layout.size
        self.panel = _curve_panel(curve, columns, rows - self.layout.picture[0], title)

    def buffer(self) -> np.ndarray:
        """A frame to render into: ``(rows, columns, 3)`` uint8."""
        return np.zeros((*self.layout.size, 3), dtype=np.uint8)

    def render(self, t: int, out: np.ndarray) -> np.ndarray:
        """Frame ``t`` into ``out`` (from :meth:`buffer`): the fused frame over the curve with its marker."""
        fused = fuse(self.grey(self.data[:, t]), self.values[t], alpha=PICTURE_ALPHA, threshold=PICTURE_THRESHOLD)
        scale = self.layout.scale
        if scale > 1:  # whole-pixel enlargement: the clip's pixels stay sharp
            fused = fused.repeat(scale, axis=0).repeat(scale, axis=1)
        rows, columns = self.layout.picture
        out[:rows, :columns] = fused
        self.panel.draw(out[rows:], t)
        return out


def clip_frames(image: Any, cam: Any, curve: FrameCurve, *, title: str | None = None) -> Iterator[np.ndarray]:
    """The video's frames, one at a time: ``(rows, columns, 3)`` uint8 RGB, the fused frame over the curve.

    Args:
        image: the clip ``(C, T, H, W)`` (grey or RGB) as :func:`volcam.load` returns it.
        cam: its map on the same grid, ``(1, T, H, W)`` or ``(T, H, W)`` in [0, 1] (an explanation too).
        curve: the explained class's probability per frame.
        title: a line over the curve (model, method, class).

    The same buffer is yielded each time (the next frame overwrites it): copy a frame to keep it.
    """
    renderer = _Renderer(image, cam, curve, title)
    out = renderer.buffer()
    for t in range(renderer.frames):
        yield renderer.render(t, out)


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DependencyError(
            "writing a clip's video needs PyAV: pip install 'volcam[video]' (or pip install av)"
        ) from None
    return av


def animation_suffix() -> str:
    """The report animation's file suffix: ``.webp`` where PyAV's FFmpeg encodes animated WebP, else ``.gif``."""
    return ".webp" if "libwebp_anim" in _av().codecs_available else ".gif"


class _Encoder:
    """One output of the video: a PyAV container of ``kind`` (mp4, webp, gif) with one video stream."""

    def __init__(self, path: Path, kind: str, fps: Fraction, size: tuple[int, int]) -> None:
        av = _av()
        options = {} if kind == "mp4" else {"loop": "0"}  # the report animation loops forever
        self.container = av.open(os.fspath(path), "w", format=kind, options=options)
        if kind == "mp4":
            codec = "libx264" if "libx264" in av.codecs_available else "h264"
            stream = self.container.add_stream(codec, rate=fps)
            stream.pix_fmt = "yuv420p"  # what every browser and player decodes
            if codec == "libx264":
                # near-transparent quality at a fast preset; the colour matrix tagged as the BT.601 that
                # FFmpeg converts RGB with, so players do not assume BT.709 for HD sizes
                stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "colormatrix=smpte170m"}
        elif kind == "webp":
            stream = self.container.add_stream("libwebp_anim", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.options = {"quality": "75", "compression_level": "1"}  # level 1: twice as fast as 4
        else:
            stream = self.container.add_stream("gif", rate=fps)
            stream.pix_fmt = "rgb8"
        stream.height, stream.width = size
        self.stream, self.size = stream, size

    def add(self, frame: Any) -> None:
        """Encode one PyAV ``VideoFrame`` (any size: resized to the stream's)."""
        rows, columns = self.size
        if (frame.height, frame.width) != self.size:
            frame = frame.reformat(width=columns, height=rows, format=self.stream.pix_fmt, interpolation="AREA")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def flush(self) -> None:
        """Encode the frames the encoder holds back (the container is closed apart)."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def _animation(size: tuple[int, int], fps: Fraction) -> tuple[tuple[int, int], int]:
    """The report animation's size (at most :data:`ANIMATION_WIDTH` wide, the aspect kept, both sides
    even) and its frame step (every n-th frame, so it plays at most :data:`ANIMATION_FPS`)."""
    rows, columns = size
    if columns > ANIMATION_WIDTH:
        rows, columns = 2 * round(rows * ANIMATION_WIDTH / columns / 2), ANIMATION_WIDTH
    return (rows, columns), max(1, math.ceil(fps / ANIMATION_FPS))


def write_clip_video(
    image: Any,
    cam: Any,
    curve: FrameCurve,
    stem: str | os.PathLike,
    *,
    title: str | None = None,
    overwrite: bool = True,
) -> dict[str, Path]:
    """Write the clip with its map and probability curve as ``<stem>.mp4`` and a report animation.

    Args:
        image: the clip ``(C, T, H, W)``; cam: its map ``(1, T, H, W)`` in [0, 1] (see :func:`clip_frames`).
        curve: the explained class's probability per frame; its interval sets the frame rate.
        stem: the files' path without suffix: ``out/gradcam`` → ``out/gradcam.mp4``, ``out/gradcam.webp``.
        title: a line over the curve.

    The MP4 has every frame at full size and the clip's frame rate; the animation is smaller and plays
    every n-th frame at most 10 frames per second, in real time. Both files appear whole
    (:func:`volcam.io.atomic.atomic_file`) or not at all. Returns ``{"video": <stem>.mp4, "animation":
    <stem>.webp or .gif}``; a :class:`DependencyError` without PyAV.
    """
    av = _av()
    stem = Path(stem)
    paths = {"video": stem.with_name(stem.name + ".mp4"), "animation": stem.with_name(stem.name + animation_suffix())}
    renderer = _Renderer(image, cam, curve, title)
    size = renderer.layout.size
    small, step = _animation(size, curve.fps)
    with ExitStack() as stack:
        encoders = []
        for path, rate, shape in ((paths["video"], curve.fps, size), (paths["animation"], curve.fps / step, small)):
            temporary = stack.enter_context(atomic_file(path, overwrite=overwrite))
            encoders.append(_Encoder(temporary, path.suffix[1:], rate, shape))
            stack.callback(encoders[-1].container.close)  # closed before atomic_file renames (or removes) it
        mp4, animation = encoders
        for t, frame in enumerate(_rendered_ahead(renderer, stack)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")  # a copy: the buffer may be reused
            mp4.add(picture)
            if t % step == 0:
                animation.add(picture)
        for encoder in encoders:
            encoder.flush()
    return paths


def _rendered_ahead(renderer: _Renderer, stack: ExitStack) -> Iterator[np.ndarray]:
    """The frames in order, each rendered in a worker thread while the previous one is encoded (numpy and
    the encoders release the GIL); two buffers take turns, so a yielded frame is valid until the next."""
    from concurrent.futures import ThreadPoolExecutor

    pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="volcam-video"))
    buffers = (renderer.buffer(), renderer.buffer())
    pending = pool.submit(renderer.render, 0, buffers[0])
    for t in range(renderer.frames):
        frame = pending.result()
        if t + 1 < renderer.frames:
            pending = pool.submit(renderer.render, t + 1, buffers[(t + 1) % 2])
        yield frame
