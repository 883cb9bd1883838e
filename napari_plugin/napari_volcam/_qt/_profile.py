"""The profile panel: mean activation per slice (frame) of the map under review and, for a clip, the
explained class's probability per frame; a click picks that slice (frame)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_volcam._review import ProfileView


class ProfilePlot(QWidget):
    """A matplotlib plot of a :class:`~napari_volcam._review.ProfileView`; ``on_pick(x)`` gets a click's x."""

    def __init__(self, on_pick: Callable[[float | None], Any]) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        # fixed margins: a tight layout measures every label again at each draw, on the GUI thread
        self.figure = Figure(figsize=(3.2, 1.6))
        self.figure.subplots_adjust(left=0.2, right=0.85, bottom=0.3, top=0.95)  # room for P(class)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        self.probability_axes = self.axes.twinx()  # a clip's frame probability, 0-1, on the right
        self.probability_axes.set_visible(False)
        self.profile = np.zeros(0)
        self._on_pick = on_pick
        self.canvas.mpl_connect("button_press_event", self.clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        # a fixed height: rows above it that change (the status line, at every press) move the plot, which
        # repaints its picture; resizing it would draw it again
        self.canvas.setFixedHeight(130)

    def show_view(self, view: ProfileView | None) -> None:
        if view is None:
            return
        self.profile = np.asarray(view.profile)
        ax = self.axes
        ax.clear()
        ax.plot(np.arange(len(self.profile)), self.profile, color="tab:orange", lw=1.5)
        if view.current is not None:
            ax.axvline(view.current, color="tab:blue", lw=1)
        ax.set_xlabel(view.label, fontsize=8)
        ax.set_ylabel("mean map", fontsize=8)
        ax.tick_params(labelsize=7)
        right = self.probability_axes
        right.clear()
        right.set_visible(view.probability is not None)
        if view.probability is not None:
            right.plot(np.arange(len(view.probability)), view.probability, color="tab:green", lw=1.2)
            right.set_ylim(0.0, 1.0)
            right.set_ylabel(f"P({view.probability_label})", fontsize=8, color="tab:green")
            right.tick_params(labelsize=7, colors="tab:green")
        self.canvas.draw_idle()

    def clicked(self, event: Any) -> None:
        """A click on the plot (matplotlib's event: its ``xdata``)."""
        self._on_pick(event.xdata)
