"""The compare panel: methods to explain side by side, one grid cell each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QAbstractItemView, QGroupBox, QListWidget, QPushButton, QVBoxLayout


class ComparePanel(QGroupBox):
    """A multi-selection list of methods; ``on_compare(methods)`` starts the comparison."""

    def __init__(self, methods: list[str], on_compare: Callable[[list[str]], Any]) -> None:
        super().__init__("compare methods (grid)")
        self.methods = QListWidget()
        self.methods.setSelectionMode(QAbstractItemView.MultiSelection)
        self.methods.addItems(methods)
        self.methods.setMaximumHeight(90)
        self.button = QPushButton("Compare side by side")
        self.button.clicked.connect(lambda: on_compare(self.selected()))
        layout = QVBoxLayout(self)
        layout.addWidget(self.methods)
        layout.addWidget(self.button)

    def selected(self) -> list[str]:
        return [item.text() for item in self.methods.selectedItems()]
