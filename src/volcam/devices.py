"""Which ``torch.device`` a user's text names, checked before anything heavy loads."""

from __future__ import annotations

from typing import Any

import torch

from volcam.errors import InputError

__all__ = ["parse_device"]


def parse_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` ... as a ``torch.device`` that this machine has.

    ``None`` is the CPU. Raises a one-line :class:`InputError` for a name PyTorch does not know and
    for a device this machine (or this PyTorch build) does not have.
    """
    if device is None:
        return torch.device("cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device {str(device)[:40]!r}: not a device name; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cpu":
        return parsed
    backend: Any = torch.backends.mps if parsed.type == "mps" else getattr(torch, parsed.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise InputError(f"device {str(device)!r}: this machine (or this PyTorch build) has no {parsed.type} device")
    count = getattr(backend, "device_count", None)
    if parsed.index is not None and count is not None and parsed.index >= count():
        raise InputError(f"device {str(device)!r}: there are only {count()} {parsed.type} device(s)")
    return parsed
