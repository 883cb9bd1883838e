"""The explain dock: the panels over one :class:`~napari_volcam._controller.DockController`, wired to the viewer.

The GUI thread only forwards input and shows results: loading models, explaining and recomputing
review numbers run in napari ``thread_worker`` s (with napari's progress bar and a cancel button).
Showing a map is napari's work on the GUI thread (a new layer's controls and visual, its colorbar,
the slice and profile: about half a second for the first map on an idle core); it runs in steps, one
turn of the event loop each, so the viewer answers in between.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_volcam._controller import DockController
from napari_volcam._images import layer_lists
from napari_volcam._job import GridCell, Job, MapResult
from napari_volcam._layers import INFO_KEY, cam_layer_kwargs
from napari_volcam._qt._compare import ComparePanel
from napari_volcam._qt._explain import DisplayPanel, ExplainPanel
from napari_volcam._qt._review import ReviewPanel


def _named(layers: Any, name: str) -> Any:
    """The layer called ``name``, or ``None`` (napari's LayerList has no ``get``)."""
    return next((layer for layer in layers if layer.name == name), None)


def _kind(layer: Any) -> str:
    from napari.layers import Image, Labels

    return "image" if isinstance(layer, Image) else "labels" if isinstance(layer, Labels) else "other"


def _place(layer: Any, affine: Any, image: Any) -> None:
    """Put a map layer where its new data lies: through ``affine``, or on ``image``'s grid when ``None``."""
    import numpy as np

    n = len(image.scale)
    if affine is None:
        layer.affine = np.eye(n + 1)
        layer.scale, layer.translate = image.scale, image.translate
    else:
        layer.scale, layer.translate = np.ones(n), np.zeros(n)
        layer.affine = affine


# The wait before the next step of GUI work (_later). A zero timer set in a step can fire again before a
# timer that is overdue (measured: one tick of a 10 ms timer per two 100 ms steps); 1 ms gives one per step.
STEP_MS = 1

# The dock's own workers at once at most (loading a card, explaining, the review numbers), and the
# threads Qt itself needs from the same pool.
WORKERS = 3
QT_THREADS = 2


def _room_for_qt_in_the_thread_pool() -> None:
    """Keep threads free in Qt's global pool for Qt's own work.

    napari's workers run in ``QThreadPool.globalInstance()``, whose size is the number of cores. Qt
    paints by converting images in that same pool while the GUI thread waits on a semaphore, holding
    Python's GIL; with every pool thread busy in a worker that waits for the GIL, neither side can go
    on and the viewer freezes (seen on a 2-core machine: a card loading while a map is explained).
    """
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool is not None and pool.maxThreadCount() < WORKERS + QT_THREADS:
        pool.setMaxThreadCount(WORKERS + QT_THREADS)


class ExplainWidget(QWidget):
    """Dock widget: explain an image layer with a model card and review the map."""

    #: A map layer was added or updated with a new map (the layer).
    map_shown = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        _room_for_qt_in_the_thread_pool()
        self.viewer = napari_viewer
        self.controller = c = DockController()
        self.worker: Any = None
        self._mask_worker: Any = None
        self._steps: deque[Iterator[None]] = deque()  # GUI work queued in steps (_later)
        self.cam_layer: Any = None
        self.explain_panel = ExplainPanel(c, self._image_changed, self.card_changed, self.explain, self.cancel)
        self.display_panel = DisplayPanel(c, self._restyle)
        self.review_panel = ReviewPanel(c, self.go_to_slice, self._mask_changed)
        self.compare_panel = ComparePanel(c.methods(), self.compare)
        layout = QVBoxLayout(self)
        for panel in (self.explain_panel, self.display_panel, self.review_panel, self.compare_panel):
            layout.addWidget(panel)
        layout.addStretch(1)
        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # -- choices ----------------------------------------------------------------------------------
    def _refresh_layers(self, *_: Any) -> None:
        kinds = [(layer, _kind(layer)) for layer in self.viewer.layers]
        explain, review = self.explain_panel, self.review_panel
        lists = layer_lists(
            [(layer.name, kind, layer.metadata) for layer, kind in kinds],
            explain.image.currentText(),
            review.lesion_mask.currentText(),
        )
        images = [layer for layer, kind in kinds if kind == "image"]
        self.controller.layers_left(images)
        for layer in images:  # napari connects a callback once
            layer.events.data.connect(self._data_changed)
        image_changed = lists.image != explain.image.currentText()
        explain.show_images(lists.images, lists.image)
        review.show_masks(lists.masks, lists.mask)
        self.controller.reviewing.set_mask(lists.mask, self._layer_data(lists.mask))
        if image_changed and lists.image:
            self._image_changed(lists.image)

    def _data_changed(self, event: Any) -> None:
        self.controller.data_changed(event.source)

    def _layer_data(self, name: str) -> Any:
        layer = _named(self.viewer.layers, name)
        return None if layer is None else layer.data

    def selected_image(self) -> Any:
        return _named(self.viewer.layers, self.explain_panel.image.currentText())

    def _image_changed(self, name: str) -> None:
        layer = _named(self.viewer.layers, name)
        if layer is None:
            return
        self.controller.card_for(layer)
        self.explain_panel.show_card()
        self.card_changed()

    def card_changed(self) -> None:
        """Fill the class and target-layer lists from the card (the model loads in a worker)."""
        from napari.qt.threading import create_worker

        card = self.controller.form.card
        if not card:
            return
        worker = create_worker(self.controller.choices, card, _ignore_errors=True)  # errors: shown by _show_error
        worker.returned.connect(self.explain_panel.show_choices)
        worker.errored.connect(self._show_error)
        worker.start()

    # -- the work (runs in a worker thread) -------------------------------------------------------
    def explain(self, methods: list[str] | None = None) -> Any:
        """Start explaining the selected image with the chosen method(s); returns the worker (or None)."""
        self._mask_changed(self.review_panel.lesion_mask.currentText(), review=False)
        return self._start(self.controller.start(self.selected_image(), methods))

    def compare(self, methods: list[str] | None = None) -> Any:
        """Explain with the methods chosen in the compare panel (or ``methods``), side by side in a grid."""
        self._mask_changed(self.review_panel.lesion_mask.currentText(), review=False)
        chosen = self.compare_panel.selected() if methods is None else methods
        return self._start(self.controller.start_comparison(self.selected_image(), chosen))

    def _start(self, job: Job | None) -> Any:
        from napari.qt.threading import create_worker

        if job is None:
            self._show_error(self.controller.status.last_error)
            return None
        self.worker = create_worker(
            self.controller.run, job, _progress={"total": job.steps, "desc": "volcam explain"}, _ignore_errors=True
        )
        self.worker.yielded.connect(lambda result: self._later(self._show_result(job, result)))
        self.worker.errored.connect(self._show_error)
        self.worker.finished.connect(lambda: self._later(self._finished(job)))
        self._show_running(True)
        self.explain_panel.show_status()
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Stop after the step running now; what it yields after this is dropped."""
        if self.worker is not None and self.controller.cancel():
            self.worker.quit()
            self.explain_panel.show_status()

    # -- results (GUI thread) ---------------------------------------------------------------------
    def _later(self, steps: Iterator[None]) -> None:
        """Run ``steps`` (a generator) on the GUI thread after those queued before, one step per turn of
        the event loop: between two steps the viewer paints and answers input."""
        self._steps.append(steps)
        if len(self._steps) == 1:
            QTimer.singleShot(STEP_MS, self._step)

    def _step(self) -> None:
        try:
            next(self._steps[0])
        except StopIteration:
            self._steps.popleft()
        except BaseException:
            self._steps.popleft()
            raise
        finally:
            if self._steps:
                QTimer.singleShot(STEP_MS, self._step)

    def _show_running(self, running: bool) -> None:
        self.explain_panel.show_running(running)
        self.compare_panel.button.setEnabled(not running)

    def _finished(self, job: Job) -> Iterator[None]:
        yield from ()  # a generator of one step: queued after the maps' steps
        self.controller.finish()
        self._show_running(False)
        self.worker = None
        cells = self.controller.grid(job, [layer.name for layer in self.viewer.layers])
        if cells:
            self._arrange_grid(job.image, cells)

    def _show_error(self, error: BaseException | str) -> None:
        from napari.utils.notifications import show_error

        text = self.controller.fail(error)
        self.explain_panel.show_status()
        show_error(f"volcam: {text}")

    def _show_result(self, job: Job, result: MapResult | None) -> Iterator[None]:
        """Show one map: the layer, then its colorbar and the status, then its peak slice and profile."""
        shown = self.controller.accept(job, result)
        if shown is None:
            return
        spec, image = shown.layer, job.image
        layer = _named(self.viewer.layers, spec.name)
        if layer is not None and layer.metadata.get(INFO_KEY, {}).get("source_layer") == spec.source:
            _place(layer, spec.affine, image)  # the same method and class on the same scan again: update in place
            layer.data = spec.data
            layer.metadata = spec.metadata
        else:  # napari suffixes the name when another scan's map already has it
            d = spec.display
            kwargs = cam_layer_kwargs(image, spec.name, d.colormap, d.threshold, d.opacity, spec.affine)
            layer = self.viewer.add_image(spec.data, metadata=spec.metadata, **kwargs)
            yield  # the colorbar's visual (and the glyphs its first paint renders) costs more than the layer's
            layer.colorbar.visible = spec.colorbar
        self.cam_layer = layer
        self.explain_panel.show_status()
        self.review_panel.show_localization(shown.localization)
        yield
        if shown.go_to is not None:
            self.go_to_slice(shown.go_to)
        self.map_shown.emit(layer)

    def _arrange_grid(self, image: Any, cells: list[GridCell]) -> None:
        """Grid mode, one cell per method, each the scan under its map; slices stay linked (shared dims)."""
        layers = self.viewer.layers
        order = []
        for cell in cells:
            if cell.copy:
                self.viewer.add_image(
                    image.data, name=cell.under, scale=image.scale, translate=image.translate,
                    colormap=image.colormap, contrast_limits=image.contrast_limits, rgb=image.rgb,
                    units=image.units, axis_labels=image.axis_labels,
                )  # fmt: skip
            order += [layers[cell.under], layers[cell.cam]]
        rest = [layer for layer in layers if layer not in order]
        for position, layer in enumerate(order + rest):
            layers.move(layers.index(layer), position)
        for layer in rest:
            layer.visible = False
        grid = self.viewer.canvas.grid if hasattr(self.viewer, "canvas") else self.viewer.grid  # napari >= 0.9: canvas
        grid.stride = 2
        grid.enabled = True

    def _restyle(self) -> None:
        from napari_volcam._layers import threshold_colormap

        display = self.controller.display
        colormap = threshold_colormap(display.colormap, display.threshold)
        for layer in self.viewer.layers:
            if layer.metadata.get(INFO_KEY, {}).get("kind") == "cam":
                layer.colormap = colormap
                layer.opacity = display.opacity

    # -- review -----------------------------------------------------------------------------------
    def go_to_slice(self, index: int | None) -> None:
        """Show slice (frame) ``index`` of the map along the slider axis, and mark it on the profile."""
        reviewing = self.controller.reviewing
        world = None if index is None else reviewing.world_of(index)
        if world is None:
            return
        self.viewer.dims.set_point(0, world)
        self.review_panel.plot.show_view(reviewing.profile_view(index))

    def current_slice(self) -> int:
        return self.controller.reviewing.index_of(self.viewer.dims.point[0])

    def go_to_peak(self) -> None:
        self.go_to_slice(self.controller.reviewing.peak())

    def step_top(self, step: int) -> None:
        """Go to the next (``step`` = 1) or previous (-1) of the top slices by mean activation."""
        self.go_to_slice(self.controller.reviewing.step_top(step))

    def _mask_changed(self, name: str, review: bool = True) -> None:
        self.controller.reviewing.set_mask(name, self._layer_data(name))
        if review:
            self.update_localization()

    def update_localization(self) -> Any:
        """Recompute the localization numbers for the chosen mask, in a worker; returns it (or None)."""
        from napari.qt.threading import create_worker

        reviewing = self.controller.reviewing
        work = reviewing.localize()
        if work is None:
            self.review_panel.show_localization(reviewing.localization_text())
            return None
        self._mask_worker = create_worker(work, _ignore_errors=True)
        self._mask_worker.returned.connect(lambda new: self.review_panel.show_localization(reviewing.accept(new)))
        self._mask_worker.errored.connect(self._show_error)
        self._mask_worker.start()
        return self._mask_worker
