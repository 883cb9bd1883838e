"""The explain dock's state and decisions, without Qt: tested without a viewer.

:class:`DockController` holds what the dock is about (the scan, the model card, the method(s), the
class and target layer, what is running, the map under review) and answers the Qt panels in
:mod:`napari_volcam._qt` with plain values: which layer to add or update with which data and
metadata (:class:`MapLayer`), the status line, the review numbers (:class:`Review`), the slice to
go to, the grid of a comparison. The panels only build widgets, forward what the user does to it
and show what it returns.

What may take a while (:meth:`DockController.choices` loads a model, :meth:`DockController.run`
explains, :meth:`DockController.localize` recomputes the numbers, :meth:`DockController.open_url`
retrieves a series from a PACS) is meant for a worker thread;
everything else is quick and runs on the GUI thread. The controller imports no Qt and no napari:
an image is anything with a layer's ``name``, ``data``, ``scale``, ``translate``, ``metadata`` and
``rgb`` (a napari ``Image`` layer, or :class:`ScanImage`).

Maps of volumes stay on the network's grid (``ScanSession.explain(..., on="network")``) and are
shown through an affine that places them on the scan (:func:`napari_volcam._layers.map_view`): a
change of class or method costs a backward through the head and nothing at the scan's resolution.
The review numbers are computed on that grid too; a lesion mask is carried onto it once per mask.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_volcam._layers import EXPLANATION_KEY, INFO_KEY, RESULT_KEY, SCAN_KEY, map_view, scan_layer, scan_of
from volcam.defaults import TOLERANCE_MM

PREDICTED = "predicted"  # the class entry meaning "the model's prediction"
AUTO = "auto"  # the target-layer entry meaning "the card's layer"
NO_MASK = "none"
TOP_K = 5  # top slices the review steps through


class ImageLike(Protocol):
    """What the controller reads from an image layer (a napari ``Image`` layer has all of it)."""

    name: str
    data: Any
    scale: Any
    translate: Any
    metadata: dict
    rgb: bool


@dataclass
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


def demo_card(modality: str | None) -> str:
    """The shipped demo model card for a modality (ultrasound → the clip model, else the CT model)."""
    from volcam import sample_data

    try:
        name = sample_data.LUS_CARD if (modality or "").upper() == "US" else sample_data.CT_CARD
        return str(sample_data.file(name))
    except Exception:  # no sample data installed: the field stays empty for the user to fill
        return ""


def error_text(error: BaseException) -> str:
    """One line for a person (:func:`volcam.errors.error_line`)."""
    from volcam.errors import error_line

    return error_line(error, limit=2000)


def map_spacing(scale: Sequence[float], clip: bool) -> tuple[float, ...]:
    """Distances for localization: mm in plane; on a clip never across frames (:mod:`volcam.metrics.localization`)."""
    from volcam.metrics.localization import within_frames

    spacing = tuple(float(v) for v in scale)
    return within_frames(spacing) if clip else spacing


def _same_grid(mask: np.ndarray | None) -> np.ndarray | None:
    """A mask for a map on the scan's own grid: as it is."""
    return mask


@dataclass
class Review:
    """What the review panel shows for one map, computed off the GUI thread."""

    data: np.ndarray  # the map in display order, as the layer holds it
    profile: np.ndarray  # mean activation per slice (frame) along the slider axis
    top: list[int]  # the slices with the most activation, highest first
    localization: dict[str, Any] | None  # against the lesion mask, when one is chosen and fits


def review_of(data: np.ndarray, mask: np.ndarray | None, spacing: Sequence[float]) -> Review:
    """Profile, top slices and localization of a displayed map (:mod:`volcam.viz.review`)."""
    from volcam.viz.review import localization, slice_profile, top_slices

    numbers = None
    if mask is not None and mask.shape == data.shape and mask.any():
        numbers = localization(data, mask, spacing, tolerance_mm=TOLERANCE_MM)
    return Review(data, slice_profile(data, axis=0), top_slices(data, axis=0, k=TOP_K), numbers)


@dataclass
class ModelChoices:
    """What a model card offers the form: classes and target layers, each with its default first."""

    classes: list[str]
    layers: list[str]
    layer_tip: str


@dataclass
class LayerLists:
    """The dock's image and mask lists for the viewer's layers, and the entries to select."""

    images: list[str]
    masks: list[str]
    image: str
    mask: str


@dataclass
class Display:
    """How maps are drawn: colormap above a threshold, over the scan; ``opacity`` is the map's at 1
    (it fades with the value, so the scan shows through)."""

    colormap: str = "turbo"
    threshold: float = 0.2
    opacity: float = 0.7


@dataclass
class Job:
    """One press of Explain (or Compare): what to explain, fixed when it starts."""

    image: ImageLike
    card: str
    methods: list[str]
    settings: dict[str, Any]
    mask: np.ndarray | None
    spacing: tuple[float, ...]

    @property
    def compare(self) -> bool:
        return len(self.methods) > 1

    @property
    def steps(self) -> int:
        """Progress steps: loading the model and scan, then one per method."""
        return len(self.methods) + 1


@dataclass
class MapResult:
    """One map made by :meth:`DockController.run` in the worker, handed to :meth:`DockController.accept`."""

    method: str
    explanation: Any  # volcam.ScanExplanation
    review: Review
    geometry: dict[str, Any]  # the map's display geometry, as layer metadata holds it
    affine: np.ndarray | None = None  # displayed index → the scan layer's world; None: the scan layer's scale/translate
    spacing: tuple[float, ...] = ()  # of the displayed map, for the review numbers
    onto: Callable[[np.ndarray | None], np.ndarray | None] | None = None  # a scan-grid mask onto the map's grid


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
class ProfileView:
    """The profile plot: activation per slice, its axis label and the slice shown now."""

    profile: np.ndarray
    label: str
    current: int | None


@dataclass
class GridCell:
    """One cell of a comparison grid: the scan (``under``, to be added as a copy of the image if ``copy``) and a map."""

    under: str
    copy: bool
    cam: str


@dataclass(eq=False)
class DockController:
    """The explain dock's state; see the module's docstring."""

    card: str = ""
    method: str = "gradcam"
    target: str = PREDICTED
    layer: str = AUTO
    sigma_mm: float = 0.0
    display: Display = field(default_factory=Display)
    mask_name: str = NO_MASK
    mask: np.ndarray | None = None
    running: bool = False
    cancelled: bool = False
    status: str = ""
    last_error: str = ""
    review: Review | None = None
    last_explanation: Any = None
    map_scale: tuple[float, ...] = ()
    map_translate: tuple[float, ...] = ()
    map_axes: str = "zyx"
    _onto: Callable[[np.ndarray | None], np.ndarray | None] | None = None  # the mask onto the reviewed map's grid
    _top_at: int = -1
    _models: dict[str, Any] = field(default_factory=dict)  # card path → Model
    _sessions: dict[tuple[str, int], Any] = field(default_factory=dict)  # (card, id(scan)) → ScanSession
    _carried: dict[int, dict] = field(default_factory=dict)  # id(session) → masks carried onto its grid
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @staticmethod
    def methods() -> list[str]:
        """The CAM methods volcam knows, in its registry's order."""
        import volcam

        return [info.name for info in volcam.methods()]

    # -- choices ----------------------------------------------------------------------------------
    def layer_lists(self, layers: Iterable[tuple[str, str, dict]], image: str, mask: str) -> LayerLists:
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

    def card_for(self, image: ImageLike) -> str:
        """The card to show once ``image`` is chosen: the demo card of its modality, unless the user chose one."""
        card = demo_card(image.metadata.get(INFO_KEY, {}).get("modality"))
        if card and (not self.card or Path(self.card).parent == Path(card).parent):
            self.card = card
        return self.card

    def model(self, card: str | None = None) -> Any:
        """The model of a card, loaded once (slow the first time: for a worker)."""
        import volcam

        key = str(Path(card or self.card).resolve())
        with self._lock:
            if key not in self._models:
                self._models[key] = volcam.load_model(card or self.card)
            return self._models[key]

    def choices(self, card: str | None = None) -> ModelChoices:
        """Classes and target layers of the card's model (loads it: for a worker)."""
        model = self.model(card)
        return ModelChoices(
            [PREDICTED, *model.labels], [AUTO, *model.layer_choices()], f"auto: the card's layer ({model.card.layer})"
        )

    @staticmethod
    def keep(current: str, items: list[str]) -> str:
        """The entry to select in a refreshed list: the current one if it is still there, else the first."""
        return current if current in items[1:] else items[0]

    def session(self, card: str, scan: Any) -> Any:
        """The :class:`volcam.ScanSession` of (card, scan); one scan per model is kept."""
        import volcam

        model = self.model(card)
        key = (str(Path(card).resolve()), id(scan))
        with self._lock:
            if key not in self._sessions:
                for old in [k for k in self._sessions if k[0] == key[0]]:
                    closed = self._sessions.pop(old)
                    self._carried.pop(id(closed), None)
                    closed.close()
                self._sessions[key] = volcam.ScanSession(model, scan)
            return self._sessions[key]

    @property
    def sessions(self) -> list[Any]:
        return list(self._sessions.values())

    def settings(self) -> dict[str, Any]:
        """What the form asks for, as :meth:`volcam.ScanSession.explain` arguments."""
        options: dict[str, Any] = {}
        if self.sigma_mm > 0:
            options["gradient_sigma_mm"] = float(self.sigma_mm)
        return {
            "target": None if self.target in ("", PREDICTED) else self.target,
            "layer": None if self.layer in ("", AUTO) else self.layer,
            **options,
        }

    def set_mask(self, name: str, data: Any) -> None:
        """The lesion mask chosen for the localization numbers (``None`` data: no mask)."""
        self.mask_name = name or NO_MASK
        self.mask = None if data is None or self.mask_name == NO_MASK else np.asarray(data)

    # -- opening from a PACS ----------------------------------------------------------------------
    def open_url(self, url: str) -> Generator[str, None, tuple]:
        """Retrieve the series at a DICOMweb address (for a worker): yields a status line per instance
        received, returns the scan's image layer data ``(data, kwargs, "image")``.

        Credentials come from the environment (``VOLCAM_DICOMWEB_TOKEN``, or ``VOLCAM_DICOMWEB_USER`` and
        ``VOLCAM_DICOMWEB_PASSWORD``); stopping the generator early removes what was received.
        """
        from volcam.io.dicom.web import load_url_steps

        steps = load_url_steps(url.strip())
        try:
            while True:
                try:
                    received, expected = next(steps)
                except StopIteration as done:
                    self.status = "opened from the PACS"
                    return scan_layer(done.value)
                of = f" of {expected}" if expected is not None else ""
                self.status = f"retrieving from the PACS: {received}{of} instance(s) …"
                yield self.status
        finally:
            steps.close()

    # -- running ----------------------------------------------------------------------------------
    def start(self, image: ImageLike | None, methods: list[str] | None = None) -> Job | None:
        """A job for ``image`` with ``methods`` (default: the chosen method), or ``None`` and :attr:`last_error`."""
        card = self.card.strip()
        if image is None or not card:
            self.fail("choose an image layer and a model card first")
            return None
        if self.running:
            self.fail("an explanation is running; wait for it or cancel it")
            return None
        methods = list(methods or [self.method])
        clip = image.metadata.get(INFO_KEY, {}).get("axes") == "thw"
        job = Job(image, card, methods, self.settings(), self.mask, map_spacing(image.scale, clip))
        self.running, self.cancelled, self.last_error = True, False, ""
        self.status = f"explaining with {', '.join(methods)} …"
        return job

    def start_comparison(self, image: ImageLike | None, methods: list[str]) -> Job | None:
        """A job comparing two or more methods side by side, or ``None`` and :attr:`last_error`."""
        if len(methods) < 2:
            self.fail("select two or more methods to compare")
            return None
        return self.start(image, methods)

    def run(self, job: Job) -> Iterator[MapResult | None]:
        """Explain ``job`` (for a worker): ``None`` once the model and scan are ready, then one result per method."""
        from volcam.viz.display import DisplayGeometry, display_geometry

        info = job.image.metadata.get(INFO_KEY, {})
        scan = scan_of(job.image)
        # a layer volcam read knows its geometry; a plain one was rebuilt in the display order
        geometry = DisplayGeometry.from_metadata(info["geometry"]) if "geometry" in info else display_geometry(scan)
        session = self.session(job.card, scan)
        yield None
        volume = geometry.axes == "zyx"
        for method in job.methods:
            if self.cancelled:
                return
            explanation = session.explain(method, on="network" if volume else "scan", **job.settings)
            data, shown, affine = map_view(explanation, geometry)
            onto: Callable[[np.ndarray | None], np.ndarray | None]
            if affine is None:
                spacing, onto = job.spacing, _same_grid
            else:
                spacing, onto = tuple(float(v) for v in shown.scale), self._mask_onto(session, geometry, shown)
            review = review_of(data, onto(job.mask), spacing)
            yield MapResult(method, explanation, review, shown.as_metadata(), affine, spacing, onto)

    def _mask_onto(self, session: Any, scan: Any, shown: Any) -> Callable[[np.ndarray | None], np.ndarray | None]:
        """A displayed scan-grid mask → the displayed network grid of ``session``'s maps (``None`` when it
        is not on the scan's grid); each mask is carried once (the card's geometric steps, full resolution)."""
        import torch

        display_shape = tuple(scan.shape[a] for a in scan.order)
        kept: dict[int, tuple[np.ndarray, np.ndarray]] = self._carried.setdefault(id(session), {})

        def onto(mask: np.ndarray | None) -> np.ndarray | None:
            if mask is None or tuple(mask.shape) != display_shape:
                return None
            if id(mask) not in kept or kept[id(mask)][0] is not mask:
                source = np.ascontiguousarray(scan.to_source(mask))
                carried = session.mask(torch.from_numpy(source)).cpu().numpy()
                kept[id(mask)] = (mask, np.ascontiguousarray(shown.to_display(carried)))
            return kept[id(mask)][1]

        return onto

    def accept(self, job: Job, result: MapResult | None) -> Shown | None:
        """What to show for one result of :meth:`run` (``None``: nothing, e.g. after a cancel)."""
        if result is None or self.cancelled:
            return None
        image, explanation = job.image, result.explanation
        info = image.metadata.get(INFO_KEY, {})
        name = f"{result.method} · {explanation.target}" + (" (compare)" if job.compare else "")
        metadata = {
            INFO_KEY: {
                "kind": "cam",
                "geometry": result.geometry,
                "modality": info.get("modality"),
                "source_layer": image.name,
                "grid": getattr(explanation, "grid", "scan"),
                **explanation.summary(),
            },
            SCAN_KEY: image.metadata.get(SCAN_KEY),
            RESULT_KEY: explanation.result,
            EXPLANATION_KEY: explanation,
        }
        display = replace(self.display)
        layer = MapLayer(
            name, result.review.data, metadata, image.name, display, colorbar=not job.compare, affine=result.affine
        )
        probabilities = ", ".join(f"{k} {v:.3f}" for k, v in explanation.probabilities.items())
        seconds = sum(explanation.timings.values())
        self.status = (
            f"<b>prediction: {explanation.prediction}</b> ({probabilities})<br>"
            f"{result.method} for class '{explanation.target}' at {', '.join(explanation.layers)} in {seconds:.2f} s"
        )
        for line in explanation.warnings:  # a map that shows nothing says so (an all-zero map looks like no map)
            self.status += f"<br><span style='color:#e9a23b'>warning: {html.escape(line)}</span>"
        self.review, self.last_explanation, self._top_at = result.review, explanation, -1
        if result.affine is None:
            self.map_scale = tuple(float(v) for v in image.scale)
            self.map_translate = tuple(float(v) for v in image.translate)
        else:  # the network grid in the scan layer's world: its voxel size and first voxel along each axis
            n = result.affine.shape[0] - 1
            self.map_scale = tuple(float(v) for v in np.diag(result.affine)[:n])
            self.map_translate = tuple(float(v) for v in result.affine[:n, n])
        self._onto = result.onto
        self.map_axes = result.geometry.get("axes", "zyx")
        go_to = None if job.compare else self.peak()
        return Shown(layer, self.status, self.localization_text(), go_to)

    def fail(self, error: BaseException | str) -> str:
        """Record a failure; returns its one line (also in :attr:`last_error`)."""
        self.last_error = error if isinstance(error, str) else error_text(error)
        self.status = f"<span style='color:#e55'>error: {self.last_error}</span>"
        return self.last_error

    def cancel(self) -> bool:
        """Stop after the step running now; what comes after is dropped. False if nothing runs."""
        if not self.running:
            return False
        self.cancelled = True
        self.status = "cancelled"
        return True

    def finish(self) -> None:
        self.running = False

    def grid(self, job: Job, layer_names: Sequence[str]) -> list[GridCell]:
        """The comparison grid after ``job``: the scan under each map (copies: ``scan ⟨i⟩``); empty if cancelled."""
        if self.cancelled or not job.compare:
            return []
        cams = [n for n in layer_names if n.endswith("(compare)") and n.split(" · ")[0] in job.methods]
        cells = []
        for index, cam in enumerate(cams):
            under = f"{job.image.name} ⟨{index}⟩" if index else job.image.name
            cells.append(GridCell(under, index > 0 and under not in layer_names, cam))
        return cells

    # -- review -----------------------------------------------------------------------------------
    def world_of(self, index: int) -> float | None:
        """The slider position (world units) of slice ``index`` of the map under review."""
        if self.review is None:
            return None
        return float(self.map_translate[0] + index * self.map_scale[0])

    def index_of(self, point: float) -> int:
        """The slice of the map under review at slider position ``point``."""
        if self.review is None:
            return 0
        return int(np.rint((point - self.map_translate[0]) / self.map_scale[0]))

    def profile_view(self, current: int | None = None) -> ProfileView | None:
        if self.review is None:
            return None
        return ProfileView(self.review.profile, "frame" if self.map_axes == "tyx" else "axial slice", current)

    def peak(self) -> int | None:
        """The slice (frame) holding the map's maximum."""
        from volcam.viz.review import peak

        return None if self.review is None else peak(self.review.data)[0]

    def step_top(self, step: int) -> int | None:
        """The next (``step`` = 1) or previous (-1) of the top slices by mean activation."""
        if self.review is None or not self.review.top:
            return None
        top = self.review.top
        self._top_at = (self._top_at + step) % len(top)
        return top[self._top_at]

    def pick(self, x: float | None) -> int | None:
        """The slice at ``x`` on the profile plot (a click), or ``None`` off the plot."""
        if x is None or self.review is None or not len(self.review.profile):
            return None
        return int(np.clip(round(x), 0, len(self.review.profile) - 1))

    def localize(self) -> Callable[[], Review] | None:
        """The recomputation of the review numbers for the chosen mask (for a worker), or ``None`` if none is due."""
        if self.review is None or self.mask is None:
            return None
        data, mask, onto = self.review.data, self.mask, self._onto or _same_grid
        spacing = map_spacing(self.map_scale, self.map_axes == "tyx")
        return lambda: review_of(data, onto(mask), spacing)

    def accept_review(self, new: Review) -> str | None:
        """Take recomputed numbers if they are still of the map under review; the localization line, else ``None``."""
        if self.review is None or self.review.data is not new.data:
            return None
        self.review = new
        return self.localization_text()

    def localization_text(self) -> str:
        """The localization line: pointing game and energy in the mask, or why there are none."""
        numbers = None if self.review is None or self.mask is None else self.review.localization
        if numbers is None:
            name = self.mask_name
            if name in ("", NO_MASK) or self.review is None:
                return ""
            return f"{name}: not on the map's grid, or empty"
        return (
            f"pointing game ({TOLERANCE_MM:g} mm): {'hit' if numbers['pointing_hit'] else 'miss'} "
            f"({numbers['distance_mm']:.1f} mm) · energy in mask {numbers['energy_in_mask']:.1%} "
            f"(uniform map: {numbers['energy_baseline']:.1%})"
        )
