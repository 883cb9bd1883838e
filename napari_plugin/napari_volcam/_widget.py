"""The explain dock: pick a scan, a model card, a method and a class; review the map slice by slice.

The GUI thread only reads settings and shows results: loading models and explaining run in napari
``thread_worker`` s (with napari's progress bar and a cancel button). One
:class:`volcam.session.ScanSession` per (model, scan) keeps the forward pass, so switching the class
or the gradient method on the same scan is quick. Review logic (profile, top slices, localization)
is :mod:`volcam.review`; this module only wires it to widgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_volcam._layers import COLORMAPS, INFO_KEY, RESULT_KEY, SCAN_KEY, cam_layer_kwargs, scan_of

PREDICTED = "predicted"
AUTO = "auto"
TOP_K = 5


def demo_card(modality: str | None) -> str:
    """The shipped demo model card for a modality (ultrasound → the clip model, else the CT model)."""
    from volcam import sample_data

    try:
        name = sample_data.LUS_CARD if (modality or "").upper() == "US" else sample_data.CT_CARD
        return str(sample_data.file(name))
    except Exception:  # no sample data installed: the field stays empty for the user to fill
        return ""


def _named(layers: Any, name: str) -> Any:
    """The layer called ``name``, or ``None`` (napari's LayerList has no ``get``)."""
    return next((layer for layer in layers if layer.name == name), None)


@dataclass
class Review:
    """What the review panel shows for one map, computed off the GUI thread."""

    data: np.ndarray  # the map in display order, as the layer holds it
    profile: np.ndarray  # mean activation per slice (frame) along the slider axis
    top: list[int]  # the slices with the most activation, highest first
    localization: dict[str, Any] | None  # against the lesion mask, when one is chosen and fits


def map_spacing(scale: Any, clip: bool) -> tuple[float, ...]:
    """Distances for localization: mm in plane; on a clip never across frames (a huge step in time)."""
    spacing = [float(v) for v in scale]
    if clip:
        spacing[0] = 1e6
    return tuple(spacing)


def review_of(data: np.ndarray, mask: np.ndarray | None, spacing: tuple[float, ...]) -> Review:
    """Profile, top slices and localization of a displayed map (:mod:`volcam.review`)."""
    from volcam.review import localization, slice_profile, top_slices

    numbers = None
    if mask is not None and mask.shape == data.shape and mask.any():
        numbers = localization(data, mask, spacing, tolerance_mm=5.0)
    return Review(data, slice_profile(data, axis=0), top_slices(data, axis=0, k=TOP_K), numbers)


def error_text(error: BaseException) -> str:
    """One line for a person: volcam's own message, or the exception's type and first line."""
    from volcam.errors import VolcamError, first_line, one_line

    if isinstance(error, VolcamError):
        return one_line(str(error)) or type(error).__name__
    return f"{type(error).__name__}: {one_line(first_line(error))}"


class ProfilePlot(QWidget):
    """Mean activation per slice (frame) of the current map; a click moves the viewer to that slice."""

    def __init__(self, on_pick: Any) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 1.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        self.profile = np.zeros(0)
        self._on_pick = on_pick
        self.canvas.mpl_connect("button_press_event", self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.canvas.setMinimumHeight(130)

    def show_profile(self, profile: np.ndarray, label: str, current: int | None = None) -> None:
        self.profile = np.asarray(profile)
        ax = self.axes
        ax.clear()
        ax.plot(np.arange(len(profile)), profile, color="tab:orange", lw=1.5)
        if current is not None:
            ax.axvline(current, color="tab:blue", lw=1)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("mean map", fontsize=8)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()

    def index_at(self, x: float | None) -> int | None:
        if x is None or not len(self.profile):
            return None
        return int(np.clip(round(x), 0, len(self.profile) - 1))

    def _clicked(self, event: Any) -> None:
        index = self.index_at(event.xdata)
        if index is not None:
            self._on_pick(index)


class ExplainWidget(QWidget):
    """Dock widget: explain an image layer with a model card and review the map."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        import volcam

        self.viewer = napari_viewer
        self._models: dict[str, Any] = {}  # card path → Model
        self._sessions: dict[tuple[str, int], Any] = {}  # (card, id(scan)) → ScanSession
        self.worker: Any = None
        self.last_error = ""
        self.cam_layer: Any = None
        self.last_explanation: Any = None
        self.cancelled = False
        self.review: Review | None = None
        self._top_at = -1

        self.image = QComboBox()
        self.card = QLineEdit()
        browse = QPushButton("…")
        browse.setToolTip("Choose a model card (.json) or a MONAI bundle folder")
        browse.clicked.connect(self._browse)
        card_row = QHBoxLayout()
        card_row.addWidget(self.card)
        card_row.addWidget(browse)
        self.method = QComboBox()
        self.method.addItems([info.name for info in volcam.methods()])
        self.method.setCurrentText("gradcam")
        self.target = QComboBox()
        self.target_layer = QComboBox()
        self.sigma = QDoubleSpinBox()
        self.sigma.setRange(0.0, 100.0)
        self.sigma.setSingleStep(0.5)
        self.sigma.setSuffix(" mm")
        self.sigma.setSpecialValueText("off")
        self.sigma.setToolTip("Gaussian σ applied to the gradients (gradient methods only); 0 = off")
        self.run_button = QPushButton("Explain")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(lambda: self.explain())
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        form = QFormLayout()
        form.addRow("image", self.image)
        form.addRow("model card", card_row)
        form.addRow("method", self.method)
        form.addRow("class", self.target)
        form.addRow("target layer", self.target_layer)
        form.addRow("gradient σ", self.sigma)

        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.2)
        for signal in (self.colormap.currentTextChanged, self.opacity.valueChanged, self.threshold.valueChanged):
            signal.connect(self._restyle)
        display = QGroupBox("display")
        display_form = QFormLayout(display)
        display_form.addRow("colormap", self.colormap)
        display_form.addRow("opacity", self.opacity)
        display_form.addRow("threshold", self.threshold)

        review = QGroupBox("review")
        review_layout = QVBoxLayout(review)
        steps = QHBoxLayout()
        self.peak_button = QPushButton("peak")
        self.peak_button.setToolTip("Go to the slice (frame) holding the map's maximum")
        self.prev_button = QPushButton("◀ top")
        self.next_button = QPushButton("top ▶")
        self.peak_button.clicked.connect(self.go_to_peak)
        self.prev_button.clicked.connect(lambda: self.step_top(-1))
        self.next_button.clicked.connect(lambda: self.step_top(1))
        for button in (self.peak_button, self.prev_button, self.next_button):
            steps.addWidget(button)
        review_layout.addLayout(steps)
        self.plot = ProfilePlot(self.go_to_slice)
        review_layout.addWidget(self.plot)
        self.mask = QComboBox()
        self.mask.currentTextChanged.connect(lambda _: self.update_localization())
        self._mask_worker: Any = None
        self.localization = QLabel("")
        self.localization.setWordWrap(True)
        mask_form = QFormLayout()
        mask_form.addRow("lesion mask", self.mask)
        review_layout.addLayout(mask_form)
        review_layout.addWidget(self.localization)

        compare = QGroupBox("compare methods (grid)")
        compare_layout = QVBoxLayout(compare)
        self.compare_methods = QListWidget()
        self.compare_methods.setSelectionMode(QAbstractItemView.MultiSelection)
        self.compare_methods.addItems([info.name for info in volcam.methods()])
        self.compare_methods.setMaximumHeight(90)
        self.compare_button = QPushButton("Compare side by side")
        self.compare_button.clicked.connect(self.compare)
        compare_layout.addWidget(self.compare_methods)
        compare_layout.addWidget(self.compare_button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(display)
        layout.addWidget(review)
        layout.addWidget(compare)
        layout.addStretch(1)

        self.image.currentTextChanged.connect(self._image_changed)
        self.card.editingFinished.connect(self._card_changed)
        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # -- choices ----------------------------------------------------------------------------------
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer.metadata.get(INFO_KEY, {}).get("kind") != "cam"
        ]

    def _refresh_layers(self, *_: Any) -> None:
        from napari.layers import Labels

        current = self.image.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image.blockSignals(True)
        self.image.clear()
        self.image.addItems(names)
        self.image.blockSignals(False)
        if current in names:
            self.image.setCurrentText(current)
        elif names:
            self.image.setCurrentIndex(0)
            self._image_changed(names[0])
        masks = ["none"] + [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        chosen = self.mask.currentText()
        self.mask.blockSignals(True)
        self.mask.clear()
        self.mask.addItems(masks)
        self.mask.setCurrentText(chosen if chosen in masks else masks[min(1, len(masks) - 1)])
        self.mask.blockSignals(False)

    def selected_image(self) -> Any:
        name = self.image.currentText()
        return _named(self.viewer.layers, name)

    def _image_changed(self, name: str) -> None:
        layer = _named(self.viewer.layers, name)
        if layer is None:
            return
        modality = layer.metadata.get(INFO_KEY, {}).get("modality")
        card = demo_card(modality)
        if card and (not self.card.text() or Path(self.card.text()).parent == Path(card).parent):
            self.card.setText(card)  # a demo card follows the scan's modality; a user's card stays
        self._card_changed()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model card", self.card.text(), "Model cards (*.json);;All (*)")
        if path:
            self.card.setText(path)
            self._card_changed()

    def _card_changed(self) -> None:
        """Fill the class and target-layer lists from the card (the model loads in a worker)."""
        from napari.qt.threading import create_worker

        card = self.card.text().strip()
        if not card:
            return
        worker = create_worker(self._model, card, _ignore_errors=True)  # errors: shown by _show_error
        worker.returned.connect(self._show_model_choices)
        worker.errored.connect(self._show_error)
        worker.start()

    def _show_model_choices(self, model: Any) -> None:
        for combo, first, items in (
            (self.target, PREDICTED, model.labels),
            (self.target_layer, AUTO, model.layer_choices()),
        ):
            current = combo.currentText()
            combo.clear()
            combo.addItems([first, *items])
            combo.setCurrentText(current if current in items else first)
        self.target_layer.setToolTip(f"auto: the card's layer ({model.card.layer})")

    # -- the work (runs in a worker thread) -------------------------------------------------------
    def _model(self, card: str) -> Any:
        import volcam

        key = str(Path(card).resolve())
        if key not in self._models:
            self._models[key] = volcam.load_model(card)
        return self._models[key]

    def _session(self, card: str, scan: Any) -> Any:
        from volcam.session import ScanSession

        model = self._model(card)
        key = (str(Path(card).resolve()), id(scan))
        if key not in self._sessions:
            self._sessions = {k: s for k, s in self._sessions.items() if k[0] != key[0]}  # one scan per model kept
            self._sessions[key] = ScanSession(model, scan)
        return self._sessions[key]

    def settings(self) -> dict[str, Any]:
        """What the form asks for, as :meth:`volcam.session.ScanSession.explain` arguments."""
        target = self.target.currentText()
        layer = self.target_layer.currentText()
        options: dict[str, Any] = {}
        if self.sigma.value() > 0:
            options["gradient_sigma_mm"] = float(self.sigma.value())
        return {
            "target": None if target in ("", PREDICTED) else target,
            "layer": None if layer in ("", AUTO) else layer,
            **options,
        }

    def explain(self, methods: list[str] | None = None) -> Any:
        """Start explaining the selected image with the chosen method(s); returns the worker."""
        from napari.qt.threading import create_worker

        from volcam.display import DisplayGeometry, display_geometry

        layer = self.selected_image()
        card = self.card.text().strip()
        if layer is None or not card:
            self._show_error_text("choose an image layer and a model card first")
            return None
        methods = methods or [self.method.currentText()]
        settings = self.settings()
        info = layer.metadata.get(INFO_KEY, {})
        mask = self._mask_data()
        spacing = map_spacing(layer.scale, info.get("axes") == "thw")

        def work() -> Any:
            scan = scan_of(layer)
            # a layer volcam read knows its geometry; a plain one was rebuilt in the display order
            geometry = DisplayGeometry.from_metadata(info["geometry"]) if "geometry" in info else display_geometry(scan)
            session = self._session(card, scan)
            yield None  # model and scan ready
            for method in methods:
                explanation = session.explain(method, **settings)
                data = np.ascontiguousarray(geometry.to_display(explanation.map[0].detach().cpu().numpy()))
                yield (method, explanation, review_of(data, mask, spacing), geometry.as_metadata())

        self.worker = create_worker(
            work, _progress={"total": len(methods) + 1, "desc": "volcam explain"}, _ignore_errors=True
        )
        compare = len(methods) > 1
        self.worker.yielded.connect(lambda item: self._add_result(layer, item, compare))
        self.worker.errored.connect(self._show_error)
        self.worker.finished.connect(self._finished)
        if compare:
            self.worker.finished.connect(lambda: self._arrange_grid(layer, methods))
        self.run_button.setEnabled(False)
        self.compare_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.last_error = ""
        self.cancelled = False
        self.status.setText(f"explaining with {', '.join(methods)} …")
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Stop after the step running now; what it yields after this is dropped."""
        if self.worker is not None:
            self.cancelled = True
            self.worker.quit()
            self.status.setText("cancelled")

    def compare(self) -> Any:
        methods = [item.text() for item in self.compare_methods.selectedItems()]
        if len(methods) < 2:
            self._show_error_text("select two or more methods to compare")
            return None
        return self.explain(methods)

    # -- results (GUI thread) ---------------------------------------------------------------------
    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        self.compare_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.worker = None

    def _show_error_text(self, text: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = text
        self.status.setText(f"<span style='color:#e55'>error: {text}</span>")
        show_error(f"volcam: {text}")

    def _show_error(self, error: BaseException) -> None:
        self._show_error_text(error_text(error))

    def _add_result(self, image: Any, item: Any, compare: bool) -> None:
        if item is None or self.cancelled:
            return
        method, explanation, review, geometry = item
        data = review.data
        info = image.metadata.get(INFO_KEY, {})
        name = f"{method} · {explanation.target}" + (" (compare)" if compare else "")
        kwargs = cam_layer_kwargs(
            image, name, self.colormap.currentText(), self.threshold.value(), self.opacity.value() / 100
        )
        metadata = {
            INFO_KEY: {
                "kind": "cam",
                "geometry": geometry,
                "modality": info.get("modality"),
                "source_layer": image.name,
                **explanation.summary(),
            },
            SCAN_KEY: image.metadata.get(SCAN_KEY),
            RESULT_KEY: explanation.result,
        }
        layer = _named(self.viewer.layers, name)
        if layer is not None and layer.metadata.get(INFO_KEY, {}).get("source_layer") == image.name:
            layer.data = data  # the same method and class on the same scan again: update in place
            layer.metadata = metadata
        else:  # napari suffixes the name when another scan's map already has it
            layer = self.viewer.add_image(data, metadata=metadata, **kwargs)
            layer.colorbar.visible = not compare
        self.cam_layer = layer
        probabilities = ", ".join(f"{k} {v:.3f}" for k, v in explanation.probabilities.items())
        seconds = sum(explanation.timings.values())
        self.status.setText(
            f"<b>prediction: {explanation.prediction}</b> ({probabilities})<br>"
            f"{method} for class '{explanation.target}' at {', '.join(explanation.layers)} in {seconds:.2f} s"
        )
        self.review = review
        self.last_explanation = explanation
        self._top_at = -1
        self._show_localization(review.localization)
        if not compare:
            self.go_to_peak()

    def _arrange_grid(self, image: Any, methods: list[str]) -> None:
        """Grid mode, one cell per method, each the scan under its map; slices stay linked (shared dims)."""
        if self.cancelled:
            return
        layers = self.viewer.layers
        cams = [layer for layer in layers if layer.name.endswith("(compare)") and layer.name.split(" · ")[0] in methods]
        if not cams:
            return
        order = []
        for index, cam in enumerate(cams):
            under = image
            if index:
                copy_name = f"{image.name} ⟨{index}⟩"
                if copy_name in layers:
                    under = layers[copy_name]
                else:
                    under = self.viewer.add_image(
                        image.data, name=copy_name, scale=image.scale, translate=image.translate,
                        colormap=image.colormap, contrast_limits=image.contrast_limits, rgb=image.rgb,
                        units=image.units, axis_labels=image.axis_labels,
                    )  # fmt: skip
            order += [under, cam]
        rest = [layer for layer in layers if layer not in order]
        for position, layer in enumerate(order + rest):
            layers.move(layers.index(layer), position)
        for layer in rest:
            layer.visible = False
        self.viewer.grid.stride = 2
        self.viewer.grid.enabled = True

    def _restyle(self, *_: Any) -> None:
        from napari_volcam._layers import threshold_colormap

        colormap = threshold_colormap(self.colormap.currentText(), self.threshold.value())
        for layer in self.viewer.layers:
            if layer.metadata.get(INFO_KEY, {}).get("kind") == "cam":
                layer.colormap = colormap
                layer.opacity = self.opacity.value() / 100

    # -- review -----------------------------------------------------------------------------------
    def go_to_slice(self, index: int) -> None:
        """Show slice (frame) ``index`` of the map along the slider axis, and mark it on the profile."""
        if self.cam_layer is None:
            return
        layer = self.cam_layer
        world = float(layer.translate[0] + index * layer.scale[0])
        self.viewer.dims.set_point(0, world)
        axes = layer.metadata.get(INFO_KEY, {}).get("geometry", {}).get("axes", "zyx")
        if self.review is not None:
            self.plot.show_profile(self.review.profile, "frame" if axes == "tyx" else "axial slice", index)

    def current_slice(self) -> int:
        layer = self.cam_layer
        point = self.viewer.dims.point[0]
        return int(np.rint((point - layer.translate[0]) / layer.scale[0])) if layer is not None else 0

    def go_to_peak(self) -> None:
        from volcam.review import peak

        if self.review is not None:
            self.go_to_slice(peak(self.review.data)[0])

    def step_top(self, step: int) -> None:
        """Go to the next (``step`` = 1) or previous (-1) of the top slices by mean activation."""
        if self.review is None or not self.review.top:
            return
        top = self.review.top
        self._top_at = (self._top_at + step) % len(top)
        self.go_to_slice(top[self._top_at])

    def _mask_data(self) -> np.ndarray | None:
        name = self.mask.currentText()
        layer = _named(self.viewer.layers, name) if name not in ("", "none") else None
        return None if layer is None else np.asarray(layer.data)

    def update_localization(self) -> Any:
        """Recompute the localization numbers for a newly chosen mask, in a worker; returns it (or None)."""
        from napari.qt.threading import create_worker

        mask = self._mask_data()
        if self.review is None or mask is None:
            self._show_localization(None)
            return None
        review, layer = self.review, self.cam_layer
        clip = layer.metadata.get(INFO_KEY, {}).get("geometry", {}).get("axes") == "tyx"
        spacing = map_spacing(layer.scale, clip)
        self._mask_worker = create_worker(review_of, review.data, mask, spacing, _ignore_errors=True)
        self._mask_worker.returned.connect(lambda new: self._show_review_numbers(review, new))
        self._mask_worker.errored.connect(self._show_error)
        self._mask_worker.start()
        return self._mask_worker

    def _show_review_numbers(self, old: Review, new: Review) -> None:
        if self.review is old:  # still the map it was computed for
            self.review = new
            self._show_localization(new.localization)

    def _show_localization(self, numbers: dict | None) -> None:
        if numbers is None:
            name = self.mask.currentText()
            self.localization.setText("" if name in ("", "none") else f"{name}: not on the map's grid, or empty")
            return
        self.localization.setText(
            f"pointing game (5 mm): {'hit' if numbers['pointing_hit'] else 'miss'} "
            f"({numbers['distance_mm']:.1f} mm) · energy in mask {numbers['energy_in_mask']:.1%} "
            f"(uniform map: {numbers['energy_baseline']:.1%})"
        )
