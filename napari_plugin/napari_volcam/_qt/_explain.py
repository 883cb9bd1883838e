"""The explain panel (a PACS address to open, image, card, method, class, target layer, σ, run/cancel, status)
and the display panel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_volcam._controller import DockController
from napari_volcam._form import ModelChoices, keep
from napari_volcam._layers import COLORMAPS


def fill_combo(combo: QComboBox, items: list[str], current: str) -> None:
    """Replace a combo's entries without signalling, then select ``current``."""
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(items)
    combo.setCurrentText(current)
    combo.blockSignals(False)


class ExplainPanel(QWidget):
    """The form: fields write to the controller's :class:`~napari_volcam._form.Form` (whose defaults are the
    spec's); ``on_image``, ``on_card``, ``on_run``, ``on_cancel``: the dock."""

    def __init__(
        self,
        controller: DockController,
        on_image: Callable[[str], Any],
        on_card: Callable[[], Any],
        on_run: Callable[[], Any],
        on_cancel: Callable[[], Any],
    ) -> None:
        super().__init__()
        self.controller = controller
        form = controller.form
        self._on_card = on_card
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://pacs/dicom-web/studies/<uid>[/series/<uid>]")
        self.url.setToolTip(
            "Open a series from a DICOMweb server (PACS). Credentials from the environment: "
            "VOLCAM_DICOMWEB_TOKEN, or VOLCAM_DICOMWEB_USER and VOLCAM_DICOMWEB_PASSWORD, sent only to the "
            "hosts named in VOLCAM_DICOMWEB_HOSTS"
        )
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(lambda: self.open_url())
        self.url.returnPressed.connect(lambda: self.open_url())
        self.url_worker: Any = None
        url_row = QHBoxLayout()
        url_row.addWidget(self.url)
        url_row.addWidget(self.open_button)
        self.image = QComboBox()
        self.card = QLineEdit(form.card)
        browse = QPushButton("…")
        browse.setToolTip("Choose a model card (.json) or a MONAI bundle folder")
        browse.clicked.connect(self._browse)
        card_row = QHBoxLayout()
        card_row.addWidget(self.card)
        card_row.addWidget(browse)
        self.method = QComboBox()
        self.method.addItems(controller.methods())
        self.method.setCurrentText(form.method)
        self.target = QComboBox()
        self.target_layer = QComboBox()
        self.sigma = QDoubleSpinBox()
        self.sigma.setRange(0.0, 100.0)
        self.sigma.setSingleStep(0.5)
        self.sigma.setSuffix(" mm")
        self.sigma.setSpecialValueText("off")
        self.sigma.setToolTip("Gaussian σ applied to the gradients (gradient methods only); 0 = off")
        self.sigma.setValue(form.sigma_mm)
        self.run_button = QPushButton("Explain")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(lambda: on_run())
        self.cancel_button.clicked.connect(lambda: on_cancel())
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        rows = QFormLayout()
        rows.addRow("PACS URL", url_row)
        rows.addRow("image", self.image)
        rows.addRow("model card", card_row)
        rows.addRow("method", self.method)
        rows.addRow("class", self.target)
        rows.addRow("target layer", self.target_layer)
        rows.addRow("gradient σ", self.sigma)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(rows)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

        self.image.currentTextChanged.connect(on_image)
        self.card.textChanged.connect(lambda text: setattr(controller.form, "card", text.strip()))
        self.card.editingFinished.connect(on_card)
        self.method.currentTextChanged.connect(lambda text: setattr(controller.form, "method", text))
        self.target.currentTextChanged.connect(lambda text: setattr(controller.form, "target", text))
        self.target_layer.currentTextChanged.connect(lambda text: setattr(controller.form, "layer", text))
        self.sigma.valueChanged.connect(lambda value: setattr(controller.form, "sigma_mm", float(value)))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model card", self.card.text(), "Model cards (*.json);;All (*)")
        if path:
            self.card.setText(path)
            self._on_card()

    def open_url(self) -> Any:
        """Retrieve the series at the URL field's address in a worker (napari's progress bar, instances in
        the status line) and add it to the viewer; returns the worker (``None`` if nothing to open)."""
        from napari.qt.threading import create_worker

        url = self.url.text().strip()
        if not url or self.url_worker is not None:
            return None
        worker = create_worker(
            self.controller.open_url, url, _progress={"total": 0, "desc": "volcam: PACS"}, _ignore_errors=True
        )
        worker.yielded.connect(self.status.setText)
        worker.returned.connect(self._opened)
        worker.errored.connect(self._open_failed)
        worker.finished.connect(self._open_finished)
        self.open_button.setEnabled(False)
        self.url_worker = worker
        worker.start()
        return worker

    def _viewer(self) -> Any:
        """The viewer of the dock this panel is in."""
        widget = self.parentWidget()
        while widget is not None and not hasattr(widget, "viewer"):
            widget = widget.parentWidget()
        if widget is None:
            import napari

            return napari.current_viewer()
        return widget.viewer

    def _opened(self, layer_data: tuple) -> None:
        from napari.utils.notifications import show_warning

        data, kwargs, _ = layer_data
        self._viewer().add_image(data, **kwargs)
        for problem in kwargs["metadata"]["volcam"]["problems"]:
            show_warning(problem)
        self.show_status()

    def _open_failed(self, error: BaseException) -> None:
        from napari.utils.notifications import show_error

        show_error(f"volcam: {self.controller.fail(error)}")
        self.show_status()

    def _open_finished(self) -> None:
        self.url_worker = None
        self.open_button.setEnabled(True)

    def show_images(self, names: list[str], current: str) -> None:
        fill_combo(self.image, names, current)

    def show_card(self) -> None:
        if self.card.text().strip() != self.controller.form.card:
            self.card.setText(self.controller.form.card)

    def show_choices(self, choices: ModelChoices) -> None:
        form = self.controller.form
        for combo, items, attribute in (
            (self.target, choices.classes, "target"),
            (self.target_layer, choices.layers, "layer"),
        ):
            fill_combo(combo, items, keep(getattr(form, attribute), items))  # the form's choice: at first the spec's
            setattr(form, attribute, combo.currentText())
        self.target_layer.setToolTip(choices.layer_tip)

    def show_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def show_status(self) -> None:
        self.status.setText(self.controller.status.text)


class DisplayPanel(QGroupBox):
    """Colormap, opacity and threshold of the maps; ``on_change`` restyles the map layers."""

    def __init__(self, controller: DockController, on_change: Callable[[], Any]) -> None:
        super().__init__("display")
        display = controller.display
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.setCurrentText(display.colormap)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(display.opacity * 100))
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(display.threshold)

        def changed(*_: Any) -> None:
            display.colormap = self.colormap.currentText()
            display.opacity = self.opacity.value() / 100
            display.threshold = float(self.threshold.value())
            on_change()

        for signal in (self.colormap.currentTextChanged, self.opacity.valueChanged, self.threshold.valueChanged):
            signal.connect(changed)
        form = QFormLayout(self)
        form.addRow("colormap", self.colormap)
        form.addRow("opacity", self.opacity)
        form.addRow("threshold", self.threshold)
