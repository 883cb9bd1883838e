"""What the writers accept: a map (``CamResult``, tensor, array) and a source image, as plain arrays.

Writers need three things: the map's voxels on the source grid, the source's geometry, and what
the map explains (method, class, score) for titles and series descriptions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volcam.errors import InputError
from volcam.maps.resampled import ResampledMap, is_resampled
from volcam.maps.result import Explanation, MapInfo

__all__ = ["MapInfo", "image_array", "map_array", "map_voxels"]  # MapInfo lives in maps.result


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if hasattr(x, "as_tensor"):  # MetaTensor → plain tensor before numpy
            x = x.as_tensor()
        return x.float().numpy()
    return np.asarray(x, dtype=np.float32)


def map_array(cam: Any, result: Any = None) -> tuple[np.ndarray, MapInfo, Any]:
    """A map as ``(*S)`` float32, what it explains, and its own affine (``None`` if it has none).

    ``cam`` is any :class:`~volcam.maps.result.Explanation` of one map (a ``CamResult`` of one
    sample, a clip result, a scan explanation), or a tensor/array ``(*S)``, ``(1, *S)`` or
    ``(1, 1, *S)``. ``result`` (an explanation) says what a bare tensor explains (e.g. after it
    was mapped back to the source grid).
    """
    if isinstance(cam, Explanation):
        result = cam if result is None else result
        cam = cam.map
    if result is not None and result.samples != 1:
        raise InputError(f"the result holds {result.samples} samples; write one at a time (result.map[i])")
    affine = getattr(cam, "affine", None)
    data = _numpy(cam)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (2, 3):
        raise InputError(f"a map of shape {tuple(data.shape)}; expected (*S), (1, *S) or (1, 1, *S) with 2 or 3 axes")
    if data.size and not (np.isfinite(data.min()) and np.isfinite(data.max())):  # NaN propagates; no mask array
        raise InputError("the map has NaN or infinite values")
    return (
        data,
        result.describe() if result is not None else MapInfo(),
        None if affine is None else _numpy(affine).astype(np.float64),
    )


def map_voxels(cam: Any, result: Any = None) -> tuple[np.ndarray | ResampledMap, MapInfo, Any]:
    """As :func:`map_array`, but a map still to be resampled to the scan's grid stays so: a
    :class:`~volcam.maps.resampled.ResampledMap` (an explanation's ``placed``), which writers index
    slab by slab like the ``(*S)`` array it stands for. Anything else is :func:`map_array`'s array."""
    # `placed` first: on Python 3.11 an isinstance test against the Explanation protocol reads `map`,
    # which would make the full-size map this function exists to avoid
    placed = getattr(cam, "placed", None)
    if not is_resampled(placed):
        return map_array(cam, result)
    result = cam if result is None else result
    if result.samples != 1:
        raise InputError(f"the result holds {result.samples} samples; write one at a time (result.map[i])")
    return placed, result.describe(), placed.affine.numpy()


def _native(x: Any) -> np.ndarray:
    """A tensor or array as a numpy array in its own dtype: a view of a CPU tensor, no copy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if hasattr(x, "as_tensor"):
            x = x.as_tensor()
        return x.numpy()
    return np.asarray(x)


def image_array(image: Any) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """A source image ``(C, *S)`` (MetaTensor from :func:`volcam.load`, tensor or array) → array, affine, meta.

    The array is the image in its own dtype (an int16 CT stays int16) and, for a CPU tensor, a view:
    a writer that needs only the geometry copies nothing, one that shows the image converts it.
    """
    affine = getattr(image, "affine", None)
    meta = dict(getattr(image, "meta", {}) or {})
    data = _native(image)
    if data.ndim == 5 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (3, 4):
        raise InputError(f"an image of shape {tuple(data.shape)}; expected channel-first (C, *S) with 2 or 3 axes")
    return data, None if affine is None else _numpy(affine).astype(np.float64), meta
