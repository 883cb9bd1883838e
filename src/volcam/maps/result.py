"""CamResult: a map and everything needed to say what it explains."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["CamResult"]


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

    @property
    def layer(self) -> str:
        """The target layer (the first one when several were fused)."""
        return self.layers[0]

    @property
    def predicted(self) -> torch.Tensor:
        """``(B,)`` the class the model predicts per sample."""
        from volcam.targets import predicted_classes

        return predicted_classes(self.output)

    def class_names(self) -> list[str]:
        """The explained class of each sample as a label (the index when there are no labels)."""
        return [self.labels[c] if self.labels and c >= 0 else str(c) for c in self.classes.tolist()]

    def __repr__(self) -> str:
        return (
            f"CamResult(method={self.method!r}, layers={self.layers}, map={tuple(self.map.shape)}, "
            f"classes={self.class_names()})"
        )
