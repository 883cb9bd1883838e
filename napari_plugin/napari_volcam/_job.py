"""The running job, without Qt: what one press of Explain (or Compare) asks, its run in a worker, its results.

:class:`Runner` knows whether a job runs or was cancelled and runs it (:meth:`Runner.run`, in a
worker): the scan and its session first, then one map per method, each with its review numbers,
so that the GUI thread only places what arrives (:func:`map_layer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_volcam._form import Display
from napari_volcam._images import ImageLike, info, is_clip
from napari_volcam._layers import EXPLANATION_KEY, INFO_KEY, RESULT_KEY, SCAN_KEY, map_view, scan_of
from napari_volcam._models import LayerSession, Models
from napari_volcam._review import Onto, Review, map_spacing, review_of, same_grid
from volcam.workflows.specs import ExplainSpec


@dataclass
class Job:
    """One press of Explain (or Compare): what to explain, fixed when it starts."""

    image: ImageLike
    card: str
    spec: ExplainSpec
    mask: Any  # the lesion mask layer's data, or None

    @property
    def methods(self) -> list[str]:
        return list(self.spec.methods)

    @property
    def compare(self) -> bool:
        return len(self.spec.methods) > 1

    @property
    def steps(self) -> int:
        """Progress steps: loading the model and scan, then one per method."""
        return len(self.spec.methods) + 1


@dataclass
class MapResult:
    """One map made by :meth:`Runner.run` in the worker, for the GUI thread to show."""

    method: str
    explanation: Any  # volcam.ScanExplanation
    review: Review
    geometry: dict[str, Any]  # the map's display geometry, as layer metadata holds it
    affine: np.ndarray | None = None  # displayed index → the scan layer's world; None: the scan layer's scale/translate
    spacing: tuple[float, ...] = ()  # of the displayed map, for the review numbers
    onto: Onto = same_grid  # a scan-grid mask onto the map's grid


@dataclass
class MapLayer:
    """A map layer to show: update the layer called ``name`` if it maps ``source`` already, else add it."""

    name: str
    data: np.ndarray
    metadata: dict[str, Any]
    source: str  # the image layer the map is of
    display: Display
    colorbar: bool
    affine: np.ndarray | None = None  # placing ``data`` over the source layer; None: the source's scale/translate


@dataclass
class Shown:
    """What the dock does with one finished map."""

    layer: MapLayer
    status: str
    localization: str
    go_to: int | None  # the slice to open on (the peak), or None in a comparison


@dataclass
class GridCell:
    """One cell of a comparison grid: the scan (``under``, to be added as a copy of the image if ``copy``) and a map."""

    under: str
    copy: bool
    cam: str


def map_layer(job: Job, result: MapResult, display: Display) -> MapLayer:
    """The layer of one result: its name, and metadata the writers and the review read back."""
    image, explanation = job.image, result.explanation
    name = f"{result.method} · {explanation.target}" + (" (compare)" if job.compare else "")
    metadata = {
        INFO_KEY: {
            "kind": "cam",
            "geometry": result.geometry,
            "modality": info(image).get("modality"),
            "source_layer": image.name,
            "grid": getattr(explanation, "grid", "scan"),
            **explanation.summary(),
        },
        SCAN_KEY: image.metadata.get(SCAN_KEY),
        RESULT_KEY: explanation.result,
        EXPLANATION_KEY: explanation,
    }
    data = result.review.data
    return MapLayer(name, data, metadata, image.name, replace(display), not job.compare, result.affine)


def mask_onto(kept: LayerSession, scan: Any, shown: Any) -> Onto:
    """A displayed scan-grid mask → the displayed network grid of ``kept``'s maps (``None`` when it is not
    on the scan's grid); each mask is carried once per session (the card's geometric steps, full resolution)."""
    display_shape = tuple(scan.shape[a] for a in scan.order)

    def onto(given: Any) -> np.ndarray | None:
        import torch

        mask = None if given is None else np.asarray(given)
        if mask is None or tuple(mask.shape) != display_shape:
            return None
        if id(mask) not in kept.carried or kept.carried[id(mask)][0] is not mask:
            source = np.ascontiguousarray(scan.to_source(mask))
            carried = kept.session.mask(torch.from_numpy(source)).cpu().numpy()
            kept.carried[id(mask)] = (mask, np.ascontiguousarray(shown.to_display(carried)))
        return kept.carried[id(mask)][1]

    return onto


@dataclass(eq=False)
class Runner:
    """Whether a job runs or was cancelled, and the run itself (in a worker); the review's pointing game hits
    within ``tolerance_mm``."""

    models: Models
    tolerance_mm: float
    running: bool = False
    cancelled: bool = False

    def begin(self) -> None:
        self.running, self.cancelled = True, False

    def run(self, job: Job) -> Iterator[MapResult | None]:
        """Explain ``job`` (for a worker): ``None`` once the model and scan are ready, then one result per method."""
        from volcam.viz.display import DisplayGeometry, display_geometry

        scan = scan_of(job.image)
        # the scan volcam read comes with its display geometry; one built from the layer's data, in display order
        read = scan is job.image.metadata.get(SCAN_KEY)
        geometry = DisplayGeometry.from_metadata(info(job.image)["geometry"]) if read else display_geometry(scan)
        kept = self.models.session(job.card, job.image, scan)
        scan_spacing = map_spacing(job.image.scale, is_clip(job.image))
        yield None
        spec = job.spec
        for method in spec.methods:
            if self.cancelled:
                return
            # on the network's grid, placed over the scan by an affine: a volume's and a clip's alike (a
            # clip's map on its own grid would be a full-size float copy, 576 MB for a clinical cine)
            explanation = kept.session.explain(
                method, target=spec.target, layer=spec.layer, **spec.method_kwargs(), on="network"
            )
            data, shown, affine = map_view(explanation, geometry)
            onto: Onto = same_grid
            spacing = scan_spacing
            if affine is not None:
                spacing, onto = tuple(float(v) for v in shown.scale), mask_onto(kept, geometry, shown)
            review = review_of(data, onto(job.mask), spacing, self.tolerance_mm)
            yield MapResult(method, explanation, review, shown.as_metadata(), affine, spacing, onto)

    def cancel(self) -> bool:
        """Stop after the step running now; what comes after is dropped. False if nothing runs."""
        if not self.running:
            return False
        self.cancelled = True
        return True

    def finish(self) -> None:
        self.running = False

    def grid(self, job: Job, layer_names: Sequence[str]) -> list[GridCell]:
        """The comparison grid after ``job``: the scan under each map (copies: ``scan ⟨i⟩``); empty if cancelled."""
        if self.cancelled or not job.compare:
            return []
        cams = [n for n in layer_names if n.endswith("(compare)") and n.split(" · ")[0] in job.spec.methods]
        cells = []
        for index, cam in enumerate(cams):
            under = f"{job.image.name} ⟨{index}⟩" if index else job.image.name
            cells.append(GridCell(under, index > 0 and under not in layer_names, cam))
        return cells
