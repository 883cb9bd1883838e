"""DICOM clips: ultrasound, angiography and other cine loops, as ``(C, T, H, W)`` in their stored type
(uint8 grey or RGB for most) with their frame interval (s) and calibrated pixel spacing (mm).

The ``(C, T, H, W)`` clip is a view of its frames as the file stores them (frame after frame, each
``(H, W, C)``), as a DICOM series' ``(C, X, Y, Z)`` is of its slices: read from the file straight into
one array, or decoded frame by frame into it (:func:`volcam.io.dicom.pixels.decode_frames`). A 10 s,
30 fps, 600×800 RGB cine (432 MB uncompressed) used to become 1.7 GB of float32 (10.3 s, 3.1 GB
peak); it is now the 432 MB of uint8 it is: ``benchmarks/ultrasound.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from volcam.io.dicom.headers import frame_count, header_text, optional_numbers, source_meta
from volcam.io.dicom.pixels import is_clip, rescale, rescale_of
from volcam.io.dicom.stacks import pixel_spacing
from volcam.io.image import make_clip, warn_problem

if TYPE_CHECKING:
    from monai.data import MetaTensor
    from pydicom.dataset import Dataset

__all__ = ["frame_interval", "is_clip", "load_clip", "ultrasound_spacing"]


def frame_interval(ds: Dataset, problems: list[str] | None = None) -> float | None:
    """Seconds between frames from FrameTime (ms), FrameTimeVector (ms) or CineRate (frames/s).

    A broken value is passed over (and appended to ``problems``) for the next source.
    """
    path = getattr(ds, "filename", None) or "(dataset)"
    frame_time = optional_numbers(ds, "FrameTime", path, problems, count=1)
    if frame_time and frame_time[0] > 0:
        return frame_time[0] / 1000.0
    vector = optional_numbers(ds, "FrameTimeVector", path, problems)
    if vector and len(vector) > 1 and np.mean(vector[1:]) > 0:
        return float(np.mean(vector[1:])) / 1000.0  # the first entry is the first frame's offset, 0
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = optional_numbers(ds, keyword, path, problems, count=1)
        if rate and rate[0] > 0:
            return 1.0 / rate[0]
    return None


def ultrasound_spacing(ds: Dataset, problems: list[str] | None = None) -> tuple[float, float] | None:
    """(row, column) mm per pixel from the largest calibrated ultrasound region, else PixelSpacing."""
    path = getattr(ds, "filename", None) or "(dataset)"
    best = None
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        # Units code 3 is centimetres (PS3.3 C.8.5.5.1.15); other units (s, Hz, dB) are not distances.
        units = [
            optional_numbers(region, k, path, None, count=1)
            for k in ("PhysicalUnitsXDirection", "PhysicalUnitsYDirection")
        ]
        if units != [[3.0], [3.0]]:
            continue
        corners = [
            (optional_numbers(region, k, path, None, count=1) or [0.0])[0]
            for k in ("RegionLocationMinX0", "RegionLocationMaxX1", "RegionLocationMinY0", "RegionLocationMaxY1")
        ]
        area = (corners[1] - corners[0]) * (corners[3] - corners[2])
        dy = optional_numbers(region, "PhysicalDeltaY", path, problems, count=1)
        dx = optional_numbers(region, "PhysicalDeltaX", path, problems, count=1)
        if not dy or not dx or dy[0] == 0 or dx[0] == 0:
            continue
        spacing = (abs(dy[0]) * 10.0, abs(dx[0]) * 10.0)
        if best is None or area > best[0]:
            best = (area, spacing)
    return best[1] if best else pixel_spacing(ds, path, problems)


def load_clip(path: Path, ds: Dataset, array: np.ndarray) -> MetaTensor:
    """A clip file's decoded pixels ``(frames?, rows, columns, samples?)`` as
    :func:`~volcam.io.dicom.pixels.read_pixels` gives them (palette colour applied) → ``(C, T, H, W)``
    in the stored type (colour as it is, 0-255 for 8 bits), grey in modality units (float32 only when
    a rescale is not the identity), with its frame interval and spacing."""
    if frame_count(ds, path) == 1:
        array = array[None]
    if array.ndim == 3:
        array = array[..., None]
    # a view of the frames as read_pixels laid them out (frame after frame): no copy, as for a series
    data = array.transpose(3, 0, 1, 2)
    if data.shape[0] == 1:
        slope, intercept = rescale_of(ds, path)
        if (slope, intercept) != (1.0, 0.0):
            data = rescale(data, slope, intercept)
    found: list[str] = []
    interval = frame_interval(ds, found)
    spacing = ultrasound_spacing(ds, found)
    problems: list[str] = []
    for problem in found:
        warn_problem(problems, f"{path}: {problem}")
    return make_clip(
        data,
        path=path,
        modality=header_text(ds, "Modality", path) or "OT",
        frame_interval=interval,
        pixel_spacing=spacing,
        problems=problems,
        channel_dim=-1 if data.shape[0] > 1 else float("nan"),
        **source_meta(ds, [path]),
    )
