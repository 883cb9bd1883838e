"""A card's network, built from data: an allow-listed MONAI network with its state_dict, a MONAI
bundle's ``network_def``, or (trusted only) a TorchScript program or a bundle with expressions.

Without ``trust`` nothing in the card or the bundle runs (see :mod:`volcam.model.allowlist`);
weights load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from volcam.errors import CardError, first_line
from volcam.model.allowlist import build_network, resolve_references
from volcam.model.card import ModelCard, bundle_card, read_card, read_json
from volcam.model.weights import fit_state, load_weights

__all__ = ["network_of"]


def network_of(path: Path, trust: bool = False) -> tuple[nn.Module, ModelCard]:
    """The network a card file (or a bundle folder) describes, with its weights, and the card.

    Raises:
        CardError: the card is unreadable, names something the allow-list refuses, or its network
            does not match the weights (the message says which parameters differ).
    """
    if path.is_dir():
        network, labels = _bundle(path, trust)
        return network, bundle_card(path, labels)
    card = read_card(path)
    spec = card.network
    if "monai" in spec:
        if card.weights is None:
            raise CardError(f"{card.path}: a MONAI network needs 'weights' (a state_dict file)")
        state = None
        for empty in (True, False):  # shapes only, then the file's tensors; a real build if that leaves a gap
            network = build_network(
                spec["monai"],
                spec.get("args", {}),
                card.path,
                ("network", "monai"),
                weights=card.weights,
                args_at=("network", "args"),
                empty=empty,
            )
            state = load_weights(card.weights, trust) if state is None else state
            if fit_state(network, state, card.path, card.weights):
                break
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
            card = replace(card, labels=labels)
    return network, card


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
    if not config_path.exists():
        raise CardError(f"{folder}: not a MONAI bundle (no configs/inference.json)")
    config = read_json(config_path, "bundle config")
    definition = config.get("network_def") if isinstance(config, dict) else None
    if not isinstance(definition, dict):
        raise CardError(f"{config_path}: no 'network_def' to build the network from")
    if trust:
        network = _parsed_network(config_path)
        fit_state(network, load_weights(weights, trust), config_path, weights)
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
        state = None
        for empty in (True, False):  # as for a card
            network = build_network(
                target, args, config_path, ("network_def", "_target_"), weights, ("network_def",), empty=empty
            )
            state = load_weights(weights, trust) if state is None else state
            if fit_state(network, state, config_path, weights):
                break
    labels: tuple[str, ...] = ()
    metadata = folder / "configs" / "metadata.json"
    if metadata.is_file():
        try:  # optional and informational: a metadata file that says nothing usable gives no labels
            outputs = read_json(metadata, "bundle metadata").get("network_data_format", {}).get("outputs", {})
            channels = next(iter(outputs.values())).get("channel_def", {})
            labels = tuple(str(channels[k]) for k in sorted(channels, key=int))
        except (CardError, ValueError, TypeError, StopIteration, AttributeError, KeyError):
            labels = ()
    return network, labels
