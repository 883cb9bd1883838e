"""DICOM clips: ultrasound, angiography and other cine loops, as float32 ``(C, T, H, W)`` with their
frame interval (s) and calibrated pixel spacing (mm)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from volcam.io.dicom.headers import frame_count, header_int, header_text, optional_numbers, source_meta
from volcam.io.dicom.pixels import rescale, rescale_of
from volcam.io.dicom.stacks import pixel_spacing
from volcam.io.image import make_clip, warn_problem

if TYPE_CHECKING:
    from monai.data import MetaTensor
    from pydicom.dataset import Dataset

__all__ = ["frame_interval", "is_clip", "load_clip", "ultrasound_spacing"]


_CLIP_MODALITIES = {"US", "IVUS", "XA", "RF", "ES"}
_COLOR = {"RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}


def is_clip(ds: Dataset) -> bool:
    """Whether a file is a clip (ultrasound, angiography, colour, or timed frames) rather than slices."""
    timed = any(k in ds for k in ("FrameTime", "FrameTimeVector", "CineRate"))
    return (
        str(ds.get("Modality", "")) in _CLIP_MODALITIES
        or str(ds.get("PhotometricInterpretation", "")) in _COLOR
        or (timed and "PerFrameFunctionalGroupsSequence" not in ds)
    )


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
    """A clip file's decoded pixels ``(frames?, rows, columns, samples?)`` as pydicom gives them → float32
    ``(C, T, H, W)``: grey in modality units, colour as 0-255, with its frame interval and spacing."""
    frames = frame_count(ds, path)
    samples = header_int(ds, "SamplesPerPixel", path, 1)
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        samples = 3
        if array.max(initial=0) > 255:  # 16-bit palette entries: keep 8-bit video range
            array = array / 257.0
    if frames == 1:
        array = array[None]
    if samples == 1:
        array = array[..., None]
    data = array.transpose(3, 0, 1, 2).astype(np.float32)
    if samples == 1:
        data = rescale(data, *rescale_of(ds, path))
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
        channel_dim=-1 if samples > 1 else float("nan"),
        **source_meta(ds, [path]),
    )
