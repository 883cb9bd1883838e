"""A card's or a bundle's network arguments, checked against what the MONAI constructor declares.

MONAI's networks are annotated (``layers: list[int]``, ``conv1_t_stride: tuple[int] | int``,
``no_max_pool: bool``). Before an allow-listed constructor is called (:mod:`volcam.model.allowlist`)
every argument read from JSON is held to its parameter's annotation, so a string where a number
belongs (``"conv1_t_stride": "builtins.eval"``) or an object where a flag belongs is one
:class:`~volcam.errors.CardError` naming the file, the key and what the constructor takes, instead of
a network that builds and then fails at its first forward. A parameter the constructor hands on
through ``**kwargs`` is looked up where it goes: a factory's return class (``resnet18`` → ``ResNet``),
a class's bases (``DenseNet121`` → ``DenseNet``). An annotation JSON cannot satisfy or that is not
understood (a module, a class) is left to the constructor.

Every whole number anywhere in the arguments is bounded (:data:`MAX_INT`): no network volcam explains
has a size, a count or a channel number past a million, and a loop a constructor runs that many times
(one module per layer asked for) is what made a bundle asking for a billion layers hang.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from volcam.errors import CardError, one_line

__all__ = ["MAX_INT", "check_arguments", "declared_parameters", "fits"]

MAX_INT = 1 << 20  # the largest whole number (in size) a network argument may hold
_UNIONS = (typing.Union, types.UnionType)
_SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_NAMES = {bool: "bool", int: "int", float: "float", str: "str", type(None): "None"}


def _path(keys: tuple[str | int, ...]) -> str:
    return ".".join(str(k) for k in keys) or "(top)"


def _shown(value: Any) -> str:
    return one_line(json.dumps(value))[:60]


def _all(found: Iterable[bool | None]) -> bool | None:
    """False if any is False, else None if any is not understood, else True."""
    seen = list(found)
    if False in seen:
        return False
    return None if None in seen else True


def _fits_union(value: Any, choices: tuple[Any, ...]) -> bool | None:
    found = [fits(value, choice) for choice in choices]
    if True in found:
        return True
    return None if None in found else False


def _fits_sequence(value: Any, origin: Any, items: tuple[Any, ...]) -> bool | None:
    """A JSON list for ``list[X]``, ``Sequence[X]``, ``tuple[X]`` (MONAI writes ``tuple[int]`` for a tuple
    of any length), ``tuple[X, ...]``, or a fixed ``tuple[X, Y]``."""
    if not isinstance(value, list):
        return False
    if not items:
        return True
    if origin is tuple and len(items) > 1 and items[-1] is not Ellipsis:
        return len(value) == len(items) and _all(fits(v, a) for v, a in zip(value, items, strict=True))
    return _all(fits(v, items[0]) for v in value)


def _fits_class(value: Any, annotation: type) -> bool | None:
    """A plain JSON value for ``bool``, ``int``, ``float``, ``str`` (and their subclasses, a string enum);
    ``None`` for any other class (a module, a type): the constructor decides."""
    if issubclass(annotation, bool):
        return isinstance(value, bool | int)  # MONAI takes any truth value; a number is one
    if issubclass(annotation, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if issubclass(annotation, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if issubclass(annotation, str):
        return isinstance(value, str)
    if annotation in _SEQUENCES:
        return isinstance(value, list)
    if annotation in _MAPPINGS:
        return isinstance(value, dict)
    return None


def fits(value: Any, annotation: Any) -> bool | None:
    """Whether the JSON ``value`` is what ``annotation`` declares: True, False, or None when the
    annotation is one JSON cannot be held to (a class other than the plain ones, a callable ...)."""
    if annotation in (Any, object, inspect.Parameter.empty):
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in _UNIONS:
        return _fits_union(value, typing.get_args(annotation))
    if origin is typing.Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(annotation))
    if origin in _SEQUENCES:
        return _fits_sequence(value, origin, typing.get_args(annotation))
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        kinds = typing.get_args(annotation)
        return _all(fits(v, kinds[1]) for v in value.values()) if len(kinds) == 2 else True
    if isinstance(annotation, type) and origin is None:
        return _fits_class(value, annotation)
    return None


def describe(annotation: Any) -> str:
    """``annotation`` as a person reads it in MONAI's documentation: ``tuple[int] | int``, ``bool``."""
    if annotation in _NAMES:
        return _NAMES[annotation]
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    text = repr(annotation).replace("NoneType", "None")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", text)  # typing.X, collections.abc.X, monai....X


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: that function's arguments go unchecked
        return {}


def _signature(constructor: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, inspect.Parameter]]:
    """The function whose parameters ``constructor`` takes (a class's ``__init__``) and those parameters."""
    function = constructor.__init__ if isinstance(constructor, type) else constructor  # type: ignore[misc]
    try:
        return function, dict(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return function, {}


def _passed_on(constructor: Callable[..., Any]) -> list[Callable[..., Any]]:
    """Where a constructor's ``**kwargs`` go: a class's bases, or the class a factory returns."""
    if isinstance(constructor, type):
        return [base for base in constructor.__mro__[1:] if "__init__" in vars(base) and base is not object]
    returned = _hints(constructor).get("return")
    return [returned] if isinstance(returned, type) else []


def declared_parameters(constructor: Callable[..., Any], depth: int = 0) -> tuple[dict[str, Any], bool]:
    """The parameters ``constructor`` declares, name → annotation (``inspect.Parameter.empty`` when
    unannotated), with those its ``**kwargs`` pass on; and whether it takes other names too (a
    ``**kwargs`` whose destination volcam cannot tell)."""
    function, parameters = _signature(constructor)
    if not parameters:
        return {}, True
    hints = _hints(function)
    declared: dict[str, Any] = {}
    open_ended = False
    for name, parameter in parameters.items():
        if name == "self" or parameter.kind == parameter.VAR_POSITIONAL:
            continue
        if parameter.kind == parameter.VAR_KEYWORD:
            open_ended = True
            continue
        declared[name] = hints.get(name, parameter.annotation if not isinstance(parameter.annotation, str) else Any)
    if open_ended and depth < 4:
        for target in _passed_on(constructor):
            more, still_open = declared_parameters(target, depth + 1)
            declared = {**more, **declared}
            open_ended = still_open
            if not still_open:
                break
    return declared, open_ended


def _check_numbers(value: Any, where: str | Path, keys: tuple[str | int, ...]) -> None:
    """A :class:`CardError` for a whole number anywhere in ``value`` beyond ±:data:`MAX_INT`."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_INT:
            raise CardError(
                f"{where}: {_path(keys)} is {value}; a network argument volcam builds is at most {MAX_INT} in size"
            )
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_numbers(item, where, (*keys, index))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_numbers(item, where, (*keys, key))


def check_arguments(
    constructor: Callable[..., Any], args: Mapping[str, Any], where: str | Path, keys: tuple[str | int, ...]
) -> None:
    """Hold each argument to the constructor's declared parameter (see the module's docstring).

    Args:
        constructor: the allow-listed MONAI class or factory.
        args: its keyword arguments, plain JSON (:func:`volcam.model.allowlist.check_plain`).
        where: the card or bundle config, for the message; keys: the key path of ``args`` there.

    Raises:
        CardError: a value that is not of its parameter's declared type, or a whole number past
            :data:`MAX_INT`. (A name the constructor does not take is left to it: one line too.)
    """
    name = getattr(constructor, "__name__", str(constructor))
    declared, _ = declared_parameters(constructor)
    for key, value in args.items():
        _check_numbers(value, where, (*keys, key))
        if key in declared and fits(value, declared[key]) is False:  # a name it does not take: it says so
            raise CardError(
                f"{where}: {_path((*keys, key))} is {_shown(value)}; {name} takes {describe(declared[key])} there"
            )
