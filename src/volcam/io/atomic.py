"""Write to a temporary name beside the target, rename when complete: a reader never sees half a file.

A rename within one folder is atomic on POSIX and Windows, so the target is either the old file,
the complete new one, or absent. On any error the temporary file or folder is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from volcam.errors import OutputError

__all__ = ["atomic_file", "atomic_folder"]


def _suffixes(path: Path) -> str:
    # Keep ".nii.gz" whole: writers pick the format (and compression) from the name.
    name = path.name.lower()
    for double in (".nii.gz", ".img.gz", ".tar.gz"):
        if name.endswith(double):
            return path.name[-len(double) :]
    return path.suffix


def _prepare(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (pass overwrite=True to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create its folder ({error.strerror or error})") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{path}: cannot write there (no permission on {path.parent})")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes) to write; rename it to ``path`` on success."""
    path = Path(path)
    _prepare(path, overwrite)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{_suffixes(path)}"
    try:
        yield temporary
        os.replace(temporary, path)
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; it becomes ``path`` on success.

    An existing empty folder is replaced; a non-empty one only with ``overwrite`` (it is removed
    after the new one is in place, so the target is never missing for long nor ever half-written).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder")
    _prepare(path, overwrite or (path.is_dir() and not any(path.iterdir())))
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
    try:
        temporary.mkdir()
        yield temporary
        if path.exists():
            os.replace(path, old)
        os.replace(temporary, path)
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
