"""One scan, one model, many explanations: the forward pass is paid once per scan.

A viewer explains the same scan again and again (another class, another gradient method, another
σ). :class:`ScanSession` keeps the scan's preprocessed input and one :class:`~volcam.engine.CamEngine`
per target layer, whose cached forward serves every later request, so a change of class or method
costs a backward through the head. It is the one per-scan pipeline: :meth:`volcam.Model.explain`
runs through it too. A clip through a frame model is prepared and run chunk by chunk (a windowed
clip model's, window by window along T), and one pass over it is kept the same way
(:class:`~volcam.engine.clip.ClipPass`: each batch's activations at the target layer and the head's
graph), so the next class or gradient method on a clip costs head backwards too.

By default a map is carried back to the scan's grid (the card's inverse transforms, full-resolution
work). A viewer asks for ``on="network"`` instead: the map stays on the network input's grid with the
affine that places it on the scan (the prepared input's, which MONAI's spatial transforms keep as the
voxel → world mapping of that grid), and is resampled to the scan's grid only when something asks
(:meth:`volcam.ScanExplanation.to_scan`, e.g. a writer).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from volcam.errors import InputError, MethodError, first_line
from volcam.model.explanation import GRIDS, ScanExplanation

if TYPE_CHECKING:  # the model module builds its explain on this one: no import back at run time
    from volcam.engine.clip import ClipPass
    from volcam.model.model import ClipBatches, Model

# what explain_frames takes besides the method's options
_CLIP_OPTIONS = ("frame_interval", "temporal_sigma_s", "min_frame_probability")

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
        self._engines: dict[tuple[Any, ...], Any] = {}  # (layers, call, reshape) -> engine
        self.forwards = 0  # forward passes run so far (for tests and timings); a clip's pass counts once
        self._passes: dict[int, Any] = {}  # engine id → the ForwardPass it holds
        self._clips: dict[tuple[Any, ...], ClipPass] = {}  # (layers, call, reshape) → a clip's kept pass
        self._clip: ClipBatches | None = None  # a clip's batches, for frame and windowed clip models
        self._prep: dict[str, float] = {}  # the current clip request's preparing

    def __enter__(self) -> ScanSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._passes.clear()
        self._clips.clear()

    def _engine(self, layer: str | Sequence[str], call: int | None = None, reshape: Any = None) -> Any:
        from volcam.engine.core import CamEngine

        key = ((layer,) if isinstance(layer, str) else tuple(layer), call, reshape)
        if key not in self._engines:
            model = self.model
            self._engines[key] = CamEngine(
                model.network,
                layer,
                device=model.device,
                labels=model.labels or None,
                call=call,
                reshape=reshape,
                output=model.output_of,
            )
        return self._engines[key]

    def explain(
        self,
        method: str = "gradcam",
        target: int | str | None = None,
        layer: str | Sequence[str] | None = None,
        *,
        on: str = "scan",
        call: int | None = None,
        reshape: Any = None,
        **options: Any,
    ) -> ScanExplanation:
        """Like :meth:`volcam.Model.explain` for one method, reusing this scan's forward.

        Args:
            on: ``"scan"``: the map on the scan's grid, as :meth:`volcam.Model.explain` gives it;
                ``"network"``: the map on the network input's grid, a ``MetaTensor`` whose affine
                places it on the scan (``grid == "network"``; :meth:`~volcam.ScanExplanation.to_scan`
                resamples it when needed); a clip's frames stacked along T, on the grid of the frames
                the network saw.
            call: which call of a layer the network runs more than once (0 the first, -1 the last).
            reshape: ``(B, N, C) -> (B, C, *grid)`` for a transformer whose token grid the network does
                not tell (:class:`~volcam.engine.CamEngine`).
            options: the method's, and for clips ``chunk_size`` (frames per batch, 16; the first
                request's holds for the session), ``frame_interval``, ``temporal_sigma_s`` and
                ``min_frame_probability`` (:func:`volcam.explain_clip`).

        ``timings`` holds ``preprocess`` (0 after the first call), ``explain`` and, on the scan's
        grid, ``invert`` seconds.
        """
        if on not in GRIDS:
            raise InputError(f"on={on!r}: a map lies on the 'scan' grid or on the 'network' grid")
        model = self.model
        if isinstance(model.network, torch.jit.ScriptModule):
            raise MethodError(
                f"{model.card.path.name}: a TorchScript network takes no Python hooks, which CAM methods need; "
                "use a card with the MONAI network and its state_dict (TorchScript cards can predict only)"
            )
        model.check_target(target)
        chosen = model.method_layer(method, layer)
        model.check_layer(chosen)
        given = dict(options)  # what the caller chose, recorded with the map (not the card's trained module)
        options = {**model.method_options(method, chosen), **options}  # a trained module (L-CAM) the card holds
        if model.card.kind == "frames" or model.card.window is not None:
            return self._explain_clip(method, target, chosen, on, (call, reshape), options, given)
        prep_seconds = 0.0  # paid once per scan
        if self._input is None:
            start = time.perf_counter()
            self._prepared = model.prepare(self.scan)
            self._input = self._prepared[None]
            prep_seconds = time.perf_counter() - start
        start = time.perf_counter()
        engine = self._engine(chosen, call, reshape)
        with model.network_errors(self._input.shape):  # a network failing in its own code: the card's
            try:
                forward = engine.forward(self._input)  # the cached pass when this scan has had one at this layer
            except RuntimeError:
                forward = None  # explain_input says what the network could not take
        if forward is not None and self._passes.get(id(engine)) is not forward:
            self._passes[id(engine)] = forward
            self.forwards += 1
        result = model.explain_input(engine, self._input, method, target, **options)
        timings = {"preprocess": prep_seconds, "explain": time.perf_counter() - start}
        if on == "network":
            return self._on_network(result, timings, given)
        return model.on_scan(result, self._prepared, self.scan, timings, given)

    def _on_network(self, result: Any, timings: dict[str, float], options: dict[str, Any]) -> ScanExplanation:
        """The engine's map on the network's grid, with the prepared input's affine (no resampling);
        its scan-grid twin is made once, when :meth:`ScanExplanation.to_scan` first asks."""
        from monai.data import MetaTensor

        model, prepared, scan = self.model, self._prepared, self.scan
        plain = result.map.as_tensor() if isinstance(result.map, MetaTensor) else result.map
        plain = plain[0] if plain.ndim == prepared.ndim + 1 else plain
        meta = {k: v for k, v in prepared.meta.items() if k != "applied_operations"}
        meta["affine"] = prepared.affine.detach().clone().cpu()
        cam = MetaTensor(plain.detach().float().cpu().clamp(0.0, 1.0).contiguous(), meta=meta)
        decision = model.named_decision(result)
        kept: list[ScanExplanation] = []

        def on_scan() -> ScanExplanation:
            if not kept:
                kept.append(model.on_scan(result, prepared, scan, dict(timings), options))
            return kept[0]

        return ScanExplanation(
            placed=cam,
            result=result,
            method=result.method,
            **decision,
            layers=tuple(result.layers),
            timings=timings,
            grid="network",
            carry_to_scan=on_scan,
            **model.provenance(options),
        )

    def mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A mask on the scan's grid ``(*S)`` or ``(1, *S)`` → on the network's grid ``(*S')``, boolean,
        where this session's ``on="network"`` maps lie (the card's geometric steps only)."""
        return self.model.preprocessing.mask(mask, like=self.scan)

    def _explain_clip(
        self,
        method: str,
        target: int | str | None,
        layer: str | Sequence[str],
        on: str,
        how: tuple[int | None, Any],
        options: dict[str, Any],
        given: dict[str, Any],
    ) -> ScanExplanation:
        """A clip through a frame model (or a windowed clip model) from this session's kept pass over
        its frames (windows), made on the first request at ``layer``: the maps stacked (stitched)
        along T, on the grid ``on`` asks."""
        from volcam.engine.clip import explain_frames
        from volcam.engine.windows import DEFAULT_MODE, explain_windows

        model = self.model
        chunk_size = int(options.pop("chunk_size", 16))
        clip_options = {k: options.pop(k) for k in _CLIP_OPTIONS if k in options}
        start = time.perf_counter()
        self._prep = {"preprocess": 0.0}  # the grid, and the chunks prepared for this request's passes
        if self._clip is None:
            self._clip = model.clip_batches(self.scan, chunk_size, self._prep)
            self._prepared = self._clip.grid  # where network-grid maps lie
            self._prep["preprocess"] = time.perf_counter() - start
        grid, window = self._clip.grid, model.card.window
        clip_pass = self._clip_pass(layer, *how)
        passes = clip_pass.passes
        labels = model.labels or None
        with model.network_errors(grid.shape):  # a network failing in its own code: the card's
            try:
                if window is None:
                    result = explain_frames(clip_pass, grid, method, target, labels=labels, **clip_options, **options)
                else:
                    result = explain_windows(
                        clip_pass, grid, self._clip.starts, method, target,
                        mode=window.mode or DEFAULT_MODE, labels=labels, **clip_options, **options,
                    )  # fmt: skip
            except RuntimeError as error:
                raise InputError(f"{model.name} cannot take this clip ({first_line(error)})") from None
        self.forwards += clip_pass.passes - passes
        prep_seconds = self._prep["preprocess"]
        timings = {"preprocess": prep_seconds, "explain": time.perf_counter() - start - prep_seconds}
        if on == "network":
            return self._on_network(result, timings, given)
        return model.on_scan(result, grid, self.scan, timings, given)

    def _clip_pass(self, layer: str | Sequence[str], call: int | None, reshape: Any) -> ClipPass:
        """This clip's pass at ``layer``: its frames (windows) through the model batch by batch, kept."""
        from volcam.engine.clip import ClipPass

        key = ((layer,) if isinstance(layer, str) else tuple(layer), call, reshape)
        if key not in self._clips and self._clip is not None:
            spacing = self._clip.grid.meta.get("spacing")  # (T, H, W): a frame's is (H, W)
            if spacing is not None and self.model.card.window is None:
                spacing = spacing[1:]
            self._clips[key] = ClipPass(self._engine(layer, call, reshape), self._clip.batches, spacing)
        return self._clips[key]
