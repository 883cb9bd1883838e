"""Outputs appear whole or not at all, never over an input, never through a broken link.

Every file volcam writes goes through here:

- :func:`atomic_file` / :func:`atomic_folder`: write to a temporary name beside the target, rename
  when complete (atomic within one folder on POSIX and Windows), so a reader sees the old target,
  the complete new one, or nothing. A target that is a symlink is written *through*: the file it
  points to is updated and the link stays.
- :func:`output_folder`: a command's whole output folder as one transaction. It is filled in a
  temporary folder and moved into place at the end; an existing folder is replaced only when
  volcam made it (it holds :data:`MARKER`), never a folder of the user's.
- :func:`check_not_input`: an output that is, contains or lies inside an input is refused.

Temporary names carry the writing process's id (``.<name>.volcam-<pid>-<hex>.tmp``); on any
error, Ctrl-C or SIGTERM (the CLI turns it into ``KeyboardInterrupt``) they are removed, and what a
killed process left is removed by the next writer of the same target (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from volcam._version import __version__
from volcam.errors import OutputError
from volcam.io.formats import full_suffix
from volcam.io.jsondata import parse_json

__all__ = [
    "MARKER",
    "atomic_file",
    "atomic_folder",
    "check_not_input",
    "is_temporary",
    "output_folder",
    "remove_stale",
    "source_paths",
    "writable_target",
]

# The file that says "volcam made this folder": only such a folder is ever replaced by a new run.
MARKER = ".volcam.json"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.volcam-(?P<pid>\d+)-[0-9a-f]{8}\.(tmp|old)(\..*)?$")


def _temporary(path: Path, kind: str, suffix: str = "") -> Path:
    return path.parent / f".{path.name}.volcam-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}{suffix}"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of the temporary names this module makes."""
    return _TEMPORARY.match(name) is not None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def remove_stale(folder: Path, name: str | None = None) -> None:
    """Remove the temporaries in ``folder`` (for target ``name``, or any) whose writer is gone."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        found = _TEMPORARY.match(entry.name)
        if found and (name is None or found["name"] == name) and not _alive(int(found["pid"])):
            with contextlib.suppress(OSError):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def writable_target(path: str | os.PathLike) -> Path:
    """Where writing ``path`` really lands: a symlink's target (written through, the link kept)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def source_paths(image: Any) -> list[Path]:
    """The files or folder an image was read from (``meta["filename_or_obj"]``), if any."""
    meta = getattr(image, "meta", None) or {}
    found = meta.get("filename_or_obj")
    values = found if isinstance(found, list | tuple) else [found]
    return [Path(v) for v in values if isinstance(v, str | os.PathLike) and str(v)]


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], what: str = "output") -> None:
    """A one-line :class:`OutputError` when ``out`` is, contains or lies inside one of ``inputs``.

    Paths are compared after following symlinks, so a link to the input folder is the input folder.
    """
    target = _resolved(out)
    for given in inputs:
        if given is None or not str(given):
            continue
        source = _resolved(given)
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "lies inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise OutputError(f"{out}: the {what} {relation} the input {given}; volcam never writes over its inputs")


def _prepare(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (pass overwrite=True to replace it)")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{path}: {path.parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create its folder ({error.strerror or error})") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{path}: cannot write there (no permission on {path.parent})")


@contextlib.contextmanager
def _as_output_error(target: Path) -> Iterator[None]:
    """An ``OSError`` while writing ``target`` as one :class:`OutputError` line (ours pass through)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        found = OutputError(f"{target}: cannot write ({error.strerror or error})")
        found.errno = error.errno  # why, for a caller that tells a full disk (may pass) from a bad path
        raise found from None


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike, *, overwrite: bool = True, inputs: Iterable[str | os.PathLike | None] = ()
) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes) to write; rename it to ``path`` on success.

    A ``path`` that is a symlink is written through (its target replaced, the link kept); ``inputs``
    (paths that must not be touched) are checked first.
    """
    given = Path(path)
    check_not_input(given, inputs)
    path = writable_target(given)
    if path.is_dir():
        raise OutputError(f"{given}: is a folder, not a file")
    _prepare(path, overwrite)
    remove_stale(path.parent, path.name)
    temporary = _temporary(path, "tmp", full_suffix(path))
    try:
        with _as_output_error(given):
            yield temporary
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = ()
) -> Iterator[Path]:
    """Yield a temporary folder to fill; it becomes ``path`` on success.

    An existing empty folder is replaced; a non-empty one only with ``overwrite`` (it is removed
    after the new one is in place, so the target is never missing for long nor ever half-written).
    ``inputs`` are checked first: a folder that is, holds or lies in an input is never replaced.
    """
    given = Path(path)
    check_not_input(given, inputs)
    path = writable_target(given)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{given}: exists and is not a folder")
    _prepare(path, overwrite or (path.is_dir() and not any(path.iterdir())))
    remove_stale(path.parent, path.name)
    temporary = _temporary(path, "tmp")
    old = _temporary(path, "old")
    try:
        with _as_output_error(given):
            temporary.mkdir()
            yield temporary
            if path.exists():
                os.replace(path, old)
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def made_by_volcam(folder: Path) -> bool:
    """Whether ``folder`` holds volcam's :data:`MARKER` (a folder an earlier run wrote whole)."""
    try:
        return isinstance(parse_json((folder / MARKER).read_bytes(), folder / MARKER), dict)
    except (OSError, ValueError):  # FileFormatError is a ValueError
        return False


def check_output_folder(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    ours: Callable[[Path], bool] = made_by_volcam,
    maker: str = "volcam",
) -> Path:
    """Check, before anything heavy runs, that ``out`` can become a command's output folder.

    It may be new, an empty folder, or a folder volcam made (``ours``: it holds :data:`MARKER`;
    ``maker`` names who, in the message); it may not be a file, a folder of the user's, nor overlap
    an input. Returns where the folder really is (a symlink to a folder is written through).
    """
    given = Path(out)
    check_not_input(given, inputs)
    path = writable_target(given)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{given}: exists and is not a folder; give a folder for the outputs")
    if path.is_dir() and any(e for e in path.iterdir() if not is_temporary(e.name)) and not ours(path):
        raise OutputError(
            f"{given}: the folder holds files {maker} did not write; give a new or empty folder "
            "(volcam replaces only folders it made)"
        )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{given}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{given}: cannot write there (no permission on {parent})")
    return path


@contextlib.contextmanager
def output_folder(
    out: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    command: str = "volcam",
    ours: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """A command's output folder as one transaction: yield a temporary folder to fill, then move it
    into place as ``out`` (replacing an earlier run's folder), or on any error, Ctrl-C or SIGTERM
    remove it and leave ``out`` as it was.

    Args:
        out: the output folder (see :func:`check_output_folder` for what it may be).
        inputs: the command's inputs: ``out`` must not be, hold or lie inside any of them.
        command: recorded in the folder's :data:`MARKER`.
        ours: for a folder whose files say themselves who made them (a derived DICOM series): how to
            tell; then no :data:`MARKER` is written.
    """

    inputs = list(inputs)
    path = check_output_folder(out, inputs, ours or made_by_volcam)
    with atomic_folder(path, overwrite=True, inputs=inputs) as temporary:
        yield temporary
        if ours is None:
            (temporary / MARKER).write_text(json.dumps({"made_by": f"volcam {__version__}", "command": command}) + "\n")
