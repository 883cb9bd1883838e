"""Maps and images as colours: a grey display range for an image, a map fused over it in RGB.

Pure array functions shared by the pictures (:mod:`volcam.viz.render`) and the DICOM overlay
(:func:`volcam.io.write_dicom`), so both show the same colours.
"""

from __future__ import annotations

import numpy as np

from volcam.errors import InputError
from volcam.maps.windowing import Window, apply_window

__all__ = ["COLORMAP", "GREY_SAMPLE_SLICES", "colour_at", "display_range", "fuse", "percentile_limits"]

#: The colormap a map is shown in (pictures, the DICOM overlay, a segment's display colour).
COLORMAP = "jet"


#: The grey range of an image without an absolute scale is read from at most this many slices (frames),
#: evenly spaced: the percentiles of a 300-frame cine from 32 frames are the same to the eye, at a tenth
#: of the cost.
GREY_SAMPLE_SLICES = 32


def percentile_limits(values: np.ndarray, axis: int = 0) -> tuple[float, float]:
    """The 1st and 99th percentiles of ``values`` (the grey range of an MR or ultrasound image, which has
    no absolute scale), read from at most :data:`GREY_SAMPLE_SLICES` slices along ``axis``, evenly spaced."""
    count = values.shape[axis]
    if values.ndim > 1 and count > GREY_SAMPLE_SLICES:  # slices: a 1D array is sampled whole
        chosen = np.unique(np.linspace(0, count - 1, GREY_SAMPLE_SLICES).round().astype(int))
        values = np.take(values, chosen, axis=axis)
    low, high = (float(v) for v in np.percentile(values, [1.0, 99.0]))
    return low, (high if high > low else low + 1.0)


def display_range(
    image: np.ndarray, modality: str | None, window: Window | None, limits: tuple[float, float] | None = None
) -> np.ndarray:
    """Intensities → [0, 1] grey: a CT window (``"soft_tissue"`` by default for CT), else percentiles.

    Non-CT images (MR, ultrasound) have no absolute scale, so the 1st-99th percentiles of the whole
    volume or clip (:func:`percentile_limits`, slices along axis 1 of ``(C, *S)``) are used, the same for
    every slice; ``limits`` gives them when they were read already (a few frames shown of a long clip).
    """
    if window is None and (modality or "").upper() == "CT":
        window = "soft_tissue"
    if window is not None:
        return apply_window(image.astype(np.float32), window)
    low, high = limits if limits is not None else percentile_limits(image, axis=1 if image.ndim > 1 else 0)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _lut(colormap: str) -> np.ndarray:
    """The colormap's own table as ``(N, 3)`` float32 RGB in [0, 1], read once per name."""
    from matplotlib import colormaps

    if colormap not in _LUTS:
        cmap = colormaps[colormap]
        _LUTS[colormap] = np.asarray(cmap(np.arange(cmap.N))[:, :3], dtype=np.float32)
    return _LUTS[colormap]


_LUTS: dict[str, np.ndarray] = {}


def colour_at(value: float, colormap: str = COLORMAP) -> tuple[int, int, int]:
    """The 8-bit RGB colour :func:`fuse` gives a map ``value`` in [0, 1] (before blending)."""
    lut = _lut(colormap)
    index = min(int(np.clip(value, 0.0, 1.0) * len(lut)), len(lut) - 1)
    red, green, blue = (round(255.0 * float(c)) for c in lut[index])
    return red, green, blue


def fuse(
    gray: np.ndarray, cam: np.ndarray, *, colormap: str = COLORMAP, alpha: float = 0.5, threshold: float = 0.0
) -> np.ndarray:
    """A map coloured over a grey (or RGB) image → ``(*S, 3)`` uint8 RGB.

    Args:
        gray: ``(*S)`` grey or ``(*S, 3)`` RGB, in [0, 1].
        cam: ``(*S)`` in [0, 1].
        alpha: opacity of the colour where the map is 1; it scales with the map value, so weak
            evidence leaves the anatomy visible.
        threshold: map values at or below it are not coloured at all.

    The colour is looked up in the colormap's table exactly as matplotlib does (index ⌊value·N⌋), in
    float32 and without an RGB copy of a grey image: a 512 × 512 slice costs a few milliseconds.
    """
    if gray.shape[: cam.ndim] != cam.shape:
        raise InputError(f"map {cam.shape} and image {gray.shape} differ in shape")
    lut = _lut(colormap)
    value = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    scaled = value * len(lut)
    index = np.minimum(scaled, len(lut) - 1, out=scaled).astype(np.uint8 if len(lut) <= 256 else np.intp)
    colour = np.take(lut, index, axis=0)
    base = np.asarray(gray, dtype=np.float32)
    if base.ndim == value.ndim:
        base = base[..., None]  # grey: broadcast over R, G, B
    weight = value * np.float32(alpha)
    weight[value <= threshold] = 0.0
    colour -= base
    colour *= weight[..., None]
    out = colour + base
    out *= 255.0
    return np.rint(out, out=out).astype(np.uint8)
