"""How much memory the machine has free, and the one check a reader makes before it allocates.

A header can claim any size: a 1024³ float32 NIfTI whose data part is a few bytes, a card whose
network has billions of parameters. Sizes are checked from the header against what is available
*before* anything is allocated, so such a file is one line, not a ``MemoryError`` or a swapping
machine.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from volcam.errors import FileFormatError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import DTypeLike

__all__ = ["available_bytes", "check_fits", "empty"]


def available_bytes() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux, else the free
    physical pages); ``None`` where the platform does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(nbytes: int, where: object, what: str = "the image data") -> None:
    """Raise a one-line :class:`FileFormatError` when ``nbytes`` exceed the memory available.

    Args:
        nbytes: what the allocation would take, computed from a header.
        where: the file, named in the message.
        what: what would be allocated, for the message.
    """
    available = available_bytes()
    if available is not None and nbytes > available:
        raise FileFormatError(
            f"{where}: {what} would need {nbytes / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB of memory available (is the header damaged?)"
        )


def empty(shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """An uninitialised array for a reader to fill, in memory torch allocated (the MetaTensor made of
    it shares it). Check the size with :func:`check_fits` first.

    Not ``np.empty``: numpy asks the kernel for transparent huge pages for a large array
    (``MADV_HUGEPAGE``), and in a process that had imported torch, reading a 432 MB clip into such
    an array took 0.17–1.4 s (faulting the pages in), against a steady 0.24–0.35 s in torch's plain
    pages (2 shared cores, ``benchmarks/ultrasound.py``).
    """
    import numpy as np  # not at the top: light modules (a card's size check) import this one
    import torch

    dtype = np.dtype(dtype)
    raw = torch.empty(math.prod(shape) * dtype.itemsize, dtype=torch.uint8).numpy()
    return raw.view(dtype).reshape(shape)
