"""Image layers as the dock sees them, without Qt or napari: what it reads from a layer, and the lists it offers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from napari_volcam._layers import INFO_KEY

NO_MASK = "none"  # the mask entry meaning "no lesion mask"


class ImageLike(Protocol):
    """What the dock reads from an image layer (a napari ``Image`` layer has all of it)."""

    name: str
    data: Any
    scale: Any
    translate: Any
    metadata: dict
    rgb: bool


@dataclass(eq=False)  # a layer is itself, not its values: the dock keeps a session per layer object
class ScanImage:
    """An image layer without a viewer: ``ScanImage.of(scan_layer(scan))``."""

    name: str
    data: Any
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    metadata: dict
    rgb: bool = False

    @classmethod
    def of(cls, layer_data: tuple) -> ScanImage:
        """From napari layer data ``(data, kwargs, "image")`` as :func:`napari_volcam._layers.scan_layer` makes it."""
        data, kwargs, _ = layer_data
        return cls(
            kwargs["name"], data, tuple(kwargs["scale"]), tuple(kwargs["translate"]), kwargs["metadata"], kwargs["rgb"]
        )


def info(image: ImageLike) -> dict[str, Any]:
    """What volcam noted about the layer when it read or made it (empty for other layers)."""
    return dict(image.metadata.get(INFO_KEY, {}))


def is_clip(image: ImageLike) -> bool:
    """A clip (time, rows, columns): its review never measures across frames."""
    return info(image).get("axes") == "thw"


@dataclass
class LayerLists:
    """The dock's image and mask lists for the viewer's layers, and the entries to select."""

    images: list[str]
    masks: list[str]
    image: str
    mask: str


def layer_lists(layers: Iterable[tuple[str, str, dict]], image: str, mask: str) -> LayerLists:
    """Lists for ``(name, kind, metadata)`` of the viewer's layers (kind: ``"image"``, ``"labels"``, other).

    Maps volcam made are not offered as images; the chosen image and mask stay chosen while they
    exist, else the first image and the first mask (if any) are.
    """
    layers = list(layers)
    images = [n for n, kind, meta in layers if kind == "image" and meta.get(INFO_KEY, {}).get("kind") != "cam"]
    masks = [NO_MASK] + [n for n, kind, _ in layers if kind == "labels"]
    image = image if image in images else (images[0] if images else "")
    mask = mask if mask in masks else masks[min(1, len(masks) - 1)]
    return LayerLists(images, masks, image, mask)


def demo_card(modality: str | None) -> str:
    """The shipped demo model card for a modality (ultrasound → the clip model, else the CT model)."""
    from volcam import sample_data

    try:
        name = sample_data.LUS_CARD if (modality or "").upper() == "US" else sample_data.CT_CARD
        return str(sample_data.file(name))
    except Exception:  # no sample data installed: the field stays empty for the user to fill
        return ""
