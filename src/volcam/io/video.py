"""Video files (``.mp4``, ``.avi``, ``.mov``, ...) exported from an ultrasound scanner, via PyAV.

PyAV is an optional dependency (``pip install 'volcam[video]'``): it bundles FFmpeg, which most
volcam users never need. A video file carries no physical calibration, so pixel spacing is 1 mm
unless the caller knows better; the frame interval comes from the stream's frame rate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import DependencyError, FileFormatError, first_line
from volcam.io.image import make_clip
from volcam.io.memory import available_bytes
from volcam.io.paths import gib, require_regular_file

__all__ = ["load_video"]


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DependencyError(
            "reading video files needs PyAV: pip install 'volcam[video]' (or pip install av)"
        ) from None
    return av


def load_video(path: str | os.PathLike) -> Any:
    """All frames of the first video stream → ``(3, T, H, W)`` float32 RGB in [0, 255] (1 channel if gray).

    The frame interval (seconds) is 1 / the stream's average frame rate, else the mean spacing of
    the frames' timestamps.
    """
    av = _av()
    path = Path(path)
    require_regular_file(path)
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    # A stream's header need not say how many frames follow: count the bytes while decoding instead.
    # Each decoded byte becomes 4 (float32) plus the frame kept until the clip is stacked.
    budget, used = available_bytes() or float("inf"), 0
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise FileFormatError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            gray = stream.codec_context.pix_fmt in ("gray", "gray8", "gray16le", "gray16be")
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="gray" if gray else "rgb24"))
                used += frames[-1].nbytes * (1 + np.dtype(np.float32).itemsize)
                if used > budget:
                    raise FileFormatError(
                        f"{path}: the video would need more than the {gib(budget)} of memory available "
                        f"({len(frames)} frames decoded so far)"
                    )
                if frame.pts is not None and frame.time_base is not None:
                    stamps.append(float(frame.pts * frame.time_base))
            rate = stream.average_rate
    except FileFormatError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise FileFormatError(f"{path}: not a readable video file ({first_line(error)})") from None
    if not frames:
        raise FileFormatError(f"{path}: the video has no frames")
    if rate:
        interval: float | None = 1.0 / float(rate)
    elif len(stamps) > 1:
        interval = float(np.mean(np.diff(sorted(stamps))))
    else:
        interval = None
    clip = np.stack(frames)  # (T, H, W[, 3])
    if clip.ndim == 3:
        clip = clip[..., None]
    data = clip.transpose(3, 0, 1, 2).astype(np.float32)
    return make_clip(
        data,
        path=path,
        modality="US",
        frame_interval=interval,
        pixel_spacing=None,
        problems=[],
        channel_dim=-1 if data.shape[0] > 1 else float("nan"),
    )
