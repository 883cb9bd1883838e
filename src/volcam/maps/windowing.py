"""CT windowing: presets as (width, level) in HU, applied to arrays or as a MONAI transform.

A window maps [level - width/2, level + width/2] HU linearly to [0, 1] and clips outside it: the
grey scale a radiologist reads, and a common normalisation before a CT classifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from volcam.errors import InputError

if TYPE_CHECKING:
    from monai.transforms import ScaleIntensityRange

__all__ = ["WINDOWS", "apply_window", "window_bounds", "window_transform"]

#: (width, level) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
    "soft_tissue": (400.0, 40.0),
}

Window = str | tuple[float, float]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def window_bounds(window: Window) -> tuple[float, float]:
    """``"lung"`` or ``(width, level)`` → (lowest, highest) HU shown."""
    if isinstance(window, str):
        if window.lower() not in WINDOWS:
            raise InputError(f"unknown window {window!r}; presets are {', '.join(WINDOWS)} or (width, level) in HU")
        width, level = WINDOWS[window.lower()]
    else:
        width, level = (float(v) for v in window)
    if width <= 0:
        raise InputError(f"window width must be positive, got {width}")
    return level - width / 2.0, level + width / 2.0


def apply_window(values: ArrayT, window: Window) -> ArrayT:
    """HU (numpy array or torch tensor, any shape) → [0, 1] under ``window``; same type and shape."""
    low, high = window_bounds(window)
    scaled = (values - low) / (high - low)
    if isinstance(scaled, np.ndarray):
        return np.clip(scaled, 0.0, 1.0)
    return scaled.clamp(0.0, 1.0)


def window_transform(window: Window) -> ScaleIntensityRange:
    """The window as MONAI's ``ScaleIntensityRange`` (clipping), for a preprocessing ``Compose``."""
    from monai.transforms import ScaleIntensityRange

    low, high = window_bounds(window)
    return ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
