"""The adversarial suite: inputs an attacker or a careless user would give volcam.

Every test states the class it covers and asserts three things: one line (a ``VolcamError`` from the
API, ``volcam: error: ...`` and exit 2 from the CLI), the exit code, and that nothing outside the
expected output changed (:func:`tree_digest` of the inputs before and after).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def tree_digest(*roots: Path) -> dict[str, str]:
    """Path → content hash (symlinks by their target, FIFOs by their mode) of every entry under ``roots``.

    Never opens a non-regular file (a FIFO would block), so it is safe on the trees these tests build.
    """
    digest: dict[str, str] = {}
    for root in roots:
        entries: Iterator[Path] = iter([root]) if not root.is_dir() or root.is_symlink() else root.rglob("*")
        for path in sorted(entries):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                digest[str(path)] = "link:" + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISDIR(info.st_mode):
                digest[str(path)] = "dir"
            else:
                digest[str(path)] = f"mode:{stat.S_IFMT(info.st_mode)}"
    return digest


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


def assert_one_line(text: str) -> str:
    """The CLI's stderr is exactly one ``volcam: error: ...`` line (no traceback); returns it."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert lines[0].startswith("volcam: error: "), lines[0]
    assert "Traceback" not in text
    return lines[0]
