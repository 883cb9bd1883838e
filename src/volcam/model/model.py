"""Model cards: a network, its weights, its preprocessing, its labels and default layer, in one file.

A card is a small JSON file next to the weights::

    {
      "volcam_card": 1,
      "name": "demo-ct-covid",
      "kind": "volume",                      # "volume" (C, X, Y, Z), "frames" (2D frame model on a clip
                                             #  (C, T, H, W)) or "clip" (spatio-temporal 3D model)
      "labels": ["normal", "covid"],
      "layer": "layer2",                     # default target layer
      "in_channels": 1,
      "network": {"monai": "ResNet", "args": {...}},   # or {"torchscript": "net.pt"}
                                                        # or {"bundle": "a MONAI bundle folder"}
      "weights": "ct_covid.pt",              # a state_dict, relative to the card
      "preprocessing": [{"name": "Orientation", "args": {"axcodes": "RAS"}}, ...],
      "lcam": {"fm": {"weights": "ct_covid.lcam-fm.pt", "layer": "layer2", "labels": [...]}}
                                             # optional: trained L-CAM modules (volcam train-lcam)
    }

:func:`load_model` reads a card (or a MONAI bundle folder: ``configs/inference.json`` +
``models/model.pt``) and returns a :class:`Model`, whose :meth:`Model.explain` takes a scan as
:func:`volcam.load` returns it and gives the map back **in the scan's own geometry** (same grid,
same affine), through the inverse of the card's MONAI transforms.

A card and a bundle are data (see :mod:`volcam.allowlist`): without ``trust=True`` the network is an
allow-listed MONAI class or factory with plain JSON arguments, built by volcam, and weights load with
``torch.load(weights_only=True)`` (plain tensors only, nothing executed). A pickled model object, a
bundle config with expressions, references to code or parser directives, and TorchScript programs
all need ``trust``. Every field is type-checked on reading: a malformed card is one line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volcam.devices import parse_device
from volcam.errors import (
    CardError,
    InputError,
    LayerError,
    MethodError,
    TargetError,
    first_line,
    one_line,
)
from volcam.model.allowlist import build_network, check_plain, resolve_references
from volcam.model.preprocess import Preprocessing
from volcam.model.weights import fit_state, load_weights

__all__ = ["CardError", "Model", "ModelCard", "ScanExplanation", "load_model", "read_card"]

KINDS = {"volume": "volumes (C, X, Y, Z)", "frames": "clips (C, T, H, W) frame by frame", "clip": "clips (C, T, H, W)"}


@dataclass(frozen=True)
class ModelCard:
    """What a card file says (paths resolved against the card's folder)."""

    path: Path
    name: str
    kind: str
    labels: tuple[str, ...]
    layer: str
    in_channels: int
    network: dict[str, Any]
    weights: Path | None
    preprocessing: tuple[dict[str, Any], ...]
    modality: str | None = None
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    lcam: dict[str, dict[str, Any]] = field(default_factory=dict)


def _field(data: Mapping[str, Any], key: str, kind: type, default: Any, path: Path) -> Any:
    """``data[key]`` when it has the JSON type ``kind`` (``default`` when absent or null); else one line
    naming the field. ``true`` is no number here, though Python counts it as one."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        noun = {str: "a string", int: "a whole number", list: "a list", dict: "an object"}.get(kind, kind.__name__)
        raise CardError(f"{path}: '{key}' is {one_line(json.dumps(value))[:60]}; it should be {noun}")
    return value


def _strings(data: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    """A list of strings (labels, a layer list); a lone string is not split into characters."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CardError(f'{path}: \'{key}\' should be a list of names, e.g. ["normal", "covid"]')
    if len(set(value)) != len(value):
        raise CardError(f"{path}: '{key}' names a class twice")
    return tuple(value)


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and check a card file (JSON); a :class:`CardError` naming the file and the field if it is not one.

    Every field is checked for its type here, so a malformed card is one line before anything loads.
    """
    path = Path(path)
    if not path.exists():
        raise CardError(f"{path}: no such model card")
    if not path.is_file():
        raise CardError(f"{path}: not a regular file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CardError(f"{path}: not a JSON model card ({error})") from None
    if not isinstance(data, dict) or "network" not in data:
        raise CardError(f"{path}: a model card is a JSON object with at least 'network' and 'labels'")
    kind = _field(data, "kind", str, "volume", path)
    if kind not in KINDS:
        raise CardError(f"{path}: kind {one_line(kind)[:40]!r}; use one of {', '.join(KINDS)}")
    network = data["network"]
    if not isinstance(network, dict) or len({"monai", "torchscript", "bundle"} & set(network)) != 1:
        raise CardError(f"{path}: 'network' needs one of 'monai' (a MONAI network name), 'torchscript' or 'bundle'")
    for key in ("monai", "torchscript", "bundle"):
        if key in network and (not isinstance(network[key], str) or not network[key]):
            raise CardError(f"{path}: network.{key} should be a name")
    check_plain(network.get("args", {}), path, ("network", "args"))
    folder = Path(os.path.realpath(path)).parent  # a linked card's files sit beside the card itself
    weights = _field(data, "weights", str, None, path)
    in_channels = _field(data, "in_channels", int, 1, path)
    if not 1 <= in_channels <= 64:
        raise CardError(f"{path}: 'in_channels' is {in_channels}; a network takes 1 to 64 channels")
    layer = _field(data, "layer", str, "auto", path) or "auto"
    steps = _field(data, "preprocessing", list, [], path)
    return ModelCard(
        path=path,
        name=one_line(_field(data, "name", str, path.stem, path)) or path.stem,
        kind=kind,
        labels=_strings(data, "labels", path),
        layer=layer,
        in_channels=in_channels,
        network=dict(network),
        weights=folder / weights if weights else None,
        preprocessing=tuple(steps),
        modality=_field(data, "modality", str, None, path),
        description=str(_field(data, "description", str, "", path)),
        metrics=_metrics(data.get("metrics"), folder, path),
        lcam=_lcam_entries(data.get("lcam"), folder, path),
    )


def _metrics(value: Any, folder: Path, path: Path) -> dict[str, Any]:
    """The card's recorded metrics: an object, or the name of a JSON file beside the card."""
    if value is None or value == {}:
        return {}
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise CardError(f"{path}: 'metrics' should be an object or a JSON file name")
    file = folder / value
    if not file.is_file():  # informational only: a card copied without it still works
        return {}
    try:
        metrics = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CardError(f"{file}: the card's metrics file is not JSON ({first_line(error)})") from None
    if not isinstance(metrics, dict):
        raise CardError(f"{file}: the card's metrics file should hold a JSON object")
    return metrics


def _lcam_entries(value: Any, folder: Path, path: Path) -> dict[str, dict[str, Any]]:
    """The card's trained L-CAM modules, variant -> {"weights": Path, "layer", "labels"}."""
    if not value:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("weights"), str) for v in value.values()
    ):
        raise CardError(f"{path}: 'lcam' maps a variant (fm, img) to {{'weights': file, 'layer': name, 'labels'}}")
    return {str(k): {**v, "weights": folder / v["weights"]} for k, v in value.items()}


# -- weights and networks ---------------------------------------------------------------------------


def _torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise CardError(f"{path}: no such TorchScript file")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise CardError(f"{path}: not a TorchScript model ({first_line(error)})") from None


def _parsed_network(config_path: Path) -> nn.Module:
    """``network_def`` through MONAI's ``ConfigParser``: runs the config's code, so only with ``trust``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_path)
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as error:  # the bundle's own code can raise anything; say which bundle
        raise CardError(f"{config_path}: cannot build network_def ({first_line(error)})") from None
    if not isinstance(network, nn.Module):
        raise CardError(f"{config_path}: network_def built a {type(network).__name__}, not a network")
    return network


def _bundle(folder: Path, trust: bool) -> tuple[nn.Module, tuple[str, ...]]:
    """A MONAI bundle's network (``network_def`` of ``configs/inference.json``) with ``models/model.pt``."""
    config_path = folder / "configs" / "inference.json"
    weights = folder / "models" / "model.pt"
    if not config_path.is_file():
        raise CardError(f"{folder}: not a MONAI bundle (no configs/inference.json)")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CardError(f"{config_path}: not JSON ({error})") from None
    definition = config.get("network_def") if isinstance(config, dict) else None
    if not isinstance(definition, dict):
        raise CardError(f"{config_path}: no 'network_def' to build the network from")
    if trust:
        network = _parsed_network(config_path)
    else:
        # Data only: references to plain values are followed, then the allow-list decides; MONAI's
        # ConfigParser (which imports and calls what the config names) is never reached.
        definition = resolve_references(definition, config, config_path)
        if not isinstance(definition, dict):
            raise CardError(f"{config_path}: network_def should be an object")
        target = definition.get("_target_")
        if not isinstance(target, str):
            raise CardError(f"{config_path}: network_def._target_ should name a MONAI network")
        args = {k: v for k, v in definition.items() if k != "_target_"}
        network = build_network(
            target, args, config_path, ("network_def", "_target_"), weights=weights, args_at=("network_def",)
        )
    fit_state(network, load_weights(weights, trust), config_path, weights)
    labels: tuple[str, ...] = ()
    metadata = folder / "configs" / "metadata.json"
    if metadata.is_file():
        try:
            outputs = json.loads(metadata.read_text()).get("network_data_format", {}).get("outputs", {})
            channels = next(iter(outputs.values())).get("channel_def", {})
            labels = tuple(str(channels[k]) for k in sorted(channels, key=int))
        except (ValueError, StopIteration, AttributeError, KeyError):
            labels = ()
    return network, labels


# -- the model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanExplanation:
    """A map in the scan's own geometry, and what it explains.

    Attributes:
        map: ``(1, *S)`` in [0, 1] on the scan's grid, a ``MetaTensor`` with the scan's affine.
        result: the engine's :class:`~volcam.CamResult` (volumes) or :class:`~volcam.ClipResult`
            (clips), on the network's grid.
        prediction: the predicted label.
        target: the label explained.
        probabilities: label → probability (a clip's: mean over frames).
        layers: the target layer(s).
        timings: wall seconds of ``preprocess``, ``explain`` and ``invert``.
    """

    map: Any
    result: Any
    method: str
    prediction: str
    target: str
    probabilities: dict[str, float]
    layers: tuple[str, ...]
    timings: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record: prediction, probabilities, method, layer, target and timings."""
        return {
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "method": self.method,
            "layer": list(self.layers),
            "target": self.target,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


class Model:
    """A network with its card: preprocessing, labels, default layer; explains scans in their geometry."""

    def __init__(self, network: nn.Module, card: ModelCard, device: str | torch.device | None = None) -> None:
        self.network = network.eval()
        self.card = card
        self.device = parse_device(device)
        self.network.to(self.device)
        self.preprocessing = Preprocessing(card.preprocessing, card.in_channels, where=str(card.path))
        self._lcam: dict[str, Any] = {}

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def name(self) -> str:
        return self.card.name

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
        modality = (getattr(scan, "meta", None) or {}).get("modality")
        if self.card.modality and modality not in (None, "OT", self.card.modality):
            raise InputError(f"{self.name} was trained on {self.card.modality}; this scan is {modality}")

    def check_target(self, target: int | str | None) -> None:
        """A one-line :class:`TargetError` for a label the model does not have, listing those it has."""
        if isinstance(target, str) and self.labels and target not in self.labels:
            raise TargetError(f"{self.name} has no class {target!r}; its labels: {', '.join(self.labels)}")

    def prepare(self, scan: torch.Tensor) -> Any:
        """The scan as the network's input ``(C, *S')`` (a MetaTensor that can be inverted)."""
        self.check_scan(scan)
        prepared = self.preprocessing(scan)
        prepared.meta["spacing"] = tuple(float(v) for v in prepared.pixdim)  # after resampling, not the scan's
        return prepared

    def predict(self, scan: torch.Tensor) -> dict[str, float]:
        """Label → probability for one scan (a clip: mean frame probability)."""
        from volcam.targets import probabilities

        prepared = self.prepare(scan)
        x = prepared.as_tensor().to(self.device)
        with torch.no_grad():
            batch = x.permute(1, 0, 2, 3) if self.card.kind == "frames" else x[None]
            out = self._run(batch)
        probs = probabilities(out).mean(0)
        return {self._label(i): float(p) for i, p in enumerate(probs)}

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

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            out = self.network(batch)
        except RuntimeError as error:
            raise InputError(
                f"{self.name} cannot take an input of shape {tuple(batch.shape)} after preprocessing "
                f"({first_line(error)})"
            ) from None
        if torch.is_tensor(out) and out.ndim >= 2:
            self.check_outputs(int(out.shape[1]))
        return out

    def _label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)

    def explain_input(self, engine: Any, x: torch.Tensor, method: str, target: int | str | None, **options: Any) -> Any:
        """``engine.explain`` on a prepared input ``(1, C', *S')``; a network that cannot take it is an
        :class:`InputError` naming the model, not a traceback."""
        try:
            return engine.explain(x, method, target, **options)
        except RuntimeError as error:
            raise InputError(
                f"{self.name} cannot take an input of shape {tuple(x.shape)} after preprocessing ({first_line(error)})"
            ) from None

    def on_scan(self, result: Any, prepared: Any, scan: torch.Tensor, timings: dict[str, float]) -> ScanExplanation:
        """A :class:`CamResult` (or a clip's :class:`ClipResult`) on the network's grid → the
        :class:`ScanExplanation` on the scan's grid, labels named; ``timings`` gains ``invert``."""
        start = time.perf_counter()
        cam = self.preprocessing.invert(result.map[0] if result.map.ndim == prepared.ndim + 1 else result.map, prepared)
        cam = _on_scan(cam, scan)
        if hasattr(result, "target_class"):  # a clip through a frame model: one class for the clip
            klass, prediction, probs = result.target_class, result.predicted, result.probabilities
        else:
            klass, prediction = int(result.classes[0]), int(result.predicted[0])
            probs = result.probabilities[0] if result.probabilities is not None else torch.zeros(0)
        if probs.numel():
            self.check_outputs(int(probs.numel()))
        return ScanExplanation(
            map=cam,
            result=result,
            method=result.method,
            prediction=self._label(prediction),
            target=self._label(klass) if klass >= 0 else "custom",
            probabilities={self._label(i): round(float(p), 6) for i, p in enumerate(probs)},
            layers=tuple(result.layers),
            timings={**timings, "invert": time.perf_counter() - start},
        )

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
            options: method options and ``gradient_sigma_mm``, ``temporal_sigma_s`` (clips) ...

        Returns:
            a :class:`ScanExplanation` per method (one, or a list when ``method`` is a list), whose
            ``map`` has the scan's shape and affine.
        """
        from volcam.engine.clip import explain_clip
        from volcam.engine.core import CamEngine

        methods = [method] if isinstance(method, str) else list(method)
        if isinstance(self.network, torch.jit.ScriptModule):
            raise MethodError(
                f"{self.card.path.name}: a TorchScript network takes no Python hooks, which CAM methods need; "
                "use a card with the MONAI network and its state_dict (TorchScript cards can predict only)"
            )
        start = time.perf_counter()
        prepared = self.prepare(scan)
        prep_seconds = time.perf_counter() - start
        explanations = []
        engines: dict[tuple[str, ...], CamEngine] = {}  # one per layer choice, each keeps its forward
        x = prepared[None]
        try:
            for name in methods:
                chosen = self.method_layer(name, layer)
                self.check_layer(chosen)
                method_options = {**self.method_options(name, chosen), **options}
                start = time.perf_counter()
                if self.card.kind == "frames":
                    try:
                        result = explain_clip(
                            self.network, prepared, name, target, chosen, labels=self.labels or None,
                            device=self.device, **method_options,
                        )  # fmt: skip
                    except RuntimeError as error:
                        raise InputError(f"{self.name} cannot take this clip ({first_line(error)})") from None
                else:
                    key = (chosen,) if isinstance(chosen, str) else tuple(chosen)
                    if key not in engines:
                        engines[key] = CamEngine(self.network, chosen, device=self.device, labels=self.labels or None)
                    result = self.explain_input(engines[key], x, name, target, **method_options)
                timings = {"preprocess": prep_seconds, "explain": time.perf_counter() - start}
                explanations.append(self.on_scan(result, prepared, scan, timings))
                prep_seconds = 0.0  # paid once
        finally:
            for engine in engines.values():
                engine.close()
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
    return MetaTensor(plain.contiguous(), meta=meta) if meta else plain


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
        CardError: the card is unreadable, names an unknown network or transform, or its network
            does not match the weights (the message says which parameters differ).
    """
    path = Path(path)
    if path.is_dir():
        network, labels = _bundle(path, trust)
        card = ModelCard(
            path=path / "configs" / "inference.json",
            name=path.name,
            kind="volume",
            labels=labels,
            layer="auto",
            in_channels=1,
            network={"bundle": str(path)},
            weights=path / "models" / "model.pt",
            preprocessing=(),
        )
        return Model(network, card, device)
    card = read_card(path)
    spec = card.network
    if "monai" in spec:
        if card.weights is None:
            raise CardError(f"{card.path}: a MONAI network needs 'weights' (a state_dict file)")
        network = build_network(
            spec["monai"],
            spec.get("args", {}),
            card.path,
            ("network", "monai"),
            weights=card.weights,
            args_at=("network", "args"),
        )
        fit_state(network, load_weights(card.weights, trust), card.path, card.weights)
    elif "torchscript" in spec:
        if not trust:  # a TorchScript file is a program: it runs its own code on every call
            raise CardError(
                f"{card.path}: network.torchscript is a program, not data; "
                "load it only if you trust the file (trust=True, volcam --trust-weights)"
            )
        network = _torchscript(card.path.parent / str(spec["torchscript"]))
    else:
        network, labels = _bundle(card.path.parent / str(spec["bundle"]), trust)
        if not card.labels and labels:
            card = ModelCard(**{**card.__dict__, "labels": labels})
    return Model(network, card, device)
