"""Model: a network with its card; explains scans and gives each map back on the scan's own grid.

:func:`load_model` reads a card (:mod:`volcam.model.card`) or a MONAI bundle folder, builds its
network (:mod:`volcam.model.build`) and returns a :class:`Model`, whose :meth:`Model.explain` takes
a scan as :func:`volcam.load` returns it and gives the map back **in the scan's own geometry**
(same grid, same affine), through the inverse of the card's MONAI transforms.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volcam.devices import parse_device
from volcam.engine.windows import WINDOWS_PER_BATCH, window_batches, window_starts
from volcam.errors import (
    CardError,
    InputError,
    LayerError,
    TargetError,
)
from volcam.maps.resampled import is_resampled
from volcam.model.build import declared_outputs, network_of
from volcam.model.card import KINDS, ModelCard, read_card
from volcam.model.explanation import ScanExplanation
from volcam.model.forward import network_errors
from volcam.model.preprocess import Preprocessing

__all__ = ["CardError", "ClipBatches", "Model", "ModelCard", "ScanExplanation", "load_model", "read_card"]


@dataclass(frozen=True)
class ClipBatches:
    """A clip as its model takes it, streamed (:meth:`Model.clip_batches`)."""

    grid: Any  # the prepared clip (C', T, H', W'): a MetaTensor with its affine and inverse records
    batches: Callable[[], Iterator[torch.Tensor]]  # frames (t, C', H', W') or windows (B, C', F, H', W'), in order
    starts: tuple[int, ...]  # the first frame of each window; () for a frame model


# -- the model -------------------------------------------------------------------------------------


class Model:
    """A network with its card: preprocessing, labels, default layer; explains scans in their geometry."""

    def __init__(self, network: nn.Module, card: ModelCard, device: str | torch.device | None = None) -> None:
        self.network = network.eval()
        self.card = card
        self.device = parse_device(device)
        self.network.to(self.device)
        self.preprocessing = Preprocessing(card.preprocessing, card.in_channels, where=str(card.path))
        self._lcam: dict[str, Any] = {}
        self._card_sha256: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def card_sha256(self) -> str | None:
        """SHA-256 of the card file as read (what derived DICOM objects record); ``None`` if unreadable."""
        if self._card_sha256 is None:
            import hashlib

            try:
                self._card_sha256 = hashlib.sha256(Path(self.card.path).read_bytes()).hexdigest()
            except OSError:
                return None
        return self._card_sha256

    def layer_choices(self) -> list[str]:
        """Names a person would pick from: the network's top-level layers, without norms, activations,
        pooling and the linear head (nothing spatial to explain there, or nothing of its own)."""
        plain = (nn.Linear, nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)
        skipped = ("torch.nn.modules.activation", "torch.nn.modules.batchnorm", "torch.nn.modules.pooling")
        return [
            name
            for name, module in self.network.named_children()
            if not isinstance(module, plain) and type(module).__module__ not in skipped
        ]

    def check_layer(self, layer: str | Sequence[str]) -> None:
        names = dict(self.network.named_modules())
        for one in [layer] if isinstance(layer, str) else layer:
            if one != "auto" and one not in names:
                choices = ", ".join(self.layer_choices())
                raise LayerError(
                    f"{self.card.path.name}: the model has no layer {one!r}; its layers: {choices}"
                    " (or any dotted name inside them)"
                )

    def check_scan(self, scan: torch.Tensor) -> None:
        """A one-line :class:`InputError` when the scan is not what the model takes (kind, dimensions)."""
        axes = (getattr(scan, "meta", None) or {}).get("axes")
        what = {"xyz": "a volume", "thw": "a clip"}.get(axes or "", f"an array of {scan.ndim - 1} axes")
        wants_clip = self.card.kind in ("frames", "clip")
        if scan.ndim != 4 or (axes is not None and (axes == "thw") != wants_clip):
            raise InputError(
                f"{self.name} explains {KINDS[self.card.kind]}; this input is {what} of shape {tuple(scan.shape)}"
            )
        meta = getattr(scan, "meta", None)
        modality = (meta or {}).get("modality")
        if self.card.modality and modality not in (None, "OT", self.card.modality):
            raise InputError(f"{self.name} was trained on {self.card.modality}; this scan is {modality}")
        if self.card.modality and modality in (None, "OT"):
            self._check_values(scan, meta)

    def _check_values(self, scan: torch.Tensor, meta: dict | None) -> None:
        """A scan that does not say its modality (a NIfTI) holds values of the card's (a CT model: HU), or
        a warning says so (:mod:`volcam.io.ranges`); judged once per scan. A scan that says its modality
        was judged when it was read."""
        from volcam.io.image import warn_problem
        from volcam.io.ranges import range_problem

        if meta is not None and meta.get("values_judged_as") == self.card.modality:
            return
        problem = range_problem(scan.detach().cpu() if scan.device.type != "cpu" else scan.detach(), self.card.modality)
        if meta is not None:
            meta["values_judged_as"] = self.card.modality
        if problem is not None:
            where = (meta or {}).get("filename_or_obj") or "the scan"
            found = meta.setdefault("problems", []) if meta is not None else []
            warn_problem(found, f"{where}: {problem} ({self.name} takes {self.card.modality} values)")

    def check_target(self, target: int | str | None) -> None:
        """A one-line :class:`TargetError` for a label the model does not have, listing those it has."""
        if isinstance(target, str) and self.labels and target not in self.labels:
            raise TargetError(f"{self.name} has no class {target!r}; its labels: {', '.join(self.labels)}")

    def prepare(self, scan: torch.Tensor) -> Any:
        """The scan as the network's input ``(C, *S')`` (a MetaTensor that can be inverted)."""
        self.check_scan(scan)
        # the transforms run where the network runs: on a GPU the scan goes up once, as stored (int16)
        prepared = self.preprocessing(scan.to(self.device))
        prepared.meta["spacing"] = tuple(float(v) for v in prepared.pixdim)  # after resampling, not the scan's
        return prepared

    def prepare_clip(
        self, scan: torch.Tensor, chunk_size: int = 16
    ) -> tuple[Any, Callable[[], Iterable[torch.Tensor]]]:
        """A clip ``(C, T, H, W)`` streamed into the network's input, never whole as floats at full size.

        Returns:
            the prepared clip's grid: a ``MetaTensor`` ``(C', T, H', W')`` with the affine and the
            records :meth:`on_scan` inverts through, its values not made
            (:meth:`Preprocessing.grid`); and a function giving the prepared frames ``chunk_size``
            at a time, ``(C', t, H', W')`` on the model's device, each chunk going up as stored.
            When the card's steps do not prepare frame by frame (a resampling along T, an intensity
            step that reads the whole clip) the clip is prepared whole, once, as :meth:`prepare`
            does, and the grid is that prepared clip.
        """
        self.check_scan(scan)
        if chunk_size < 1:
            raise InputError("chunk_size must be at least 1")
        grid = self.preprocessing.grid(scan)
        if grid is None or not self.preprocessing.frame_by_frame(scan, grid):
            prepared = self.prepare(scan)
            return prepared, lambda: iter(prepared.as_tensor().split(chunk_size, dim=1))
        grid.meta["spacing"] = tuple(float(v) for v in grid.pixdim)  # after resampling, not the scan's
        return grid, lambda: self.preprocessing.chunks(scan, chunk_size, self.device)

    def clip_batches(
        self, scan: torch.Tensor, chunk_size: int = 16, timings: dict[str, float] | None = None
    ) -> ClipBatches:
        """A clip ``(C, T, H, W)`` as a frame model or a windowed clip model takes it, streamed
        (:meth:`prepare_clip`): its frames ``(t, C', H', W')`` ``chunk_size`` at a time, or its windows
        along T ``(B, C', frames, H', W')`` (the card's ``window``; the prepared clip, at the network's
        size, is made for each pass and dropped after it). ``timings`` gains the seconds spent
        preparing chunks under ``preprocess``."""
        grid, chunks = self.prepare_clip(scan, chunk_size)

        def prepared() -> Iterator[torch.Tensor]:
            found = iter(chunks())
            while True:
                start = time.perf_counter()
                chunk = next(found, None)
                if timings is not None:
                    timings["preprocess"] = timings.get("preprocess", 0.0) + time.perf_counter() - start
                if chunk is None:
                    return
                yield chunk

        window = self.card.window
        if window is None:
            return ClipBatches(grid, lambda: (chunk.permute(1, 0, 2, 3) for chunk in prepared()), ())
        starts = window_starts(int(grid.shape[1]), window.frames, window.stride)

        def windows() -> Iterator[torch.Tensor]:
            clip = torch.cat(list(prepared()), dim=1)  # (C', T, H', W')
            yield from window_batches(clip, starts, window.frames, WINDOWS_PER_BATCH)

        return ClipBatches(grid, windows, starts)

    def predict(self, scan: torch.Tensor) -> dict[str, float]:
        """Label → probability for one scan (a clip: the mean frame, or window, probability)."""
        from volcam.targets import probabilities

        with torch.no_grad():
            if self.card.kind == "frames" or self.card.window is not None:
                out = torch.cat([self._run(batch) for batch in self.clip_batches(scan).batches()])
            else:
                out = self._run(self.prepare(scan).as_tensor().to(self.device)[None])
        probs = probabilities(out).mean(0)
        return {self.label(i): float(p) for i, p in enumerate(probs)}

    def lcam_module(self, variant: str, layer: str | Sequence[str] | None = None) -> Any:
        """The card's trained L-CAM module for ``variant`` (``"fm"``/``"img"``), loaded once.

        Raises:
            CardError: the card records none, its file is missing or is not one, or it was trained
                for another layer (``layer``, when given) or another class set.
        """
        from volcam.model.weights import load_lcam

        entry = self.card.lcam.get(variant)
        if entry is None:
            raise CardError(
                f"{self.card.path}: no trained L-CAM-{variant.capitalize()} module in this card; train one with "
                f"volcam train-lcam {self.card.path} IMAGES --variant {variant}"
            )
        names = [layer] if isinstance(layer, str) else list(layer or [])
        if layer is not None and names != [entry.get("layer")]:
            shown = ", ".join(names)
            raise CardError(
                f"{self.card.path}: its L-CAM-{variant.capitalize()} module was trained at layer "
                f"{entry.get('layer')!r}, not {shown!r}; leave the layer out or train one there "
                f"(volcam train-lcam --layer {shown})"
            )
        if variant not in self._lcam:
            where = str(self.card.path)
            module, _ = load_lcam(
                entry["weights"], variant=variant, layer=entry.get("layer"), labels=self.labels, where=where
            )
            self._lcam[variant] = module
        return self._lcam[variant]

    def refresh_card(self) -> None:
        """Re-read the card file, e.g. after :func:`volcam.train_lcam` recorded a module in it."""
        self.card = read_card(self.card.path)
        self._lcam.clear()
        self._card_sha256 = None

    def method_layer(self, method: str, layer: str | Sequence[str] | None = None) -> str | Sequence[str]:
        """The target layer ``method`` runs at: ``layer`` if given, else the one its trained module
        needs (L-CAM), ``"auto"`` for CAM, else the card's."""
        if layer is not None:
            return layer
        variant = _lcam_variant(method)
        if variant is not None and variant in self.card.lcam:
            return str(self.card.lcam[variant].get("layer", self.card.layer))
        return "auto" if method == "cam" else self.card.layer

    def method_options(self, method: str, layer: str | Sequence[str] | None = None) -> dict[str, Any]:
        """What ``method`` needs from the card besides the network: the trained module for L-CAM."""
        variant = _lcam_variant(method)
        if variant is None:
            return {}
        return {"module": self.lcam_module(variant, self.method_layer(method, layer))}

    def check_outputs(self, outputs: int) -> None:
        """A one-line :class:`CardError` when the card's labels do not name the network's ``outputs``
        classes one for one (a single-logit network has two classes: ``-logit`` and ``logit``)."""
        if self.labels and len(self.labels) != outputs and not (outputs == 1 and len(self.labels) == 2):
            raise CardError(
                f"{self.card.path}: the card names {len(self.labels)} labels ({', '.join(self.labels)[:80]}); "
                f"the network gives {outputs} outputs"
            )

    def output_of(self, output: Any) -> torch.Tensor:
        """The tensor the card's ``"output"`` picks from the network's raw ``output`` (the engine's
        ``output=``); a :class:`CardError` naming the card when the network returns several tensors
        and the card does not say which, or names one it does not return."""
        from volcam.targets import select_output

        try:
            picked = select_output(output, self.card.output)
        except InputError as error:
            raise CardError(f"{self.card.path}: {error}") from None
        if picked.ndim >= 2:  # every forward passes here: labels are checked before any names a class
            self.check_outputs(int(picked.shape[1]))
        return picked

    def network_errors(self, shape: Sequence[int]) -> contextlib.AbstractContextManager[None]:
        """The guard around a forward of this model's network on an input of ``shape``: what it cannot
        take is an :class:`InputError`, what its own code raises a :class:`CardError` naming the card
        (:func:`volcam.model.forward.network_errors`)."""
        return network_errors(self.name, self.card.path, shape)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        with self.network_errors(batch.shape):
            out = self.network(batch)
        out = self.output_of(out)
        if out.ndim >= 2:
            self.check_outputs(int(out.shape[1]))
        return out

    def label(self, index: int) -> str:
        """Class ``index``'s label on the card, or the index as text when the card names none for it."""
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)

    def named_decision(self, result: Any) -> dict[str, Any]:
        """What a :class:`ScanExplanation` says of ``result``'s decision (a batch's first sample, or a
        clip's one class), in the card's labels: ``prediction``, ``target`` (``"custom"`` for a custom
        target) and ``probabilities`` (label → probability); a :class:`CardError` when the labels do not
        name the network's outputs."""
        klass, prediction, given = result.decision(0)
        probs = given if given is not None else torch.zeros(0)
        if probs.numel():
            self.check_outputs(int(probs.numel()))
        return {
            "prediction": self.label(prediction),
            "target": self.label(klass) if klass >= 0 else "custom",
            "probabilities": {self.label(i): round(float(p), 6) for i, p in enumerate(probs)},
        }

    def explain_input(self, engine: Any, x: torch.Tensor, method: str, target: int | str | None, **options: Any) -> Any:
        """``engine.explain`` on a prepared input ``(1, C', *S')``; a network that cannot take it is an
        :class:`InputError` naming the model, one that fails in its own code a :class:`CardError`
        naming the card (:meth:`network_errors`), not a traceback."""
        with self.network_errors(x.shape):
            return engine.explain(x, method, target, **options)

    def on_scan(
        self,
        result: Any,
        prepared: Any,
        scan: torch.Tensor,
        timings: dict[str, float],
        options: dict[str, Any] | None = None,
    ) -> ScanExplanation:
        """A :class:`CamResult` (or a clip's :class:`ClipResult`) on the network's grid → the
        :class:`ScanExplanation` on the scan's grid, labels named; ``timings`` gains ``invert``;
        ``options`` (the caller's method options) are recorded with the model's card name and hash."""
        start = time.perf_counter()
        cam = self.preprocessing.invert(
            result.map[0] if result.map.ndim == prepared.ndim + 1 else result.map, prepared, like=scan, lazily=True
        )
        cam = cam if is_resampled(cam) else _on_scan(cam, scan)
        decision = self.named_decision(result)
        return ScanExplanation(
            placed=cam,
            result=result,
            method=result.method,
            **decision,
            layers=tuple(result.layers),
            timings={**timings, "invert": time.perf_counter() - start},
            **self.provenance(options),
        )

    def provenance(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a :class:`ScanExplanation` records of how it was made: the card's name and SHA-256 and
        the caller's method options (numbers, text and flags as given; anything else by its type's name)."""
        plain = (str, int, float, bool, type(None))
        given = {
            name: value if isinstance(value, plain) else type(value).__name__ for name, value in (options or {}).items()
        }
        return {"model": self.name, "model_sha256": self.card_sha256, "options": given}

    def explain(
        self,
        scan: torch.Tensor,
        method: str | Sequence[str] = "gradcam",
        target: int | str | None = None,
        layer: str | Sequence[str] | None = None,
        **options: Any,
    ) -> ScanExplanation | list[ScanExplanation]:
        """Explain ``scan`` (``(C, *S)`` from :func:`volcam.load`) and map the result back onto it.

        Args:
            scan: a volume ``(C, X, Y, Z)`` or a clip ``(C, T, H, W)``, as :func:`volcam.load` gives.
            method: one method name, or several (they share one forward pass on a volume).
            target: a label or class index; ``None`` explains the predicted class.
            layer: target layer(s); ``None`` takes the card's (``"auto"`` for ``cam``, which needs
                the layer feeding the pooling).
            options: method options and ``gradient_sigma_mm``, ``temporal_sigma_s`` (clips), ``call=``
                (a layer run more than once), ``reshape=`` (tokens whose grid the network does not
                tell) ...

        Returns:
            a :class:`ScanExplanation` per method (one, or a list when ``method`` is a list), whose
            ``map`` has the scan's shape and affine.
        """
        from volcam.model.session import ScanSession

        methods = [method] if isinstance(method, str) else list(method)
        with ScanSession(self, scan) as session:  # the one per-scan pipeline: one forward for all methods
            explanations = [session.explain(name, target, layer, **options) for name in methods]
        return explanations[0] if isinstance(method, str) else explanations


def _lcam_variant(method: str) -> str | None:
    """``"fm"``/``"img"`` for the L-CAM method names, else ``None``."""
    key = method.lower().strip()
    return key.removeprefix("lcam-") if key in ("lcam-fm", "lcam-img") else None


def _on_scan(cam: torch.Tensor, scan: torch.Tensor) -> Any:
    """The inverted map with exactly the scan's metadata and affine (no float round-off from the inverse)."""
    from monai.data import MetaTensor

    plain = cam.as_tensor() if isinstance(cam, MetaTensor) else cam
    if tuple(plain.shape[1:]) != tuple(scan.shape[1:]):
        raise InputError(
            f"the map came back as {tuple(plain.shape[1:])}, not on the scan's grid {tuple(scan.shape[1:])}"
        )
    meta = dict(getattr(scan, "meta", {}) or {})
    # no .contiguous(): a map back on a scan's grid is laid out x-fastest, as NIfTI and DICOM store it,
    # and a C-order copy would transpose all of it (0.7 s at 512 × 512 × 300)
    return MetaTensor(plain, meta=meta) if meta else plain


def load_model(path: str | os.PathLike, *, trust: bool = False, device: str | torch.device | None = None) -> Model:
    """Load a model card (JSON) or a MONAI bundle folder as a :class:`Model`.

    Args:
        path: a card file, or a MONAI bundle folder (``configs/inference.json`` + ``models/model.pt``;
            its labels from ``configs/metadata.json``, no preprocessing: give a card that points at
            the bundle for that).
        trust: allow weights that need more than ``torch.load(weights_only=True)`` (they can run
            code when loaded) and bundle configs with Python expressions. Only for files you trust.
        device: where to run (CPU by default).

    Raises:
        CardError: the card is unreadable, names an unknown network or transform, its network
            does not match the weights (the message says which parameters differ), or its labels do
            not name the network's outputs one for one (:func:`volcam.model.build.declared_outputs`).
    """
    parse_device(device)  # a device this machine lacks is said before anything loads
    network, card = network_of(Path(path), trust)
    model = Model(network, card, device)
    outputs = declared_outputs(network, card)
    if outputs is not None:  # labels that do not name the network's outputs: said now, not mid-explanation
        model.check_outputs(outputs)
    return model
