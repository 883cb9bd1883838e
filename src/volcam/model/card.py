"""Model cards: a network, its weights, its preprocessing, its labels and default layer, in one file.

A card is a small JSON file next to the weights::

    {
      "volcam_card": 1,
      "name": "demo-ct-covid",
      "kind": "volume",                      # "volume" (C, X, Y, Z), "frames" (2D frame model on a clip
                                             #  (C, T, H, W)) or "clip" (spatio-temporal 3D model)
      "labels": ["normal", "covid"],
      "layer": "layer2",                     # default target layer
      "output": "logits",                    # optional, for a network returning a dict or a tuple:
                                             #  the key (or index) of the tensor explained
      "in_channels": 1,
      "network": {"monai": "ResNet", "args": {...}},   # or {"torchscript": "net.pt"}
                                                        # or {"bundle": "a MONAI bundle folder"}
      "weights": "ct_covid.pt",              # a state_dict, relative to the card
      "preprocessing": [{"name": "Orientation", "args": {"axcodes": "RAS"}}, ...],
      "lcam": {"fm": {"weights": "ct_covid.lcam-fm.pt", "layer": "layer2", "labels": [...]}},
                                             # optional: trained L-CAM modules (volcam train-lcam)
      "window": {"frames": 16, "stride": 8}  # optional, "clip" models trained on short windows: the
                                             #  clip is seen window by window along T, maps stitched
                                             #  ("mode": "gaussian" (default) or "constant" weighting)
    }

:func:`read_card` reads and checks one; :func:`volcam.load_model` builds the network from it
(:mod:`volcam.model.build`) and returns a :class:`volcam.Model`.

A card and a bundle are data (see :mod:`volcam.model.allowlist`): without ``trust=True`` the network is an
allow-listed MONAI class or factory with plain JSON arguments, built by volcam, and weights load with
``torch.load(weights_only=True)`` (plain tensors only, nothing executed). A pickled model object, a
bundle config with expressions, references to code or parser directives, and TorchScript programs
all need ``trust``. Every field is type-checked on reading: a malformed card is one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volcam.errors import CardError, one_line
from volcam.io.jsondata import read_json_file
from volcam.model.allowlist import check_plain

__all__ = ["KINDS", "WINDOW_MODES", "ModelCard", "Window", "bundle_card", "read_card", "read_json"]


KINDS = {"volume": "volumes (C, X, Y, Z)", "frames": "clips (C, T, H, W) frame by frame", "clip": "clips (C, T, H, W)"}
WINDOW_MODES = ("gaussian", "constant")  # how overlapping windows' maps are weighted (MONAI's BlendMode)
MAX_WINDOW = 4096  # frames: a window is a network input, bounded like a preprocessing size


@dataclass(frozen=True)
class Window:
    """A ``"clip"`` model's window along T: ``frames`` long, one every ``stride`` frames; ``mode``
    weights overlapping windows' maps (``None``: the engine's default, :mod:`volcam.engine.windows`)."""

    frames: int
    stride: int
    mode: str | None = None


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
    output: str | int | None = None
    window: Window | None = None


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


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path`` (a card, a bundle config, a metrics file); one :class:`CardError`
    naming the file when it is missing, not a regular file, not JSON or nested too deeply
    (:func:`volcam.io.jsondata.read_json_file`)."""
    return read_json_file(path, what, CardError)


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and check a card file (JSON); a :class:`CardError` naming the file and the field if it is not one.

    Every field is checked for its type here, so a malformed card is one line before anything loads.
    """
    path = Path(path)
    data = read_json(path, "model card")
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
    output = data.get("output")
    if output is not None and (isinstance(output, bool) or not isinstance(output, (str, int)) or output == ""):
        raise CardError(
            f"{path}: 'output' is {one_line(json.dumps(output))[:60]}; it should be the key (a name) or the "
            "index (a whole number) of the network's output to explain"
        )
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
        output=output,
        window=_window(data.get("window"), kind, path),
    )


def _window(value: Any, kind: str, path: Path) -> Window | None:
    """The card's ``window`` (a ``"clip"`` model's), checked: whole frames, ``1 <= stride <= frames``."""
    if value is None:
        return None
    if kind != "clip":
        raise CardError(f"{path}: 'window' is for kind \"clip\" (a spatio-temporal model); this card is {kind!r}")
    example = '{"frames": 16, "stride": 8}'
    if not isinstance(value, dict) or set(value) - {"frames", "stride", "mode"} or "frames" not in value:
        raise CardError(f"{path}: 'window' should be an object like {example} (and optional 'mode')")
    checked: list[int] = []
    for key in ("frames", "stride"):
        number = value.get(key, value["frames"])  # no stride: windows side by side
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_WINDOW:
            shown = one_line(json.dumps(number))[:40]
            raise CardError(f"{path}: window.{key} is {shown}; give whole frames, 1 to {MAX_WINDOW}")
        checked.append(number)
    frames, stride = checked
    mode = value.get("mode")
    if stride > frames:
        raise CardError(f"{path}: window.stride {stride} is more than window.frames {frames}; frames would be skipped")
    if mode is not None and mode not in WINDOW_MODES:
        raise CardError(f"{path}: window.mode {one_line(json.dumps(mode))[:40]}; use one of {', '.join(WINDOW_MODES)}")
    return Window(frames, stride, mode)


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
    metrics = read_json(file, "metrics file")
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


def bundle_card(folder: Path, labels: tuple[str, ...]) -> ModelCard:
    """The card a bare MONAI bundle folder stands for: its network, no preprocessing, the auto layer."""
    return ModelCard(
        path=folder / "configs" / "inference.json",
        name=folder.name,
        kind="volume",
        labels=labels,
        layer="auto",
        in_channels=1,
        network={"bundle": str(folder)},
        weights=folder / "models" / "model.pt",
        preprocessing=(),
    )
