"""The checks every reader makes before it opens a path or allocates for it.

Opening a FIFO blocks until someone writes to it and reading a character device (``/dev/zero``)
never ends, so a reader opens only regular files (symlinks to one are fine). A header can claim any
size, so a reader compares the bytes it is about to allocate with what the file can hold (here) and
the memory there is (:mod:`volcam.io.memory`), and refuses in one line instead of allocating first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from volcam.errors import FileFormatError

__all__ = [
    "check_fits_file",
    "gib",
    "is_regular_file",
    "not_regular_reason",
    "require_regular_file",
]

# Deflate emits at least one bit per 258-byte match, so a gzip stream inflates at most ~1032-fold:
# a bound on what a .gz file can hold, known without reading it.
GZIP_MAX_RATIO = 1032

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """``None`` for a regular file (or a symlink to one); else what it is: ``"a FIFO (named pipe)"``, ...

    Uses ``stat`` only (never ``open``), so it cannot block.
    """
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to /dev/zero is a device
    except FileNotFoundError:
        return "missing (or a broken link)"
    except OSError as error:
        return f"not readable ({error.strerror or type(error).__name__})"
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file (following symlinks): the only kind a reader opens."""
    return not_regular_reason(path) is None


def require_regular_file(path: str | os.PathLike) -> None:
    """A one-line :class:`FileFormatError` unless ``path`` is a regular file; call before opening it."""
    reason = not_regular_reason(path)
    if reason is not None:
        if reason.startswith("missing"):
            raise FileFormatError(f"{path}: no such file or folder")
        if reason.startswith("not readable"):
            raise FileFormatError(f"{path}: {reason}")
        raise FileFormatError(f"{path}: not a regular file ({reason}); give an image file or a DICOM folder")


def gib(nbytes: float) -> str:
    """``4.0 GiB``, ``12.0 MiB``, ``352 bytes``: a size for a message."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def check_fits_file(path: str | os.PathLike, data_file: str | os.PathLike, nbytes: int, offset: int = 0) -> None:
    """A one-line :class:`FileFormatError` when ``data_file`` cannot hold ``nbytes`` of data after ``offset``.

    An uncompressed file must hold them; a ``.gz`` file can hold at most :data:`GZIP_MAX_RATIO` times
    its size. Catches a header that claims a huge image before a reader allocates for it.
    """
    try:
        size = Path(data_file).stat().st_size
    except OSError as error:  # a two-file image whose data file went missing
        raise FileFormatError(
            f"{path}: cannot read its image data file {Path(data_file).name} ({error.strerror or type(error).__name__})"
        ) from None
    if str(data_file).lower().endswith(".gz"):
        if nbytes + offset > size * GZIP_MAX_RATIO:
            raise FileFormatError(
                f"{path}: the header claims {gib(nbytes)} of image data, more than a gzip file of {gib(size)} can hold"
            )
    elif nbytes + offset > size:
        raise FileFormatError(
            f"{path}: the image data is truncated or unreadable (the header claims {gib(nbytes)} of image "
            f"data, the file holds {gib(size)})"
        )
