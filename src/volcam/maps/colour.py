"""Maps and images as colours: a grey display range for an image, a map fused over it in RGB.

Pure array functions shared by the pictures (:mod:`volcam.viz.render`) and the DICOM overlay
(:func:`volcam.io.write_dicom`), so both show the same colours.
"""

from __future__ import annotations

import numpy as np

from volcam.errors import InputError
from volcam.maps.windowing import Window, apply_window

__all__ = ["COLORMAP", "colour_at", "display_range", "fuse"]

#: The colormap a map is shown in (pictures, the DICOM overlay, a segment's display colour).
COLORMAP = "jet"


def display_range(image: np.ndarray, modality: str | None, window: Window | None) -> np.ndarray:
    """Intensities → [0, 1] grey: a CT window (``"soft_tissue"`` by default for CT), else percentiles.

    Non-CT images (MR, ultrasound) have no absolute scale, so 1st-99th percentiles of the whole
    volume or clip are used, the same for every slice.
    """
    if window is None and (modality or "").upper() == "CT":
        window = "soft_tissue"
    if window is not None:
        return apply_window(image.astype(np.float32), window)
    low, high = np.percentile(image, [1.0, 99.0])
    if high <= low:
        high = low + 1.0
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
