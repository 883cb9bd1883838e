"""The explain dock's state and decisions, without Qt: tested without a viewer.

:class:`DockController` is a thin façade over small parts the Qt panels in :mod:`napari_volcam._qt`
reach through it:

* :attr:`~DockController.form` (:class:`~napari_volcam._form.Form`): the card, method, class, target
  layer and σ as the panel shows them; a job's :class:`~volcam.workflows.specs.ExplainSpec` is built
  from it, and its defaults are the spec's;
* :attr:`~DockController.display` (:class:`~napari_volcam._form.Display`): how maps are drawn;
* :attr:`~DockController.models` (:class:`~napari_volcam._models.Models`): a model per card, a
  session per image layer;
* :attr:`~DockController.runner` (:class:`~napari_volcam._job.Runner`): the running job;
* :attr:`~DockController.reviewing` (:class:`~napari_volcam._review.Reviewing`): the map under
  review and the lesion mask;
* :attr:`~DockController.status` (:class:`~napari_volcam._status.Status`): the status line.

What may take a while (:meth:`DockController.choices` loads a model, :meth:`DockController.run`
explains, ``reviewing.localize()`` recomputes the numbers, :meth:`DockController.open_url` retrieves
a series from a PACS) is meant for a worker thread; the rest is bookkeeping for the GUI thread, which
imports nothing new and computes nothing there. The controller imports no Qt and no napari: an image
is anything with a layer's ``name``, ``data``, ``scale``, ``translate``, ``metadata`` and ``rgb``
(a napari ``Image`` layer, or :class:`~napari_volcam._images.ScanImage`).

Maps of volumes stay on the network's grid (``ScanSession.explain(..., on="network")``) and are
shown through an affine that places them on the scan (:func:`napari_volcam._layers.map_view`): a
change of class or method costs a backward through the head and nothing at the scan's resolution.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any

from napari_volcam._form import Display, Form, ModelChoices
from napari_volcam._images import ImageLike, ScanImage
from napari_volcam._job import GridCell, Job, MapResult, Runner, Shown, map_layer
from napari_volcam._models import Models
from napari_volcam._pacs import retrieve
from napari_volcam._review import Reviewing
from napari_volcam._status import Status, error_text
from volcam.defaults import TOLERANCE_MM
from volcam.errors import VolcamError

# what code outside the dock uses: the façade, an image without a viewer, the dock's error line
__all__ = ["DockController", "ScanImage", "error_text"]


class DockController:
    """The explain dock's state; see the module's docstring."""

    def __init__(self) -> None:
        self.form = Form()
        self.display = Display()
        self.models = Models()
        self.runner = Runner(self.models, TOLERANCE_MM)  # the review's pointing game: volcam's default tolerance
        self.reviewing = Reviewing(TOLERANCE_MM)
        self.status = Status()
        # the spec's checks import what they need (the method registry, the DICOM kinds) now, before any
        # worker runs: a first import on the GUI thread during a run waits for the worker's imports
        self.form.spec()

    @staticmethod
    def methods() -> list[str]:
        """The CAM methods volcam knows, in its registry's order."""
        import volcam

        return [info.name for info in volcam.methods()]

    # what code outside the dock reads of the parts
    @property
    def card(self) -> str:
        return self.form.card

    @card.setter
    def card(self, card: str) -> None:
        self.form.card = card

    @property
    def method(self) -> str:
        return self.form.method

    @method.setter
    def method(self, method: str) -> None:
        self.form.method = method

    @property
    def last_error(self) -> str:
        return self.status.last_error

    @property
    def last_explanation(self) -> Any:
        return self.reviewing.explanation

    @property
    def sessions(self) -> list[Any]:
        return self.models.sessions()

    # -- choices (choices() loads a model: for a worker) ------------------------------------------
    def card_for(self, image: ImageLike) -> str:
        return self.form.card_for(image)

    def choices(self, card: str | None = None) -> ModelChoices:
        return self.models.choices(card or self.form.card)

    def layers_left(self, images: Iterable[Any]) -> None:
        """The viewer holds these image layers now: the sessions of the others are closed."""
        self.models.keep_only(images)

    def data_changed(self, image: Any) -> None:
        """``image`` holds new data: its session (the old scan's forward) is closed."""
        self.models.forget(image)

    def open_url(self, url: str) -> Generator[str, None, tuple]:
        """Retrieve a series from a PACS (for a worker; :func:`napari_volcam._pacs.retrieve`)."""
        return (yield from retrieve(url, self.status))  # a generator function: napari's worker yields its lines

    # -- a job --------------------------------------------------------------------------------------
    def start(self, image: ImageLike | None, methods: Sequence[str] | None = None) -> Job | None:
        """A job for ``image`` with ``methods`` (default: the chosen method), or ``None`` and :attr:`last_error`."""
        card = self.form.card.strip()
        if image is None or not card:
            self.fail("choose an image layer and a model card first")
            return None
        if self.runner.running:
            self.fail("an explanation is running; wait for it or cancel it")
            return None
        try:
            spec = self.form.spec(methods)
        except VolcamError as error:
            self.fail(error)
            return None
        self.runner.begin()
        self.status.running(spec.methods)
        return Job(image, card, spec, self.reviewing.mask)

    def start_comparison(self, image: ImageLike | None, methods: Sequence[str]) -> Job | None:
        """A job comparing two or more methods side by side, or ``None`` and :attr:`last_error`."""
        if len(methods) < 2:
            self.fail("select two or more methods to compare")
            return None
        return self.start(image, methods)

    def run(self, job: Job) -> Iterator[MapResult | None]:
        """Explain ``job`` (for a worker; :meth:`napari_volcam._job.Runner.run`)."""
        yield from self.runner.run(job)  # a generator function: napari's worker yields each map

    def accept(self, job: Job, result: MapResult | None) -> Shown | None:
        """What to show for one result of :meth:`run` (``None``: nothing, e.g. after a cancel)."""
        if result is None or self.runner.cancelled:
            return None
        layer = map_layer(job, result, self.display)
        status = self.status.shown(result.method, result.explanation)
        axes = result.geometry.get("axes", "zyx")
        self.reviewing.take(result.review, result.explanation, axes, result.onto, result.affine, job.image)
        go_to = None if job.compare else self.reviewing.peak()
        return Shown(layer, status, self.reviewing.localization_text(), go_to)

    def fail(self, error: BaseException | str) -> str:
        """Record a failure; returns its one line (also in :attr:`last_error`)."""
        return self.status.fail(error)

    def cancel(self) -> bool:
        """Stop after the step running now; what comes after is dropped. False if nothing runs."""
        if not self.runner.cancel():
            return False
        self.status.cancelled()
        return True

    def finish(self) -> None:
        self.runner.finish()

    def grid(self, job: Job, layer_names: Sequence[str]) -> list[GridCell]:
        return self.runner.grid(job, layer_names)
