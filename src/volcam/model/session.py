"""One scan, one model, many explanations: the forward pass is paid once per scan.

A viewer explains the same scan again and again (another class, another gradient method, another
σ). :class:`ScanSession` keeps the scan's preprocessed input and one :class:`~volcam.engine.CamEngine`
per target layer, whose cached forward serves every later request, so a change of class or method
costs a backward through the head and the map's way back to the scan's grid. It is the one per-scan
pipeline: :meth:`volcam.Model.explain` runs through it too. Frame models on clips have no single
forward to keep; their frames run through :func:`volcam.explain_clip` each time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from volcam.errors import InputError, MethodError, first_line
from volcam.model.explanation import ScanExplanation

if TYPE_CHECKING:  # the model module builds its explain on this one: no import back at run time
    from volcam.model.model import Model

__all__ = ["ScanSession"]


class ScanSession:
    """Explanations of one ``scan`` (``(C, *S)`` from :func:`volcam.load`) by one :class:`~volcam.Model`.

    Use as a context manager, or call :meth:`close` to drop the cached forward and its graph.
    """

    def __init__(self, model: Model, scan: torch.Tensor) -> None:
        self.model = model
        self.scan = scan
        self._input: torch.Tensor | None = None  # (1, C', *S'), the same tensor every call: the engine's cache key
        self._prepared: Any = None
        self._engines: dict[tuple[str, ...], Any] = {}
        self.forwards = 0  # forward passes run so far (for tests and timings)
        self._passes: dict[int, Any] = {}  # engine id → the ForwardPass it holds

    def __enter__(self) -> ScanSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._passes.clear()

    def _engine(self, layer: str | Sequence[str]) -> Any:
        from volcam.engine.core import CamEngine

        key = (layer,) if isinstance(layer, str) else tuple(layer)
        if key not in self._engines:
            model = self.model
            self._engines[key] = CamEngine(model.network, layer, device=model.device, labels=model.labels or None)
        return self._engines[key]

    def explain(
        self,
        method: str = "gradcam",
        target: int | str | None = None,
        layer: str | Sequence[str] | None = None,
        **options: Any,
    ) -> ScanExplanation:
        """Like :meth:`volcam.Model.explain` for one method, reusing this scan's forward.

        ``timings`` holds ``preprocess`` (0 after the first call), ``explain`` and ``invert`` seconds.
        """
        model = self.model
        if isinstance(model.network, torch.jit.ScriptModule):
            raise MethodError(
                f"{model.card.path.name}: a TorchScript network takes no Python hooks, which CAM methods need; "
                "use a card with the MONAI network and its state_dict (TorchScript cards can predict only)"
            )
        model.check_target(target)
        chosen = model.method_layer(method, layer)
        model.check_layer(chosen)
        options = {**model.method_options(method, chosen), **options}  # a trained module (L-CAM) the card holds
        prep_seconds = 0.0  # paid once per scan
        if self._input is None:
            start = time.perf_counter()
            self._prepared = model.prepare(self.scan)
            self._input = self._prepared[None]
            prep_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if model.card.kind == "frames":
            result = self._frames(method, target, chosen, options)
            timings = {"preprocess": prep_seconds, "explain": time.perf_counter() - start}
            return model.on_scan(result, self._prepared, self.scan, timings)
        engine = self._engine(chosen)
        try:
            forward = engine.forward(self._input)  # the cached pass when this scan has had one at this layer
        except RuntimeError:
            forward = None  # explain_input says what the network could not take
        if forward is not None and self._passes.get(id(engine)) is not forward:
            self._passes[id(engine)] = forward
            self.forwards += 1
        result = model.explain_input(engine, self._input, method, target, **options)
        timings = {"preprocess": prep_seconds, "explain": time.perf_counter() - start}
        return model.on_scan(result, self._prepared, self.scan, timings)

    def _frames(self, method: str, target: int | str | None, layer: str | Sequence[str], options: dict) -> Any:
        """A clip through a 2D frame model: frames as a batch, maps stacked back along time."""
        from volcam.engine.clip import explain_clip

        model = self.model
        try:
            return explain_clip(
                model.network, self._prepared, method, target, layer, labels=model.labels or None,
                device=model.device, **options,
            )  # fmt: skip
        except RuntimeError as error:
            raise InputError(f"{model.name} cannot take this clip ({first_line(error)})") from None
