"""Checks the adversarial tests share: a tree's content digest, and the CLI's one error line."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path


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


def assert_one_line(text: str) -> str:
    """The CLI's stderr is exactly one ``volcam: error: ...`` line (no traceback); returns it."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert lines[0].startswith("volcam: error: "), lines[0]
    assert "Traceback" not in text
    return lines[0]
