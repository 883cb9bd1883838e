"""Old import paths of modules that moved into subpackages keep working for one release.

``import volcam.models`` (and ``from volcam.render import montage`` ...) still works: a finder on
``sys.meta_path`` answers for the old names only, imports the module from its new home, warns once
with a ``DeprecationWarning`` naming it, and registers the same module object under the old name
(so monkeypatching either name patches both). One table, :data:`MOVED`, says what went where.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED = {
    "volcam.result": "volcam.maps.result",
    "volcam.geometry": "volcam.maps.geometry",
    "volcam.filters": "volcam.maps.filters",
    "volcam.io.windowing": "volcam.maps.windowing",
    "volcam.io.maps": "volcam.maps.arrays",
    "volcam.runner": "volcam.methods.runner",
    "volcam.layers": "volcam.engine.layers",
    "volcam.head": "volcam.engine.head",
    "volcam.clip": "volcam.engine.clip",
    "volcam.models": "volcam.model.model",
    "volcam.preprocess": "volcam.model.preprocess",
    "volcam.allowlist": "volcam.model.allowlist",
    "volcam.session": "volcam.model.session",
    "volcam.display": "volcam.viz.display",
    "volcam.render": "volcam.viz.render",
    "volcam.review": "volcam.viz.review",
    "volcam.metrics.evaluate": "volcam.workflows.evaluate",
    "volcam.lcam_training": "volcam.workflows.lcam_training",
    "volcam.cohort": "volcam.workflows.cohort.run",
    "volcam.cohort_report": "volcam.workflows.cohort.report",
    "volcam.manifest": "volcam.io.tables",
    "volcam.synthetic": "volcam.testing.phantoms",
}


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; the old name goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module object is the new one, already executed."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
