"""What a person is told when a card's network fails on its input: one line, never an internal error.

A network that builds can still fail at its first forward: on an input it cannot take (a shape its
convolutions or its patch embedding refuse: PyTorch's ``RuntimeError``, an
:class:`~volcam.errors.InputError` naming the model and the shape), or because the card or bundle
built it with arguments it does not work with (``conv3d() received an invalid combination of
arguments``: a ``TypeError``, ``ValueError``, ``IndexError`` ... raised inside the network's own
code, a :class:`~volcam.errors.CardError` naming the card). :func:`network_errors` is the guard
around the places volcam runs a card's network on a scan for a person (:meth:`volcam.Model.predict`,
the explanation's forward and the methods' passes in :class:`~volcam.model.session.ScanSession`; a
cohort makes any failure its case's row).

An exception raised by volcam's own code (a hook, the engine) is not the card's: it stays what it is,
an internal error the CLI reports with its log. The line between them is the traceback: the card's
network raised it when the last volcam frame called a PyTorch module and everything after it is the
network's (MONAI's, PyTorch's) code.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from volcam.errors import CardError, InputError, VolcamError, first_line

__all__ = ["network_errors", "raised_in_network"]

_VOLCAM = str(Path(__file__).resolve().parents[1])  # the package's folder: frames of volcam's own code
_MODULE_CALLS = frozenset({"_wrapped_call_impl", "_call_impl"})  # torch.nn.Module.__call__'s frames


def _is_volcam(filename: str) -> bool:
    try:
        return str(Path(filename).resolve()).startswith(_VOLCAM)
    except (OSError, ValueError):  # a frame of "<string>" or a vanished file
        return False


def raised_in_network(error: BaseException) -> bool:
    """Whether ``error`` was raised inside a network volcam called: its traceback's last volcam frame
    calls a ``torch.nn.Module`` and no volcam frame (a hook) comes after it."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [index for index, frame in enumerate(frames) if _is_volcam(frame.filename)]
    if not ours or ours[-1] + 1 >= len(frames):
        return False
    called = frames[ours[-1] + 1]
    return called.name in _MODULE_CALLS and Path(called.filename).name == "module.py"


@contextlib.contextmanager
def network_errors(name: str, card: str | Path, shape: Sequence[int]) -> Iterator[None]:
    """Run a card's network on an input of ``shape`` with its failures said in one line.

    Args:
        name: the model's name; card: its card or bundle file; both for the message.
        shape: the prepared input's shape ``(B, C, *S)``.

    Raises:
        InputError: PyTorch refused the input (a ``RuntimeError``: a size the network cannot take).
        CardError: the network's own code raised anything else (it was built with arguments it does
            not work with); any other exception is re-raised as it is.
    """
    try:
        yield
    except VolcamError:
        raise
    except RuntimeError as error:
        raise InputError(
            f"{name} cannot take an input of shape {tuple(shape)} after preprocessing ({first_line(error)})"
        ) from None
    except Exception as error:
        if not raised_in_network(error):
            raise
        raise CardError(
            f"{card}: its network fails on an input of shape {tuple(shape)} "
            f"({type(error).__name__}: {first_line(error)}); are the network's arguments right?"
        ) from None
