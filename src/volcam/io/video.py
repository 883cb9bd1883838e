"""Video files (``.mp4``, ``.avi``, ``.mov``, ...) exported from an ultrasound scanner, via PyAV.

PyAV is an optional dependency (``pip install 'volcam[video]'``): it bundles FFmpeg, which most
volcam users never need. A video file carries no physical calibration, so pixel spacing is 1 mm
unless the caller knows better; the frame interval comes from the stream's frame rate.

Frames are decoded (with FFmpeg's frame threads) and converted by FFmpeg to RGB, each copied once
straight into one uint8 array sized from the container's frame count, frame after frame; the
``(C, T, H, W)`` clip is a view of it. A 10 s, 30 fps, 600×800 H.264 clip is the 432 MB it decodes to,
not a list of frames stacked and then converted to float32 (9.9 s, 3.1 GB before;
``benchmarks/ultrasound.py``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import DependencyError, FileFormatError, first_line
from volcam.io.image import make_clip
from volcam.io.memory import check_fits, empty
from volcam.io.paths import require_regular_file

__all__ = ["load_video"]


_GRAY = ("gray", "gray8", "gray16le", "gray16be")
_UNKNOWN_COUNT = 64  # frames allocated first when the container does not say how many it holds


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DependencyError(
            "reading video files needs PyAV: pip install 'volcam[video]' (or pip install av)"
        ) from None
    return av


def _announced(stream: Any) -> int:
    """Frames the container says the stream holds (its frame count, else duration × rate); 0 if it does not say."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and stream.average_rate:
        return math.ceil(float(stream.duration * stream.time_base * stream.average_rate))
    return 0


def _pixels(frame: Any, layout: str) -> np.ndarray:
    """A decoded frame as ``(H, W, C)`` uint8 (``layout`` "rgb24" or "gray"): a view of FFmpeg's
    converted picture, whose rows are padded to ``line_size`` bytes."""
    plane = frame.reformat(format=layout).planes[0]
    channels = 3 if layout == "rgb24" else 1
    rows = np.frombuffer(plane, np.uint8)[: plane.height * plane.line_size].reshape(plane.height, plane.line_size)
    return rows[:, : plane.width * channels].reshape(plane.height, plane.width, channels)


class _Frames:
    """Frames written one by one into a uint8 ``(T, H, W, C)`` array sized from the container's count,
    grown when the stream holds more frames and cut to what it held when fewer."""

    def __init__(self, path: Path, announced: int) -> None:
        self.path, self.announced = path, announced
        self.data: np.ndarray | None = None
        self.count = 0

    def _allocate(self, frames: int, shape: tuple[int, ...]) -> np.ndarray:
        # the memory check before allocating: a header may claim any count
        check_fits(frames * int(np.prod(shape)), self.path, f"the video ({frames} frames of {shape[1]}×{shape[0]})")
        return empty((frames, *shape), np.uint8)

    def put(self, frame: np.ndarray) -> None:
        """Write the next frame ``(H, W, C)``."""
        if self.data is None:
            self.data = self._allocate(self.announced or _UNKNOWN_COUNT, frame.shape)
        elif self.data.shape[1:] != frame.shape:
            raise FileFormatError(
                f"{self.path}: frame {self.count + 1} is {frame.shape[1]}×{frame.shape[0]}, the first "
                f"{self.data.shape[2]}×{self.data.shape[1]}"
            )
        if self.count == len(self.data):  # the container announced fewer frames than it holds
            grown = self._allocate(self.count + max(self.count // 2, 16), frame.shape)
            grown[: self.count] = self.data
            self.data = grown
        self.data[self.count] = frame
        self.count += 1

    def result(self) -> np.ndarray:
        """``(C, T, H, W)`` uint8 of the frames decoded (a view); a one-line error when there were none."""
        if self.data is None:
            raise FileFormatError(f"{self.path}: the video has no frames")
        frames = self.data[: self.count]
        if self.count < len(self.data) * 7 // 8:  # it announced many more: give the unused memory back
            frames = frames.copy()
        return frames.transpose(3, 0, 1, 2)


def _interval(rate: Any, stamps: list[float]) -> float | None:
    """Seconds between frames: 1 / the average frame rate, else the mean step of the timestamps."""
    if rate:
        return 1.0 / float(rate)
    if len(stamps) > 1:
        return float(np.mean(np.diff(sorted(stamps))))
    return None


def _decode(av: Any, path: Path) -> tuple[np.ndarray, float | None]:
    """All frames of the first video stream → ``(C, T, H, W)`` uint8 and the frame interval (s)."""
    stamps: list[float] = []
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise FileFormatError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a codec FFmpeg has no decoder for (or a damaged header names none)
            raise FileFormatError(f"{path}: its video stream's codec cannot be decoded")
        stream.thread_type = "AUTO"  # frame threads: FFmpeg decodes the next frames while one is copied
        layout = "gray" if stream.codec_context.pix_fmt in _GRAY else "rgb24"
        frames = _Frames(path, _announced(stream))
        for frame in container.decode(stream):
            frames.put(_pixels(frame, layout))
            if frame.pts is not None and frame.time_base is not None:
                stamps.append(float(frame.pts * frame.time_base))
        return frames.result(), _interval(stream.average_rate, stamps)


def load_video(path: str | os.PathLike) -> Any:
    """All frames of the first video stream → ``(3, T, H, W)`` uint8 RGB (1 channel if grey) MetaTensor,
    a view of frame-after-frame memory (each frame ``(H, W, C)``, as PyAV gives it).

    The frame interval (seconds) is 1 / the stream's average frame rate, else the mean spacing of
    the frames' timestamps. The pixels are those PyAV gives with ``to_ndarray(format="rgb24")``.
    """
    av = _av()
    path = Path(path)
    require_regular_file(path)
    try:
        data, interval = _decode(av, path)
    except FileFormatError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise FileFormatError(f"{path}: not a readable video file ({first_line(error)})") from None
    return make_clip(
        data,
        path=path,
        modality="US",
        frame_interval=interval,
        pixel_spacing=None,
        problems=[],
        channel_dim=-1 if data.shape[0] > 1 else float("nan"),
    )
