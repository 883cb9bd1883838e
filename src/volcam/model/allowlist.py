"""What a model card or a MONAI bundle may ask for without ``trust``: data, never code.

A card or a bundle can come from anyone, so volcam reads it as data. Without ``trust=True``
(``volcam --trust-weights``):

- the network is a MONAI network class or factory from ``monai.networks.nets``, named by its
  bare name (``"ResNet"``, ``"resnet18"``) or ``"monai.networks.nets.<name>"``, built by volcam
  itself (never through MONAI's ``ConfigParser``, which imports and calls whatever a config names);
- its arguments are plain JSON values: no ``_target_`` below the top, no ``_requires_``,
  ``_debug_``, ``_mode_`` or ``_disabled_``, no ``$`` expressions, no ``%`` macros; a bundle's
  ``@id`` references are followed only to plain values in the same config;
- no argument fetches or reads a file (``pretrained``, ``pretrained_url``, ``weights``, a hub or
  repository id ...): set to ``false``/``null`` they are fine, and a network whose default
  fetches (``MILModel(pretrained=True)``) must say ``"pretrained": false``;
- each argument is of the type the constructor declares for it, and no whole number in them is past a
  million (:mod:`volcam.model.arguments`);
- the network's parameters fit in memory and in the weights file (counted on PyTorch's ``meta``
  device before anything is allocated; a network that cannot be built there is built for real with the
  size of each tensor it asks for counted before it is made), and building it registers at most
  :data:`MAX_PARTS` modules, parameters and buffers (counted as they are registered, whatever the
  constructor's arguments mean: a bundle asking for a billion layers is refused after the first few
  thousand, not built for hours).

Every refusal is one :class:`~volcam.errors.CardError` naming the file and the key path.
"""

from __future__ import annotations

import inspect
import math
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from volcam.errors import CardError, first_line
from volcam.io.memory import available_bytes
from volcam.model.arguments import check_arguments

__all__ = ["MAX_PARTS", "NETWORK_PREFIX", "build_network", "check_plain", "network_constructor", "resolve_references"]

NETWORK_PREFIX = "monai.networks.nets."
# MONAI ConfigParser's special keys: each makes the parser import, call, debug or skip something.
CONFIG_KEYS = frozenset({"_target_", "_requires_", "_debug_", "_mode_", "_disabled_"})
# Arguments that download, or read a file, when true or set (matched against the argument's name).
FETCHING = re.compile(r"^pretrain|url|filename|path_or_repo|repo_id|download|^weights$|model_dir|cache_dir|^hub", re.I)
# Public callables of monai.networks.nets that are no network, or that fetch whatever their arguments say.
NOT_NETWORKS = frozenset({"drop_connect", "Transchex"})
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_MAX_DEPTH = 16
_MAX_ITEMS = 10_000
# Modules, parameters and buffers one network's construction may register: MONAI's largest networks
# (DenseNet264, SENet154, ResNet200, EfficientNet-L2, SwinUNETR, MedNeXt-L, DiNTS) register under 3500;
# each part past that is a constructor loop run again (SwinUNETR: a second per 30 of its blocks).
MAX_PARTS = 10_000


def _path(keys: tuple[str | int, ...]) -> str:
    return ".".join(str(k) for k in keys) or "(top)"


def check_plain(value: Any, where: str | Path, keys: tuple[str | int, ...] = ()) -> None:
    """Raise a :class:`CardError` unless ``value`` is plain JSON data (nothing a config parser would run).

    Args:
        value: a value read from JSON.
        where: the file, for the message.
        keys: the key path of ``value`` in that file, for the message.
    """
    if len(keys) > _MAX_DEPTH:
        raise CardError(f"{where}: {_path(keys)}: nested too deeply")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CardError(f"{where}: {_path(keys)}: {value} is not a finite number")
        return
    if isinstance(value, str):
        if value.startswith(("$", "%", "@")):
            raise CardError(
                f"{where}: {_path(keys)}: {value[:40]!r} is a config expression or reference, which runs code; "
                "load it only if you trust the file (trust=True, volcam --trust-weights)"
            )
        return
    if isinstance(value, list | tuple):
        if len(value) > _MAX_ITEMS:
            raise CardError(f"{where}: {_path(keys)}: a list of {len(value)} items is not a network argument")
        for index, item in enumerate(value):
            check_plain(item, where, (*keys, index))
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CardError(f"{where}: {_path(keys)}: key {key!r} is not a string")
            if key in CONFIG_KEYS:
                raise CardError(
                    f"{where}: {_path((*keys, key))}: {key} makes MONAI's config parser run code; "
                    "load it only if you trust the file (trust=True, volcam --trust-weights)"
                )
            check_plain(item, where, (*keys, key))
        return
    raise CardError(f"{where}: {_path(keys)}: a {type(value).__name__} is not a JSON value")


def network_constructor(name: str, where: str | Path, keys: tuple[str | int, ...] = ()) -> Callable[..., Any]:
    """The MONAI network class or factory that ``name`` names (``"ResNet"``, ``"resnet18"``,
    ``"monai.networks.nets.DenseNet121"``); a :class:`CardError` for anything else."""
    import monai.networks.nets as nets
    from torch import nn

    bare = name.removeprefix(NETWORK_PREFIX)
    refused = CardError(
        f"{where}: {_path(keys)}: {name!r} is not a network in monai.networks.nets "
        "(a class such as 'ResNet' or a factory such as 'resnet18')"
    )
    # One identifier looked up on the package itself: 'resnet.os.system' or 'open' never resolve.
    if not _IDENTIFIER.match(bare) or bare in NOT_NETWORKS:
        raise refused
    found = getattr(nets, bare, None)
    if isinstance(found, type):
        if not issubclass(found, nn.Module):
            raise refused
        return found
    module = getattr(found, "__module__", "") or ""
    if inspect.isfunction(found) and module.startswith(NETWORK_PREFIX) and not bare.startswith("get_"):
        return found
    raise refused


def _fetching_arguments(constructor: Callable[..., Any], args: Mapping[str, Any]) -> list[str]:
    """Arguments that would fetch or read a file: given as true/set, or left at such a default."""
    found = [key for key, value in args.items() if FETCHING.search(key) and value not in (False, None, "", 0)]
    try:
        parameters = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return found
    for key, parameter in parameters.items():
        default = parameter.default
        if FETCHING.search(key) and key not in args and default not in (False, None, "", 0, inspect.Parameter.empty):
            found.append(f"{key} (default {default!r}; give {key!r}: false)")
    return found


class _InitSkipped:
    """Skip in-place tensor ops (the weight initialisers) while a network is built on ``meta``.

    They compute nothing there, but on ``meta`` PyTorch routes them through its Python references,
    whose first use imports ``torch._dynamo`` (over a second). In-place ops keep shapes, so the
    parameter count is exact. A torch function mode is thread-local: other threads are unaffected.
    """

    def __init__(self) -> None:
        from torch.overrides import TorchFunctionMode

        class Mode(TorchFunctionMode):
            def __torch_function__(
                self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
            ) -> Any:
                name = getattr(func, "__name__", "")
                if name.endswith("_") and not name.startswith("_") and args and getattr(args[0], "is_meta", False):
                    return args[0]
                return func(*args, **(kwargs or {}))

        self._mode = Mode()

    def __enter__(self) -> None:
        self._mode.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


class _TooManyParts(Exception):
    """Raised inside a constructor by :class:`_PartsLimit` once it has registered too many parts."""


class _PartsLimit:
    """Count the modules, parameters and buffers registered in this thread while a network is built
    (PyTorch's global registration hooks); past ``limit`` each further registration raises, so a
    constructor asked for a billion layers stops at the limit whatever argument asked for them.
    ``exceeded`` stays set even if the constructor swallowed the exception. Other threads are not
    counted (the hooks are process-wide while the block runs)."""

    def __init__(self, limit: int = MAX_PARTS) -> None:
        self.limit = limit
        self.count = 0
        self.exceeded = False
        self._thread = threading.get_ident()
        self._handles: list[Any] = []

    def _hook(self, *_: object) -> None:
        if threading.get_ident() != self._thread:
            return
        self.count += 1
        if self.count > self.limit:
            self.exceeded = True
            raise _TooManyParts(f"more than {self.limit} modules, parameters and buffers")

    def __enter__(self) -> _PartsLimit:
        from torch.nn.modules import module

        self._thread = threading.get_ident()
        self._handles = [
            module.register_module_module_registration_hook(self._hook),
            module.register_module_parameter_registration_hook(self._hook),
            module.register_module_buffer_registration_hook(self._hook),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _too_many_parts(name: str, where: str | Path) -> CardError:
    return CardError(
        f"{where}: {name} with these arguments registers more than {MAX_PARTS} modules, parameters and "
        "buffers; no network volcam explains has that many (a layer count or a size too large?)"
    )


class _TooLarge(Exception):
    """Raised inside a constructor by :class:`_Allocations` before a tensor past its budget is made."""


# Tensor factories a constructor makes its parameters and tables with; their size is known before they run.
_FACTORIES = frozenset({"empty", "zeros", "ones", "full", "rand", "randn", "empty_strided"})


def _requested_bytes(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The bytes a call of the tensor factory ``name`` asks for (its size: ints, or one sequence first)."""
    import torch

    size = args[0] if args and isinstance(args[0], list | tuple | torch.Size) else kwargs.get("size", args)
    if name in ("full", "empty_strided") and args:
        size = args[0]
    try:
        numel = math.prod(int(n) for n in size)
    except (TypeError, ValueError):  # not a size volcam reads: the factory says what is wrong
        return 0
    dtype = kwargs.get("dtype") or torch.get_default_dtype()
    return max(0, numel) * (dtype.itemsize if isinstance(dtype, torch.dtype) else 8)


class _Allocations:
    """Count the bytes the tensor factories (``torch.empty``, ``zeros`` ...) are asked for while a network
    is built for real, before each allocates; past ``budget`` that call raises instead. A network that
    cannot be built on ``meta`` (whose parameters were not counted there) is bounded so."""

    def __init__(self, budget: int | None) -> None:
        from torch.overrides import TorchFunctionMode

        counter = self

        class Mode(TorchFunctionMode):
            def __torch_function__(
                self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
            ) -> Any:
                kwargs = kwargs or {}
                name = getattr(func, "__name__", "")
                if counter.budget is not None and name in _FACTORIES:
                    counter.requested += _requested_bytes(name, args, kwargs)
                    if counter.requested > counter.budget:
                        raise _TooLarge(counter.requested)
                return func(*args, **kwargs)

        self.budget = budget
        self.requested = 0
        self._mode = Mode()

    @property
    def budget_mib(self) -> str:
        return "no limit" if self.budget is None else f"{self.budget / 2**20:.1f} MiB"

    def __enter__(self) -> _Allocations:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


def _budget(weights: Path | None) -> int | None:
    """The bytes of tensors a network may have: what its weights file can fill (twice its size and a
    MiB), and no more than the memory available; ``None`` when neither is known."""
    limits = [available_bytes()]
    if weights is not None and weights.is_file():
        limits.append(2 * weights.stat().st_size + (1 << 20))
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _built(
    constructor: Callable[..., Any], args: Mapping[str, Any], name: str, where: str | Path, budget: int | None = None
) -> Any:
    """``constructor(**args)`` under :class:`_PartsLimit` (and, given a ``budget`` of bytes, under
    :class:`_Allocations`): a :class:`CardError` once it registers too many parts or asks for too many
    bytes; any other exception as the constructor raised it."""
    with _PartsLimit() as limit, _Allocations(budget) as allocations:
        try:
            network = constructor(**dict(args))
        except _TooManyParts:
            raise _too_many_parts(name, where) from None
        except _TooLarge as large:
            raise CardError(
                f"{where}: {name} with these arguments asks for {large.args[0] / 2**20:.1f} MiB of tensors while "
                f"it is built, more than its weights file or the memory available can hold ({allocations.budget_mib})"
            ) from None
    if limit.exceeded or (budget is not None and allocations.requested > budget):  # caught and went on
        raise _too_many_parts(name, where) if limit.exceeded else CardError(f"{where}: {name} is too large to build")
    return network


def _on_meta(
    constructor: Callable[..., Any], args: Mapping[str, Any], name: str, where: str | Path
) -> tuple[Any, int] | tuple[None, None]:
    """The network built on the ``meta`` device (nothing allocated, no initialisation run) and the bytes
    of its parameters and buffers; ``(None, None)`` when it cannot be built there. A network with too
    many parts is a :class:`CardError` here: the real build would have as many."""
    import torch

    try:
        with torch.device("meta"), _InitSkipped():
            network = _built(constructor, args, name, where)
        tensors = [*network.parameters(), *network.buffers()]
        return network, sum(t.numel() * t.element_size() for t in tensors)
    except CardError:
        raise
    except Exception:  # some networks compute at construction; then the real build is the check
        return None, None


def build_network(
    name: str,
    args: Mapping[str, Any],
    where: str | Path,
    keys: tuple[str | int, ...] = (),
    weights: Path | None = None,
    args_at: tuple[str | int, ...] | None = None,
    empty: bool = False,
) -> Any:
    """Build an allow-listed MONAI network from plain arguments.

    Args:
        name: the class or factory name (see :func:`network_constructor`).
        args: its keyword arguments, as read from JSON.
        where: the card or bundle config, for messages; keys: the key path of the network's name;
            args_at: that of its arguments (``keys`` + ``args`` by default).
        weights: the state_dict file, when known: a network with more parameter bytes than the
            file holds cannot fit it and is refused before it is allocated.
        empty: return the network with its tensors on the ``meta`` device (shapes only, no random
            initialisation) when it builds there, for weights to be assigned to
            (:func:`volcam.model.weights.fit_state`); a real network otherwise.

    Raises:
        CardError: a name, an argument (its type, :mod:`volcam.model.arguments`) or a size the
            allow-list refuses, a network of more than :data:`MAX_PARTS` parts, or one that does not
            build with these arguments.
    """
    args_at = (*keys, "args") if args_at is None else args_at
    if not isinstance(args, Mapping):
        raise CardError(f"{where}: {_path(args_at)}: the network's arguments are a JSON object")
    constructor = network_constructor(name, where, keys)
    check_plain(dict(args), where, args_at)
    fetching = _fetching_arguments(constructor, args)
    if fetching:
        raise CardError(
            f"{where}: {_path(args_at)}: {', '.join(fetching)}: would download or read files; "
            "volcam loads the card's own weights file instead"
        )
    check_arguments(constructor, args, where, args_at)
    network, needed = _on_meta(constructor, args, name, where)
    if needed is not None:
        available = available_bytes()
        if weights is not None and weights.is_file() and needed > 2 * weights.stat().st_size + (1 << 20):
            raise CardError(
                f"{where}: {name} with these arguments has {needed / 2**20:.0f} MiB of parameters; "
                f"the weights file {weights.name} holds only {weights.stat().st_size / 2**20:.1f} MiB"
            )
        if available is not None and needed > available:
            raise CardError(
                f"{where}: {name} with these arguments needs {needed / 2**30:.1f} GiB of parameters, "
                f"more than the {available / 2**30:.1f} GiB of memory available"
            )
    if empty and network is not None:
        return network
    try:  # counted on meta: bounded already; else (it computes at construction) bounded as it is built
        return _built(constructor, args, name, where, budget=None if needed is not None else _budget(weights))
    except CardError:
        raise
    except Exception as error:  # a MONAI constructor rejects arguments in many ways
        raise CardError(f"{where}: cannot build {name}: {first_line(error)}") from None


def resolve_references(value: Any, config: Mapping[str, Any], where: str | Path, depth: int = 0) -> Any:
    """``value`` with each bundle reference ``"@id"`` (``"@a::b"`` or ``"@a#b"`` for nested ids)
    replaced by the plain value it names in ``config``; expressions stay for :func:`check_plain`."""
    if depth > _MAX_DEPTH:
        raise CardError(f"{where}: references nested too deeply (a cycle?)")
    if isinstance(value, str) and value.startswith("@"):
        found: Any = config
        for part in re.split(r"::|#", value[1:]):
            if isinstance(found, Mapping) and part in found:
                found = found[part]
            elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
                found = found[int(part)]
            else:
                raise CardError(f"{where}: {value!r} refers to nothing in the config")
        return resolve_references(found, config, where, depth + 1)
    if isinstance(value, Mapping):
        return {k: resolve_references(v, config, where, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, config, where, depth + 1) for v in value]
    return value
