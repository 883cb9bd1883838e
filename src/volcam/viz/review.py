"""Reading a map slice by slice: the activation profile along an axis, the top slices, localization.

Pure functions of numpy arrays, for any viewer: the napari plugin steps through ``top_slices`` and
plots ``slice_profile``; a report can print ``localization``.
"""

from __future__ import annotations

import numpy as np

from volcam.metrics.localization import localization  # the one implementation, for a viewer's numbers

__all__ = ["localization", "peak", "slice_profile", "top_slices"]


def slice_profile(cam: np.ndarray, axis: int = 0, statistic: str = "mean") -> np.ndarray:
    """Activation per slice (or frame) along ``axis``: ``"mean"`` or ``"max"`` of the map in each slice.

    Args:
        cam: ``(*S)`` map, non-negative (e.g. in [0, 1]).
        axis: the axis slices are taken along (0: the slider axis of a displayed volume or clip).

    Returns:
        ``(S[axis],)`` float64.
    """
    cam = np.asarray(cam, dtype=np.float64)
    rest = tuple(a for a in range(cam.ndim) if a != axis % cam.ndim)
    if statistic == "mean":
        return cam.mean(axis=rest)
    if statistic == "max":
        return cam.max(axis=rest)
    raise ValueError(f"statistic={statistic!r}; use 'mean' or 'max'")


def top_slices(cam: np.ndarray, axis: int = 0, k: int = 5, statistic: str = "mean") -> list[int]:
    """The ``k`` slice indices along ``axis`` with the most activation, highest first (ties: lower index)."""
    profile = slice_profile(cam, axis, statistic)
    ranked = np.argsort(-profile, kind="stable")
    return [int(i) for i in ranked[: max(0, int(k))]]


def peak(cam: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the map's maximum (the first in C order on a tie)."""
    cam = np.asarray(cam)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(cam)), cam.shape))
