"""Weights files: a network's state_dict, loaded safely and fitted strictly, and L-CAM module files.

A weights file can come from anyone: :func:`load_weights` reads plain tensors only
(``torch.load(weights_only=True)``) unless the user trusts it; :func:`fit_state` loads them into the
card's network strictly, saying in one line how they disagree. An L-CAM module is saved as plain
tensors and strings with what it was trained for (:func:`save_lcam`), and read back only when it fits
the card (:func:`load_lcam`); :func:`record_in_card` notes it in the card.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volcam.errors import CardError, first_line
from volcam.io.atomic import atomic_file
from volcam.io.jsondata import read_json_file
from volcam.methods.learned import LCamAttention

__all__ = ["FORMAT", "default_path", "fit_state", "load_lcam", "load_weights", "record_in_card", "save_lcam"]


def load_weights(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``: ``weights_only`` unless ``trust``; ``{"state_dict": ...}`` is unwrapped."""
    if not path.is_file():
        raise CardError(f"{path}: no such weights file" if not path.exists() else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise CardError(f"{path}: the weights file is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        first = first_line(error)
        raise CardError(
            f"{path}: these weights need more than tensors to load ({first}); "
            "load them only if you trust where they came from (trust=True, volcam --trust-weights)"
        ) from None
    except Exception as error:  # torch.load fails on garbage in many ways (IndexError, EOFError, BadZipFile ...)
        raise CardError(f"{path}: not a PyTorch weights file ({first_line(error)})") from None
    if isinstance(state, nn.Module):  # a whole pickled model (only reachable with trust)
        return state.state_dict()
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CardError(f"{path}: expected a state_dict (parameter name → tensor)")
    return dict(state)


def fit_state(network: nn.Module, state: Mapping[str, torch.Tensor], card_path: Path, weights: Path) -> bool:
    """Load ``state`` into ``network`` strictly; one line saying how the card and the weights disagree.

    A network built on the ``meta`` device (:func:`~volcam.model.allowlist.build_network` with
    ``empty=True``) gets the file's tensors assigned, in its own dtypes: no random initialisation to
    overwrite and no copy (a ResNet-18-3D loads in half the time). Returns ``False`` when something
    the constructor computed is still on ``meta`` (not in any state_dict): then build it for real.
    """
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if names:
                parts.append(f"{what}: {', '.join(names[:3])}" + (f" (+{len(names) - 3})" if len(names) > 3 else ""))
        raise CardError(
            f"{card_path}: the card's network does not match the weights {weights.name} ({'; '.join(parts)})"
        )
    if not any(t.is_meta for t in own.values()):
        network.load_state_dict(state, strict=True)
        return True
    network.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    return not _meta_left(network)


def _meta_left(network: nn.Module) -> bool:
    """Whether a tensor of ``network`` is still on ``meta``: a parameter, a buffer, or a plain tensor
    attribute of a module (a non-persistent buffer or a table the constructor computed)."""
    for module in network.modules():
        for value in (*module._parameters.values(), *module._buffers.values(), *vars(module).values()):
            items = value if isinstance(value, (list, tuple)) else (value,)
            if any(isinstance(item, torch.Tensor) and item.is_meta for item in items):
                return True
    return False


# -- L-CAM modules -----------------------------------------------------------------------------------

FORMAT = 1  # version of the weights file's layout


def save_lcam(
    path: str | os.PathLike,
    module: LCamAttention,
    *,
    variant: str,
    layer: str,
    labels: Sequence[str],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``module`` with what it was trained for (tensors, strings and numbers only), atomically."""

    state = {
        "volcam_lcam": FORMAT,
        "variant": variant,
        "layer": layer,
        "labels": list(labels),
        "num_classes": module.num_classes,
        "in_channels": module.in_channels,
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "info": dict(info or {}),
    }
    path = Path(path)
    with atomic_file(path) as temporary:
        torch.save(state, temporary)
    return path


def load_lcam(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    layer: str | None = None,
    labels: Sequence[str] | None = None,
    where: str = "",
) -> tuple[LCamAttention, dict[str, Any]]:
    """Read a module saved by :func:`save_lcam` (``weights_only``) and check it fits.

    Args:
        variant, layer, labels: what the caller needs; a :class:`CardError` when the file was trained
            for something else (another layer, another class set).
        where: the card that pointed here, for the message.

    Returns:
        the module (eval mode) and the file's metadata (``variant``, ``layer``, ``labels``, ``info``).
    """
    path = Path(path)
    who = f"{where}: " if where else ""
    if not path.is_file():
        raise CardError(f"{who}{path}: no such L-CAM weights file (train one with volcam train-lcam)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # garbage fails in many ways; a pickled object fails weights_only
        raise CardError(f"{who}{path}: not an L-CAM weights file ({first_line(error)})") from None
    if not isinstance(state, dict) or state.get("volcam_lcam") != FORMAT or "state_dict" not in state:
        raise CardError(f"{who}{path}: not an L-CAM weights file written by volcam train-lcam")
    meta = {k: state.get(k) for k in ("variant", "layer", "labels", "info")}
    if variant is not None and meta["variant"] != variant:
        raise CardError(f"{who}{path}: holds an L-CAM-{str(meta['variant']).capitalize()} module, not {variant}")
    if layer is not None and meta["layer"] != layer:
        raise CardError(
            f"{who}{path}: the L-CAM module was trained at layer {meta['layer']!r}, not {layer!r}; "
            f"explain at {meta['layer']!r} or train one for {layer!r} (volcam train-lcam --layer {layer})"
        )
    if labels is not None and len(labels) and list(meta["labels"] or []) != list(labels):
        raise CardError(
            f"{who}{path}: the L-CAM module was trained for classes {meta['labels']}, the model has {list(labels)}"
        )
    weights = state["state_dict"]
    module = LCamAttention(int(state["in_channels"]), int(state["num_classes"]))
    try:
        module.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError) as error:
        raise CardError(f"{who}{path}: the L-CAM weights do not fit ({first_line(error)})") from None
    return module.eval(), meta


def default_path(card_path: Path, variant: str) -> Path:
    """``<card folder>/<name>.lcam-<variant>.pt`` for a card ``<name>.card.json`` (or ``<name>.json``)."""
    stem = card_path.name.removesuffix(".json").removesuffix(".card")
    return card_path.with_name(f"{stem}.lcam-{variant}.pt")


def record_in_card(card_path: Path, variant: str, weights: Path, layer: str, labels: Sequence[str]) -> None:
    """Add (or replace) ``"lcam": {variant: {...}}`` in a volcam card file, atomically."""

    data = read_json_file(card_path, "model card", CardError)
    if not isinstance(data, dict) or "volcam_card" not in data:
        raise CardError(f"{card_path}: not a volcam model card; save the module with out= and update_card=False")
    try:
        relative = os.path.relpath(weights.resolve(), card_path.resolve().parent)
    except ValueError:  # another drive on Windows
        relative = str(weights.resolve())
    entry = {"weights": Path(relative).as_posix(), "layer": layer, "labels": list(labels)}
    data.setdefault("lcam", {})[variant] = entry
    with atomic_file(card_path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
