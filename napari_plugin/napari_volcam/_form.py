"""The explain form's choices, without Qt. :class:`volcam.workflows.specs.ExplainSpec` is the home of their
defaults and checks: the form starts from the spec's defaults and turns into a spec when a job starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_volcam._images import ImageLike, demo_card, info
from volcam.workflows.specs import ExplainSpec, default

PREDICTED = "predicted"  # the class entry meaning "the model's prediction" (the spec's None)
AUTO = "auto"  # the target-layer entry meaning "the card's layer" (the spec's None)


def entry(value: Any, none: str) -> str:
    """A spec's value as the form shows it: ``none`` for ``None``, a comma list for several."""
    return none if value is None else ",".join(value) if isinstance(value, tuple) else str(value)


def keep(current: str, items: list[str]) -> str:
    """The entry to select in a refreshed list: the current one if it is still there, else the first."""
    return current if current in items[1:] else items[0]


@dataclass
class Form:
    """What the explain panel's fields hold, as it shows them; the defaults are the spec's."""

    card: str = ""
    method: str = field(default_factory=lambda: default(ExplainSpec, "methods")[0])
    target: str = field(default_factory=lambda: entry(default(ExplainSpec, "target"), PREDICTED))
    layer: str = field(default_factory=lambda: entry(default(ExplainSpec, "layer"), AUTO))
    sigma_mm: float = field(default_factory=lambda: float(default(ExplainSpec, "gradient_sigma_mm") or 0.0))

    def spec(self, methods: Sequence[str] | None = None) -> ExplainSpec:
        """The spec the form asks for, with ``methods`` (default: the chosen one); a wrong choice raises
        the spec's one-line :class:`volcam.VolcamError`."""
        return ExplainSpec.of(
            methods=list(methods or [self.method]),
            target=None if self.target in ("", PREDICTED) else self.target,
            layer=None if self.layer in ("", AUTO) else self.layer,
            gradient_sigma_mm=self.sigma_mm or None,  # 0: off
        )

    def card_for(self, image: ImageLike) -> str:
        """The card once ``image`` is chosen: the demo card of its modality, unless the user chose one."""
        card = demo_card(info(image).get("modality"))
        if card and (not self.card or Path(self.card).parent == Path(card).parent):
            self.card = card
        return self.card


@dataclass
class ModelChoices:
    """What a model card offers the form: classes and target layers, each with its default first."""

    classes: list[str]
    layers: list[str]
    layer_tip: str

    @classmethod
    def of(cls, model: Any) -> ModelChoices:
        tip = f"auto: the card's layer ({model.card.layer})"
        return cls([PREDICTED, *model.labels], [AUTO, *model.layer_choices()], tip)


@dataclass
class Display:
    """How maps are drawn: colormap above a threshold, over the scan; ``opacity`` is the map's at 1
    (it fades with the value, so the scan shows through)."""

    colormap: str = "turbo"
    threshold: float = 0.2
    opacity: float = 0.7
