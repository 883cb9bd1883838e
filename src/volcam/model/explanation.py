"""ScanExplanation: a map of a scan, on its grid or on the network's, and what it explains (an ``Explanation``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from volcam.maps.result import MapInfo

__all__ = ["GRIDS", "ScanExplanation"]

GRIDS = ("scan", "network")  # where a ScanExplanation's map lies


@dataclass(frozen=True)
class ScanExplanation:
    """A map of a scan, and what it explains.

    Attributes:
        placed: the map where it lies: a tensor (see ``map``), or on the scan's grid a
            :class:`~volcam.maps.resampled.ResampledMap` that makes it slab by slab as writers read
            it (the NIfTI's blocks, a video's frames), so no full-size copy exists unless ``map`` is asked.
        map: ``(1, *S)`` in [0, 1] on the scan's grid, a ``MetaTensor`` with the scan's affine; or,
            when ``grid`` is ``"network"``, ``(1, *S')`` on the network input's grid, a ``MetaTensor``
            whose affine places its voxels in the scan's world (the same RAS millimetres as the
            scan's affine): shown through that affine, it overlays the scan without resampling.
            Made from ``placed`` on first use and kept.
        result: the engine's :class:`~volcam.CamResult` (volumes) or :class:`~volcam.ClipResult`
            (clips), on the network's grid.
        prediction: the predicted label.
        target: the label explained.
        probabilities: label → probability (a clip's: mean over frames).
        layers: the target layer(s).
        timings: wall seconds of ``preprocess``, ``explain`` and (on the scan's grid) ``invert``.
        grid: ``"scan"`` or ``"network"``: where ``map`` lies.
        model: the model card's name; ``model_sha256``: the SHA-256 of the card file.
        options: the method options the caller gave (plain values; others by their type's name).
    """

    placed: Any
    result: Any
    method: str
    prediction: str
    target: str
    probabilities: dict[str, float]
    layers: tuple[str, ...]
    timings: dict[str, float]
    grid: str = "scan"
    model: str | None = None
    model_sha256: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # how a network-grid map is carried to the scan's grid, when asked (to_scan); None on the scan's grid
    carry_to_scan: Callable[[], ScanExplanation] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def map(self) -> Any:
        from volcam.maps.resampled import is_resampled

        return self.placed.tensor() if is_resampled(self.placed) else self.placed

    def to_scan(self) -> ScanExplanation:
        """This explanation on the scan's grid: itself when it lies there, else its map carried back
        through the card's inverse transforms (the first call pays that; later calls get the same)."""
        if self.grid == "scan" or self.carry_to_scan is None:
            return self
        return self.carry_to_scan()

    @property
    def samples(self) -> int:
        return 1

    def describe(self, index: int = 0) -> MapInfo:
        own = self.result.describe(index)
        probability = self.probabilities.get(self.target)
        options = tuple(
            (name, f"{value:g}" if isinstance(value, float) else str(value)) for name, value in self.options.items()
        )
        return MapInfo(
            self.method, self.layers[0], self.target, own.score, probability, self.model, self.model_sha256, options
        )

    def decision(self, index: int = 0) -> tuple[int, int, torch.Tensor | None]:
        return self.result.decision(index)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The engine's lines about a map that shows nothing (:attr:`volcam.CamResult.warnings`; a
        clip's result has none)."""
        return tuple(getattr(self.result, "warnings", ()))

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record: prediction, probabilities, method, layer, target, timings and warnings."""
        return {
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "method": self.method,
            "layer": list(self.layers),
            "target": self.target,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }
