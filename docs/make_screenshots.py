"""Screenshots of the napari plugin for the README, made reproducibly from the shipped sample data.

    python docs/make_screenshots.py            # writes docs/napari_*.png

Needs a display with OpenGL; without ``$DISPLAY`` it starts a virtual one (Xvfb, through
PyVirtualDisplay, which pytest-xvfb brings). Everything it shows comes from the demo models and
synthetic scans in ``sample_data/``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
SIZE = (1500, 950)


def _wait(widget, timeout: float = 120.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while widget.worker is not None and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    if widget.worker is not None:
        raise TimeoutError("the explain worker did not finish")
    for _ in range(20):  # let the canvas draw the new layers
        QApplication.processEvents()
        time.sleep(0.01)


def _viewer(sample: str):
    import napari

    from napari_volcam._qt import ExplainWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample("volcam", sample)
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="volcam explain", area="right")
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + 60
    while widget.explain_panel.target.count() < 2 and time.monotonic() < end:  # the card loads in a worker
        QApplication.processEvents()
        time.sleep(0.01)
    return viewer, widget


def _save(viewer, name: str) -> Path:
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path.relative_to(OUT.parent)}")
    return path


def ct_overlay() -> None:
    """The demo CT with the Grad-CAM overlay on its peak slice, the lesion mask outlined, the dock filled in."""
    viewer, widget = _viewer("demo_ct")
    lesions = viewer.layers["demo chest CT lesions"]
    lesions.contour = 1
    widget.explain_panel.method.setCurrentText("gradcam")
    widget.explain()
    _wait(widget)
    viewer.reset_view()
    _save(viewer, "napari_ct_overlay.png")
    from qtpy.QtCore import Qt

    for name in ("gradcam++", "hirescam", "layercam"):
        (item,) = widget.compare_panel.methods.findItems(name, Qt.MatchExactly)
        item.setSelected(True)
    widget.compare()
    _wait(widget)
    widget.go_to_peak()
    viewer.reset_view()
    _save(viewer, "napari_compare.png")
    viewer.close()


def ultrasound_clip() -> None:
    """The demo lung-ultrasound clip with the frame model's map on its hottest frame."""
    viewer, widget = _viewer("demo_ultrasound")
    viewer.layers["demo lung ultrasound lesions"].contour = 1
    widget.explain()
    _wait(widget)
    viewer.reset_view()
    _save(viewer, "napari_ultrasound_clip.png")
    viewer.close()


def main() -> None:
    display = None
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(SIZE[0] + 100, SIZE[1] + 100), color_depth=24)
        display.start()
    try:
        import tempfile

        # a throw-away settings file, so quieting the pop-ups does not change the user's napari settings
        os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(), "settings.yaml")
        from napari.settings import get_settings

        get_settings().application.gui_notification_level = "none"
        import napari._qt.qt_main_window as main_window

        main_window.SHOW_QT_WARNING = False  # napari's PyQt5 deprecation pop-up would sit in the picture
        from napari._qt.qt_event_loop import get_qapp

        get_qapp()
        ct_overlay()
        ultrasound_clip()
    finally:
        if display is not None:
            display.stop()
    if display is not None:
        # Qt's exit handlers would talk to the X server just stopped: leave without them
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
