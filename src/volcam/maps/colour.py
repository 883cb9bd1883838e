"""Maps and images as colours: a grey display range for an image, a map fused over it in RGB.

Pure array functions shared by the pictures (:mod:`volcam.viz.render`) and the DICOM overlay
(:func:`volcam.io.write_dicom`), so both show the same colours.
"""

from __future__ import annotations

import numpy as np

from volcam.errors import InputError
from volcam.maps.windowing import Window, apply_window

__all__ = ["display_range", "fuse"]


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


def fuse(
    gray: np.ndarray, cam: np.ndarray, *, colormap: str = "jet", alpha: float = 0.5, threshold: float = 0.0
) -> np.ndarray:
    """A map coloured over a grey (or RGB) image → ``(*S, 3)`` uint8 RGB.

    Args:
        gray: ``(*S)`` grey or ``(*S, 3)`` RGB, in [0, 1].
        cam: ``(*S)`` in [0, 1].
        alpha: opacity of the colour where the map is 1; it scales with the map value, so weak
            evidence leaves the anatomy visible.
        threshold: map values at or below it are not coloured at all.
    """
    from matplotlib import colormaps

    if gray.shape[: cam.ndim] != cam.shape:
        raise InputError(f"map {cam.shape} and image {gray.shape} differ in shape")
    base = gray if gray.ndim == cam.ndim + 1 else np.repeat(gray[..., None], 3, axis=-1)
    cam = np.clip(cam, 0.0, 1.0)
    colour = colormaps[colormap](cam)[..., :3]
    weight = (alpha * cam * (cam > threshold))[..., None]
    return np.round(255.0 * ((1.0 - weight) * base + weight * colour)).astype(np.uint8)
