"""ScanExplanation: one map on the scan's own grid and what it explains (an ``Explanation``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from volcam.maps.result import MapInfo

__all__ = ["ScanExplanation"]


@dataclass(frozen=True)
class ScanExplanation:
    """A map in the scan's own geometry, and what it explains.

    Attributes:
        map: ``(1, *S)`` in [0, 1] on the scan's grid, a ``MetaTensor`` with the scan's affine.
        result: the engine's :class:`~volcam.CamResult` (volumes) or :class:`~volcam.ClipResult`
            (clips), on the network's grid.
        prediction: the predicted label.
        target: the label explained.
        probabilities: label → probability (a clip's: mean over frames).
        layers: the target layer(s).
        timings: wall seconds of ``preprocess``, ``explain`` and ``invert``.
    """

    map: Any
    result: Any
    method: str
    prediction: str
    target: str
    probabilities: dict[str, float]
    layers: tuple[str, ...]
    timings: dict[str, float]

    @property
    def samples(self) -> int:
        return 1

    def describe(self, index: int = 0) -> MapInfo:
        own = self.result.describe(index)
        probability = self.probabilities.get(self.target)
        return MapInfo(self.method, self.layers[0], self.target, own.score, probability)

    def decision(self, index: int = 0) -> tuple[int, int, torch.Tensor | None]:
        return self.result.decision(index)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record: prediction, probabilities, method, layer, target and timings."""
        return {
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "method": self.method,
            "layer": list(self.layers),
            "target": self.target,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }
