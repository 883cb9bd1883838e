"""The adversarial suite: inputs an attacker or a careless user would give volcam.

Every test states the class it covers and asserts three things: one line (a ``VolcamError`` from the
API, ``volcam: error: ...`` and exit 2 from the CLI), the exit code, and that nothing outside the
expected output changed (``unchanged``: a digest of the inputs before and after).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adversarial.checks import tree_digest


@pytest.fixture
def unchanged() -> Iterator[Callable[..., None]]:
    """``unchanged(*paths)`` records the trees now; at the test's end they must be byte-identical."""
    watched: list[tuple[tuple[Path, ...], dict[str, str]]] = []

    def watch(*paths: Path) -> None:
        roots = tuple(Path(p) for p in paths)
        watched.append((roots, tree_digest(*roots)))

    yield watch
    for roots, before in watched:
        assert tree_digest(*roots) == before, f"files under {', '.join(map(str, roots))} changed"
