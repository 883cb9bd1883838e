"""A card's network, built from data: an allow-listed MONAI network with its state_dict, a MONAI
bundle's ``network_def``, or (trusted only) a TorchScript program or a bundle with expressions.

Without ``trust`` nothing in the card or the bundle runs (see :mod:`volcam.model.allowlist`);
weights load with ``torch.load(weights_only=True)``.

:func:`declared_outputs` tells, without running the network on data, how many outputs (classes) it
gives, so that a card whose labels do not name them one for one is refused when the model is built
(:func:`volcam.load_model`), not deep inside the first explanation.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volcam.errors import CardError, first_line
from volcam.model.allowlist import build_network, resolve_references
from volcam.model.card import ModelCard, bundle_card, read_card, read_json
from volcam.model.weights import fit_state, load_weights

__all__ = ["declared_outputs", "network_of"]

logger = logging.getLogger("volcam")


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
    return network, _bundle_labels(folder / "configs" / "metadata.json")


_INDEX = re.compile(r"\d{1,6}")  # a channel_def key: the output channel's index


def _bundle_labels(metadata: Path) -> tuple[str, ...]:
    """The class names ``configs/metadata.json`` gives the bundle's first output (``channel_def``:
    ``{"0": "normal", "1": "covid"}``); none when the file is absent or says nothing usable in that form.
    It is optional and informational: every level is checked for its form (a list where an object
    belongs, a key that is no index), never trusted to have it."""
    if not metadata.is_file():
        return ()
    try:
        document = read_json(metadata, "bundle metadata")
    except CardError:
        return ()
    outputs = _member(_member(document, "network_data_format"), "outputs")
    first = next(iter(outputs.values()), None) if isinstance(outputs, Mapping) else None
    channels = _member(first, "channel_def")
    if not isinstance(channels, Mapping) or not all(isinstance(k, str) and _INDEX.fullmatch(k) for k in channels):
        return ()
    return tuple(str(channels[k]) for k in sorted(channels, key=int))


def _member(value: Any, key: str) -> Any:
    """``value[key]`` when ``value`` is a JSON object holding it, else ``None``."""
    return value.get(key) if isinstance(value, Mapping) else None


# -- how many outputs ---------------------------------------------------------------------------------

# Modules and functions after the classifier that keep its outputs' count (activations, dropout, ...).
_KEEPING_MODULES = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Softmax, nn.LogSoftmax,
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.PReLU, nn.Flatten,
)  # fmt: skip
_KEEPING_NAMES = frozenset({"softmax", "log_softmax", "sigmoid", "tanh", "relu", "dropout", "flatten", "contiguous"})


class _ChildrenAsLeaves:
    """A tracer of a module's own ``forward`` only: each child module is one call (what happens inside
    a child, an embedding written with einops or data-dependent code, cannot stop the trace)."""

    def __new__(cls) -> Any:
        from torch import fx

        class Tracer(fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
                return True

        return Tracer()


def _fx_outputs(network: nn.Module, output: Any = None, depth: int = 0) -> int | None:
    """The output count of the layer that makes ``network``'s output, from its traced ``forward``: a
    ``Linear``'s out_features or a convolution's out_channels, past activations and dropout; a child
    module that makes it is looked into the same way."""
    from torch import fx

    if depth > 8:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = fx.GraphModule(network, _ChildrenAsLeaves().trace(network))
    result: Any = next(n for n in graph.graph.nodes if n.op == "output").args[0]
    if isinstance(result, tuple | list) and isinstance(output, int) and -len(result) <= output < len(result):
        result = result[output]
    elif isinstance(result, dict) and isinstance(output, str):
        result = result.get(output)
    elif isinstance(result, tuple | list | dict):  # one tensor among plain values, as select_output takes it
        nodes = [v for v in (result.values() if isinstance(result, dict) else result) if isinstance(v, fx.Node)]
        result = nodes[0] if len(nodes) == 1 and output is None else None
    while isinstance(result, fx.Node):
        if result.op == "call_module":
            module = network.get_submodule(str(result.target))
            if isinstance(module, nn.Linear):
                return int(module.out_features)
            if isinstance(module, nn.modules.conv._ConvNd):
                return int(module.out_channels)
            if not isinstance(module, _KEEPING_MODULES):
                return _fx_outputs(module, None, depth + 1)
        elif getattr(result.target, "__name__", str(result.target)) not in _KEEPING_NAMES:
            return None
        inputs = [n for n in result.args if isinstance(n, fx.Node)]
        result = inputs[0] if len(inputs) == 1 else None
    return None


def _input_size(card: ModelCard) -> tuple[int, ...] | None:
    """The network input's spatial size when the card's preprocessing fixes it (the last step with a
    ``spatial_size`` or ``roi_size`` of whole positive numbers); ``None`` when the scan decides it."""
    for step in reversed(card.preprocessing):
        args = step.get("args") or {}
        size = args.get("spatial_size", args.get("roi_size")) if isinstance(args, dict) else None
        if not isinstance(size, list) or not size:
            continue
        if card.kind == "frames":
            size = size[1:]  # a clip's (T, H, W): the frame model sees (H, W)
        elif card.kind == "clip" and card.window is not None and size[0] == -1:
            size = [card.window.frames, *size[1:]]
        if size and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            return tuple(size)
        return None
    return None


def _meta_outputs(network: nn.Module, card: ModelCard) -> int | None:
    """The output count from one forward on PyTorch's ``meta`` device (shapes only: nothing computed or
    allocated), on an input of the size the preprocessing fixes."""
    from torch.func import functional_call

    from volcam.targets import select_output

    size = _input_size(card)
    if size is None:
        return None
    state = {name: torch.empty_like(t, device="meta") for name, t in network.state_dict(keep_vars=True).items()}
    x = torch.empty((1, card.in_channels, *size), device="meta")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = select_output(functional_call(network, state, (x,)), card.output)
    return int(out.shape[1]) if out.ndim >= 2 else None


def declared_outputs(network: nn.Module, card: ModelCard) -> int | None:
    """How many outputs (classes) ``network`` gives, found without data: from its traced graph (the
    layer that makes its output), else from a forward on the ``meta`` device at the input size the
    card's preprocessing fixes; ``None`` when neither tells (a TorchScript program, a network that
    cannot be traced and a scan-sized input): then the first forward checks the labels."""
    if isinstance(network, torch.jit.ScriptModule):
        return None
    for find in (lambda: _fx_outputs(network, card.output), lambda: _meta_outputs(network, card)):
        try:
            found = find()
        except Exception as error:  # untraceable control flow, a module that makes CPU tensors, ...
            logger.debug("cannot tell %s's outputs this way: %s", type(network).__name__, error)
            continue
        if found is not None:
            return found
    return None
