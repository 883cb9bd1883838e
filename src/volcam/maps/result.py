"""Results: a map with its geometry and what it explains, in one protocol every consumer accepts.

Three results exist: :class:`CamResult` (a batch on the network's input grid), the clip result
(:class:`volcam.ClipResult`, frames of one clip) and the scan explanation (:class:`volcam.ScanExplanation`,
one map on the scan's own grid). Each is an :class:`Explanation`: writers, renderers, metrics and
the napari layers ask the protocol, never which class they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["CamResult", "Explanation", "MapInfo", "batch_map"]


@dataclass(frozen=True)
class MapInfo:
    """What a map explains, for people: ``None`` where unknown.

    ``model`` is the model card's name and ``model_sha256`` the SHA-256 of the card file (what a
    derived DICOM object records as its provenance); ``options`` are the method options given, as
    ``(name, value as text)`` pairs.
    """

    method: str | None = None
    layer: str | None = None
    label: str | None = None
    score: float | None = None
    probability: float | None = None
    model: str | None = None
    model_sha256: str | None = None
    options: tuple[tuple[str, str], ...] = ()

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


@runtime_checkable
class Explanation(Protocol):
    """What every result carries.

    Attributes:
        map: the map with its geometry (a ``MetaTensor`` with an affine when the input had one):
            ``(B, 1, *S)`` for a batch, ``(1, *S)`` for one scan or clip.
        method: the method's registry name.
        layers: the target layer(s).
    """

    map: torch.Tensor
    method: str
    layers: tuple[str, ...]

    @property
    def samples(self) -> int:
        """How many maps it holds (a batch's size; 1 for a scan or a clip)."""
        ...

    def describe(self, index: int = 0) -> MapInfo:
        """What map ``index`` explains, for people (titles, DICOM descriptions)."""
        ...

    def decision(self, index: int = 0) -> tuple[int, int, torch.Tensor | None]:
        """(class explained (-1: a custom target), class predicted, class probabilities or None)."""
        ...


def batch_map(explanation: Explanation) -> torch.Tensor:
    """Any result's map as a batch ``(B, 1, *S)``."""
    cam = explanation.map
    return cam if explanation.samples == cam.shape[0] and cam.ndim > 2 and cam.shape[1] == 1 else cam[None]


@dataclass(frozen=True)
class CamResult:
    """One explanation of a batch.

    Attributes:
        map: ``(B, 1, *S)`` on the input grid, in [0, 1], high where the evidence for the target is;
            a MONAI ``MetaTensor`` with the input's affine when the input was one.
        method: the method's registry name.
        layers: the target layer(s) the map was computed at.
        classes: ``(B,)`` the class explained per sample (-1 for a custom target).
        labels: the class names, when the model has them.
        scores: ``(B,)`` the target score (a logit unless the target said otherwise).
        output: the model output, detached: logits ``(B, C)`` for a classifier.
        probabilities: ``(B, num_classes)`` softmax (``[1 - p, p]`` for a single logit), or
            ``None`` when the output is not a classifier's.
        raw: ``(B, 1, *s)`` the first layer's map at feature resolution, before upsampling and
            normalisation (for metrics and for looking at what the layer itself sees).
        timings: wall seconds of the steps (``forward``, ``backward``, ``method``, ``upsample``).
        warnings: one line per map that shows nothing, e.g. all zero for the explained class (its
            ``map`` is then all zero too), for the command line and the viewer to show.
        details: what the method reports about its run, e.g. Score-CAM's ``channels`` masked of
            ``channels_of`` the layer has and perturbation ``forwards``.
    """

    map: torch.Tensor
    method: str
    layers: tuple[str, ...]
    classes: torch.Tensor
    scores: torch.Tensor
    output: torch.Tensor
    probabilities: torch.Tensor | None
    raw: torch.Tensor = field(repr=False)
    labels: tuple[str, ...] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        """The target layer (the first one when several were fused)."""
        return self.layers[0]

    @property
    def predicted(self) -> torch.Tensor:
        """``(B,)`` the class the model predicts per sample."""
        from volcam.targets import predicted_classes

        return predicted_classes(self.output)

    @property
    def samples(self) -> int:
        return int(self.classes.shape[0])

    def describe(self, index: int = 0) -> MapInfo:
        label = self.class_names()[index]
        klass = int(self.classes[index])
        probability = None
        if self.probabilities is not None and klass >= 0:
            probability = float(self.probabilities[index, klass])
        return MapInfo(self.method, self.layer, label, float(self.scores[index]), probability)

    def decision(self, index: int = 0) -> tuple[int, int, torch.Tensor | None]:
        probs = self.probabilities[index] if self.probabilities is not None else None
        return int(self.classes[index]), int(self.predicted[index]), probs

    def class_names(self) -> list[str]:
        """The explained class of each sample as a label (the index when there are no labels)."""
        return [self.labels[c] if self.labels and c >= 0 else str(c) for c in self.classes.tolist()]

    def __repr__(self) -> str:
        return (
            f"CamResult(method={self.method!r}, layers={self.layers}, map={tuple(self.map.shape)}, "
            f"classes={self.class_names()})"
        )
