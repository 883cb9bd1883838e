"""The napari explain dock timed as a person uses it (imported by the benchmark scripts beside it).

A real viewer (``show=True``; under a virtual X server when there is no display: ``pyvirtualdisplay``
from the test extras) opens a scan with volcam's reader, the dock takes a card, and each request is
timed from the click to the map layer updated (the dock's ``map_shown`` signal).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["time_dock"]


def time_dock(
    scan: Path,
    card: Path,
    first: tuple[str, str],
    requests: Sequence[tuple[str, str]],
    clock: Callable[[str, Callable[[], Any]], Any],
    steps: dict[str, float],
    baseline: Callable[[], float],
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Open ``scan`` in a viewer, explain ``first`` (method, class; untimed: it pays the forward), then
    time each of ``requests`` into ``steps["dock <method> <class>"]``. ``clock`` times the untimed setup
    steps; ``baseline`` reads the RSS once the viewer is up. Returns what the report adds: the RSS
    baseline, the timed step names and the session's forward passes."""
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1600, 1000))
        display.start()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_volcam._qt import ExplainWidget

    def wait(done: Callable[[], bool]) -> None:
        end = time.perf_counter() + timeout
        while not done():
            QApplication.processEvents()
            time.sleep(0.001)
            if time.perf_counter() > end:
                raise TimeoutError("the dock did not answer in time")

    try:
        viewer = napari.Viewer(show=True)
        found: dict[str, Any] = {"baseline_mib": baseline()}
        clock("open in napari (untimed setup)", lambda: viewer.open(str(scan), plugin="volcam"))
        widget = ExplainWidget(viewer)
        viewer.window.add_dock_widget(widget, name="volcam", area="right")
        widget.explain_panel.card.setText(str(card))
        widget.card_changed()
        wait(lambda: widget.explain_panel.target.count() > 1)  # the card's classes, loaded in a worker
        shown: list[float] = []
        widget.map_shown.connect(lambda layer: shown.append(time.perf_counter()))  # the map layer updated

        def explain(method: str, target: str) -> float:
            widget.explain_panel.method.setCurrentText(method)
            widget.explain_panel.target.setCurrentText(target)
            start = time.perf_counter()
            widget.explain()
            wait(lambda: widget.worker is None)
            assert widget.controller.last_error == "", widget.controller.last_error
            return shown[-1] - start

        clock(f"{first[0]} {first[1]} (untimed: pays the forward)", lambda: explain(*first))
        found["dock_steps"] = []
        for method, target in requests:
            name = f"dock {method} {target}"
            steps[name] = explain(method, target)  # request → layer updated; the worker then winds up
            found["dock_steps"].append(name)
            print(f"  [dock] {name}: {steps[name]:.2f} s from the request to the layer updated", flush=True)
        found["forwards"] = widget.controller.sessions[0].forwards
        viewer.close()
        return found
    finally:
        if display is not None:
            display.stop()
