"""What values a scan of each modality plausibly holds, and the one check of a scan against them.

A CT's values, rescaled, are Hounsfield units: the 12-bit scale runs from −1024 (air) to 3071, with
padding outside the field of view below it (−2000, −3024, down to int16's −32768) and, in the few
voxels of a metal implant, an extended scale above it. A series whose pixels were stored signed but
marked unsigned (PixelRepresentation 0) reads every negative value as 65536 more: air becomes some
64 000 "HU", and a model trained on HU sees nonsense without a word. So a scan whose values leave the
plausible range in more than a sliver of its voxels is a problem: ``volcam info`` lists it, loading it
(``volcam.load``, ``volcam explain``) warns, and a model card that names the modality warns for a scan
that does not (a NIfTI CT).

MR, ultrasound and the rest have no absolute scale: nothing is checked for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RANGES", "PlausibleValues", "range_problem"]


@dataclass(frozen=True)
class PlausibleValues:
    """A modality's values: its ``unit``, its nominal ``scale`` (for the message) and what a scan may
    hold without a problem: every value in ``[low, high]`` but for at most ``share`` of the voxels."""

    unit: str
    scale: tuple[float, float]
    low: float
    high: float
    share: float


#: The one home of the plausible ranges, by DICOM Modality.
RANGES: dict[str, PlausibleValues] = {
    # low: int16's least, the lowest padding any scanner stores; high: the 12-bit scale's top plus
    # 1024 (beam hardening, contrast), beyond which only an implant's few voxels may lie
    "CT": PlausibleValues(unit="HU", scale=(-1024.0, 3071.0), low=-32768.0, high=4095.0, share=0.01),
}


def range_problem(data: Any, modality: str | None) -> str | None:
    """Why ``data`` (a scan's values in its modality's units, any array or tensor) cannot be values of
    ``modality``; ``None`` when they can or the modality has no range. One pass for the maximum (and
    for floats the minimum); the voxels beyond are counted only when there are any."""
    plausible = RANGES.get(str(modality or "").upper())
    if plausible is None:
        return None
    values = np.asarray(data.numpy() if hasattr(data, "numpy") else data)
    if values.size == 0 or values.dtype.kind not in "iuf":
        return None
    high = float(values.max())
    below = values.dtype.kind == "f" or np.iinfo(values.dtype).min < plausible.low
    low = float(values.min()) if below else plausible.low
    if plausible.low <= low and high <= plausible.high:
        return None
    outside = int(np.count_nonzero(values > plausible.high))
    if below:
        outside += int(np.count_nonzero(values < plausible.low))
    if outside <= plausible.share * values.size:
        return None
    unit, (start, end) = plausible.unit, plausible.scale
    signed = " (signed values stored as unsigned read 65536 too high: see a DICOM's PixelRepresentation)"
    return (
        f"{outside / values.size:.0%} of the voxels lie outside {plausible.low:g}…{plausible.high:g} {unit} "
        f"(values {low:.6g}…{high:.6g}): these are not {modality} values in {unit}, whose scale runs "
        f"{start:g}…{end:g}{signed if high > 32767 - 1024 else ''}"
    )
