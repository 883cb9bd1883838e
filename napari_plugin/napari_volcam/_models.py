"""Models and scan sessions, without Qt: one model per card, one :class:`volcam.ScanSession` per image layer.

A session keeps its scan's forward, so a change of class or method on the same layer costs a
backward through the head. It is kept per layer *object* while the card and the layer's scan stay
(:func:`napari_volcam._layers.scan_of` gives a new scan when the layer's data, scale or translation
change); a new card or scan closes the old session, and so do new data in the layer (the dock hears
napari's data event) and the layer leaving the viewer.
Loading a model is slow (a worker's job); the GUI thread only ever takes the short lock of the lists.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_volcam._form import ModelChoices


def card_key(card: str) -> str:
    """One key for every spelling of a card's path."""
    return str(Path(card).resolve())


@dataclass(eq=False)
class LayerSession:
    """The session of one image layer: its card, the scan it was made for, and the lesion masks
    already carried onto its network grid (``id(mask)`` → (mask, carried))."""

    card: str
    scan: Any
    session: Any  # volcam.ScanSession
    carried: dict[int, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(eq=False)
class Models:
    """The models of the cards used so far and the session of each image layer; see the module's docstring."""

    models: dict[str, Any] = field(default_factory=dict)  # card_key → volcam.Model
    layers: dict[Any, LayerSession] = field(default_factory=dict)  # image layer → its session
    loading: threading.Lock = field(default_factory=threading.Lock)  # held while a model loads
    lock: threading.Lock = field(default_factory=threading.Lock)  # held for a lookup or an update only

    def model(self, card: str) -> Any:
        """The model of a card, loaded once (slow the first time: for a worker)."""
        import volcam

        key = card_key(card)
        with self.lock:
            found = self.models.get(key)
        if found is not None:  # no wait for another card that is loading
            return found
        with self.loading:
            if key not in self.models:
                model = volcam.load_model(card)
                with self.lock:
                    self.models[key] = model
            return self.models[key]

    def choices(self, card: str) -> ModelChoices:
        """Classes and target layers of the card's model (loads it: for a worker)."""
        return ModelChoices.of(self.model(card))

    def session(self, card: str, image: Any, scan: Any) -> LayerSession:
        """The session of ``image`` with ``card`` for its ``scan`` (for a worker): the kept one while both
        stay, else a new one (the old one closed)."""
        import volcam

        model, key = self.model(card), card_key(card)
        with self.lock:
            old = self.layers.get(image)
            if old is not None and old.card == key and old.scan is scan:
                return old
            new = self.layers[image] = LayerSession(key, scan, volcam.ScanSession(model, scan))
        if old is not None:
            old.session.close()
        return new

    def forget(self, image: Any) -> None:
        """Close the session of ``image`` (its data changed: the next request makes a new one)."""
        with self.lock:
            kept = self.layers.pop(image, None)
        if kept is not None:
            kept.session.close()

    def keep_only(self, images: Iterable[Any]) -> None:
        """Close the sessions of layers not in ``images`` (those the viewer still holds)."""
        present = {id(image) for image in images}
        with self.lock:
            gone = [self.layers.pop(image) for image in list(self.layers) if id(image) not in present]
        for kept in gone:
            kept.session.close()

    def sessions(self) -> list[Any]:
        """The open sessions, one per layer."""
        with self.lock:
            return [kept.session for kept in self.layers.values()]
