"""The exceptions volcam raises for user mistakes, and the one path an error takes to a person.

Every user-facing error is a :class:`VolcamError`: the command line and the napari plugin print its
message as one line, with no traceback. Programming errors inside volcam stay ordinary exceptions.

No patient identifier may reach a message or a log line, whoever wrote the message (volcam, pydicom,
highdicom quoting a malformed name). So the readers register the identifying values of every scan they
read (:func:`register_identifiers`: the values themselves, read from the scan's headers), and what
shows an error or a log line removes them (:func:`scrub`): :func:`error_line` (the CLI, the napari
dock, a cohort's error column), the CLI's warnings and its log file, and every :mod:`logging` record
made while any value is registered (:func:`scrub_logging`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

__all__ = [
    "CardError",
    "DependencyError",
    "FileFormatError",
    "InputError",
    "LayerError",
    "MemoryLimitError",
    "MethodError",
    "OutputError",
    "SeriesError",
    "TargetError",
    "VolcamError",
    "VolcamWarning",
    "first_line",
    "forget_identifiers",
    "one_line",
    "register_identifiers",
    "scrub",
]

REMOVED = "[removed]"  # what stands where an identifying value was


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first non-blank line of ``error``'s message (at most ``limit`` characters), or its type's
    name when the message is empty: safe to put inside a one-line error of our own."""
    for line in str(error).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= limit else text[: limit - 1] + "…"
    return type(error).__name__


def one_line(text: str) -> str:
    """``text`` with every line break and control character made a space: a value read from a file
    (a SeriesDescription with a newline, a card's name) cannot split a one-line message in two."""
    return "".join(" " if (ch < " " or ch == "\x7f") else ch for ch in str(text)).strip()


def error_line(error: BaseException, limit: int = 300) -> str:
    """One line for a person (the CLI, the napari dock, a cohort's error column): a volcam error's own
    message, anything else its type and its message's first line; at most ``limit`` characters, with
    every registered identifying value removed (:func:`scrub`)."""
    if isinstance(error, VolcamError):  # scrubbed before it is cut: half a name would stay
        text = scrub(one_line(str(error))) or type(error).__name__
        return text if len(text) <= limit else text[: limit - 1] + "…"
    text = scrub(one_line(first_line(error, limit=1 << 20)))
    return f"{type(error).__name__}: {text if len(text) <= limit else text[: limit - 1] + '…'}"


# -- identifying values ------------------------------------------------------------------------------

_MIN_LENGTH = 3  # shorter values ("M", "42") would eat ordinary words and numbers of every message
_MEANINGFUL = re.compile(r"[^\W0_]")  # a placeholder of dashes or zeros ("----", "000000") identifies nobody
_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """The ways ``value`` can appear in a message: as is, as ``repr``/``ascii`` would quote it, and for
    a person name (``Family^Given^Middle``) with spaces for the carets and each part on its own."""
    value = str(value).strip().strip("\x00").strip()
    if not value:
        return set()
    found = {value, repr(value)[1:-1], ascii(value)[1:-1], one_line(value)}
    if "^" in value or "=" in value:
        parts = [p.strip() for p in re.split(r"[\^=]", value) if p.strip()]
        found |= {" ".join(parts), *parts}
    return {f for f in found if len(f) >= _MIN_LENGTH and _MEANINGFUL.search(f)}


def register_identifiers(values: Iterable[object]) -> None:
    """Remember identifying values (a patient's name, ID, birth date, an accession number ...) of a scan
    this process read: from now on :func:`scrub` removes them from every message and log line."""
    global _pattern
    new: set[str] = set()
    for value in values:
        if value is None:
            continue
        texts = value if isinstance(value, list | tuple) else [value]
        for text in texts:
            if isinstance(text, bytes):
                text = text.decode("latin-1")
            new |= _forms(str(text))
    scrub_logging()  # (again, when something replaced logging's record factory since)
    with _lock:
        if new <= _values:
            return
        _values.update(new)
        longest_first = sorted(_values, key=len, reverse=True)  # "Doe^Jane" before "Doe"
        # not inside a longer word or number ("Lee" stays in "asleep"; an ID is found in a UID's part)
        either = "|".join(re.escape(v) for v in longest_first)
        _pattern = re.compile(f"(?<![^\\W_])(?:{either})(?![^\\W_])", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` with every registered identifying value (any case) replaced by ``[removed]``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REMOVED, str(text))


def forget_identifiers() -> None:
    """Forget every registered value (for tests; a long-lived process keeps them)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def scrub_logging() -> None:
    """Make every :mod:`logging` record of this process pass :func:`scrub` (its message formatted once,
    when it is made): whatever handler writes it, a file or a terminal, and whichever library logs it.
    Installed when an identifying value is registered, and again if something replaced the factory since."""
    with _lock:
        previous = logging.getLogRecordFactory()
        if getattr(previous, "volcam_scrubs", False):
            return

        def scrubbed(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _pattern is not None:
                try:
                    message = record.getMessage()
                except Exception:  # a malformed record: logging reports it itself when it formats
                    return record
                clean = scrub(message)
                if clean != message:
                    record.msg, record.args = clean, ()
            return record

        scrubbed.volcam_scrubs = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(scrubbed)


class VolcamError(Exception):
    """Base class of every error caused by what the user asked for (a file, a name, a shape)."""


class LayerError(VolcamError, LookupError):
    """A target layer name that the model does not have, or a layer whose output cannot be explained."""


class TargetError(VolcamError, ValueError):
    """A class index, label or region that does not fit the model's output."""


class MethodError(VolcamError, ValueError):
    """An unknown CAM method, or a method that cannot run on this model (e.g. CAM without a linear head)."""


class InputError(VolcamError, ValueError):
    """An input tensor of the wrong shape, dtype or device for the model."""


class FileFormatError(VolcamError, ValueError):
    """A file or folder that cannot be read as an image: not DICOM/NIfTI, truncated, no pixel data, NaN voxels."""


class SeriesError(FileFormatError):
    """A DICOM folder that is not one clean series: several series to choose from, mixed sizes or orientations."""


class DependencyError(VolcamError, ImportError):
    """An optional package (a DICOM codec, a video decoder) is needed for this file and is not installed."""


class OutputError(VolcamError, OSError):
    """An output path that cannot be written (missing folder, no permission, exists and overwrite is off)."""


class VolcamWarning(UserWarning):
    """Something a reader should know about an input that still loads: a slice gap, gantry tilt, no spacing."""


class CardError(VolcamError, ValueError):
    """A model card that cannot be used: unreadable, an unknown field, or weights that do not fit it."""


class MemoryLimitError(FileFormatError, MemoryError):
    """An input that would need more memory than this process may have now (the machine's free memory,
    its address-space limit, its cgroup's): one line, as any user error, and a ``MemoryError``, so a
    cohort records it as a failure that may pass with more memory (tried again on the next run)."""
