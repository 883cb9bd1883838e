"""What the writers accept: a map (``CamResult``, tensor, array) and a source image, as plain arrays.

Writers need three things: the map's voxels on the source grid, the source's geometry, and what
the map explains (method, class, score) for titles and series descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from volcam.errors import InputError

__all__ = ["MapInfo", "image_array", "map_array"]


@dataclass(frozen=True)
class MapInfo:
    """What a map explains, for people: ``None`` where unknown."""

    method: str | None = None
    layer: str | None = None
    label: str | None = None
    score: float | None = None
    probability: float | None = None

    def title(self) -> str:
        """E.g. ``"gradcam · class 'covid' · score 2.31 (p = 0.91)"``."""
        parts = [self.method or "map"]
        if self.label is not None:
            parts.append(f"class '{self.label}'")
        if self.score is not None:
            score = f"score {self.score:.3g}"
            if self.probability is not None:
                score += f" (p = {self.probability:.2f})"
            parts.append(score)
        return " · ".join(parts)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if hasattr(x, "as_tensor"):  # MetaTensor → plain tensor before numpy
            x = x.as_tensor()
        return x.float().numpy()
    return np.asarray(x, dtype=np.float32)


def result_info(result: Any, index: int = 0) -> MapInfo:
    """The :class:`MapInfo` of sample ``index`` of a ``CamResult`` (``None`` gives an empty one)."""
    if result is None:
        return MapInfo()
    label = result.class_names()[index]
    klass = int(result.classes[index])
    probability = None
    if result.probabilities is not None and klass >= 0:
        probability = float(result.probabilities[index, klass])
    return MapInfo(result.method, result.layer, label, float(result.scores[index]), probability)


def map_array(cam: Any, result: Any = None) -> tuple[np.ndarray, MapInfo, Any]:
    """A map as ``(*S)`` float32, what it explains, and its own affine (``None`` if it has none).

    ``cam`` is a ``CamResult`` (one sample), a tensor/array ``(*S)``, ``(1, *S)`` or
    ``(1, 1, *S)``. ``result`` gives the method/class/score when ``cam`` is a bare tensor that
    came from one (e.g. after mapping it back to the source grid).
    """
    if hasattr(cam, "map") and hasattr(cam, "method"):
        result = cam if result is None else result
        cam = cam.map
    if result is not None and len(result.classes) != 1:
        raise InputError(f"the result holds {len(result.classes)} samples; write one at a time (result.map[i])")
    affine = getattr(cam, "affine", None)
    data = _numpy(cam)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (2, 3):
        raise InputError(f"a map of shape {tuple(data.shape)}; expected (*S), (1, *S) or (1, 1, *S) with 2 or 3 axes")
    if not np.all(np.isfinite(data)):
        raise InputError("the map has NaN or infinite values")
    return data, result_info(result), None if affine is None else _numpy(affine).astype(np.float64)


def image_array(image: Any) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """A source image ``(C, *S)`` (MetaTensor from :func:`volcam.load`, tensor or array) → array, affine, meta."""
    affine = getattr(image, "affine", None)
    meta = dict(getattr(image, "meta", {}) or {})
    data = _numpy(image)
    if data.ndim == 5 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (3, 4):
        raise InputError(f"an image of shape {tuple(data.shape)}; expected channel-first (C, *S) with 2 or 3 axes")
    return data, None if affine is None else _numpy(affine).astype(np.float64), meta
