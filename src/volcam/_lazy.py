"""Names a package imports on first use (PEP 562): ``import volcam`` and the command line's ``--help``
pay for torch and MONAI only when a name that needs them is touched."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for ``homes`` (public name → the module it lives in;
    a name that is its own home, ``"volcam.metrics"`` for ``metrics``, is that module). Each name is
    imported the first time it is asked for, then kept as a plain attribute.

    A function named like a submodule of the package itself (``volcam.io.load``) cannot be lazy: any
    import of the submodule binds the package's attribute to it. Import such a name eagerly."""

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        value = module if home == f"{package}.{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return getattr_, dir_
