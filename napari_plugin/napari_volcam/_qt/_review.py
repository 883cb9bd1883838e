"""The review panel: peak and top-slice steps, the profile plot, the lesion mask and the localization line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from napari_volcam._controller import DockController
from napari_volcam._qt._explain import fill_combo
from napari_volcam._qt._profile import ProfilePlot


class ReviewPanel(QGroupBox):
    """``go_to(index | None)`` moves the viewer; ``on_mask(name)`` reports a newly chosen mask."""

    def __init__(
        self, controller: DockController, go_to: Callable[[int | None], Any], on_mask: Callable[[str], Any]
    ) -> None:
        super().__init__("review")
        self.controller = controller
        steps = QHBoxLayout()
        self.peak_button = QPushButton("peak")
        self.peak_button.setToolTip("Go to the slice (frame) holding the map's maximum")
        self.prev_button = QPushButton("◀ top")
        self.next_button = QPushButton("top ▶")
        reviewing = controller.reviewing
        self.peak_button.clicked.connect(lambda: go_to(reviewing.peak()))
        self.prev_button.clicked.connect(lambda: go_to(reviewing.step_top(-1)))
        self.next_button.clicked.connect(lambda: go_to(reviewing.step_top(1)))
        for button in (self.peak_button, self.prev_button, self.next_button):
            steps.addWidget(button)
        self.plot = ProfilePlot(lambda x: go_to(reviewing.pick(x)))
        self.lesion_mask = QComboBox()
        self.lesion_mask.currentTextChanged.connect(on_mask)
        self.localization = QLabel("")
        self.localization.setWordWrap(True)
        mask_form = QFormLayout()
        mask_form.addRow("lesion mask", self.lesion_mask)
        layout = QVBoxLayout(self)
        layout.addLayout(steps)
        layout.addWidget(self.plot)
        layout.addLayout(mask_form)
        layout.addWidget(self.localization)

    def show_masks(self, names: list[str], current: str) -> None:
        fill_combo(self.lesion_mask, names, current)

    def show_localization(self, text: str | None) -> None:
        if text is not None:
            self.localization.setText(text)
