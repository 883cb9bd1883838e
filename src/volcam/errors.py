"""The exceptions volcam raises for user mistakes.

Every user-facing error is a :class:`VolcamError`: the command line and the napari plugin print its
message as one line, with no traceback. Programming errors inside volcam stay ordinary exceptions.
"""

from __future__ import annotations

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
    "one_line",
]


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
    message, anything else its type and its message's first line; at most ``limit`` characters."""
    if isinstance(error, VolcamError):
        text = one_line(str(error)) or type(error).__name__
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(error).__name__}: {one_line(first_line(error, limit))}"


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
