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

from volcam.errors import MemoryLimitError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import DTypeLike

__all__ = ["available_bytes", "check_fits", "empty"]


def available_bytes() -> int | None:
    """Bytes of memory available to a new allocation: the least of the machine's (``MemAvailable`` on
    Linux, else the free physical pages), what this process's own address-space limit leaves
    (``ulimit -v``, ``prlimit --as``: past it an allocation fails however much the machine has) and
    what its cgroup's limit leaves (a container's ``--memory``: past it the kernel kills the process);
    ``None`` where none of them is known."""
    known = [found for found in (_machine_bytes(), _address_space_left(), _cgroup_left()) if found is not None]
    return max(0, min(known)) if known else None


def _machine_bytes() -> int | None:
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


def _address_space_left() -> int | None:
    """The soft ``RLIMIT_AS`` less the address space in use (``VmSize``); None without a limit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY or limit < 0:
        return None
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return limit - int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return limit


def _cgroup_left() -> int | None:
    """A cgroup v2 ``memory.max`` (this process's group, as the namespace shows it) less the memory the
    group holds that cannot be reclaimed (its anonymous pages); None without a limit."""
    try:
        with open("/proc/self/cgroup") as groups:
            path = next((line[3:].strip() for line in groups if line.startswith("0::")), None)
        if path is None:
            return None
        folder = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(folder, "memory.max")) as found:
            text = found.read().strip()
        if text == "max":
            return None
        with open(os.path.join(folder, "memory.stat")) as stat:
            anon = next((int(line.split()[1]) for line in stat if line.startswith("anon ")), 0)
        return int(text) - anon
    except (OSError, ValueError, IndexError):
        return None


def check_fits(nbytes: int, where: object, what: str = "the image data") -> None:
    """Raise a one-line :class:`MemoryLimitError` (a ``FileFormatError`` and a ``MemoryError``) when
    ``nbytes`` exceed the memory available (:func:`available_bytes`).

    Args:
        nbytes: what the allocation would take, computed from a header.
        where: the file, named in the message.
        what: what would be allocated, for the message.
    """
    available = available_bytes()
    if available is not None and nbytes > available:
        raise MemoryLimitError(
            f"{where}: {what} would need {nbytes / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB of memory available (is the header damaged?)"
        )


def empty(shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """An uninitialised array for a reader to fill, in memory torch allocated (the MetaTensor made of
    it shares it). Check the size with :func:`check_fits` first.

    Not ``np.empty``: numpy asks the kernel for transparent huge pages for a large array
    (``MADV_HUGEPAGE``), which where the kernel defragments for such requests (``defrag`` =
    ``madvise``, the default) compacts memory at each fault. Reading a 432 MB clip into such an
    array took 0.17–1.4 s, against a steady 0.24–0.35 s in torch's plain pages; a 512×512×300 CT
    series 0.55–0.63 s (0.3–0.4 s of it in the kernel), against 0.31–0.35 s (2 shared cores,
    ``benchmarks/ultrasound.py`` and ``clinical.py``). Every reader's full-size array comes from here.
    """
    import numpy as np  # not at the top: light modules (a card's size check) import this one
    import torch

    dtype = np.dtype(dtype)
    raw = torch.empty(math.prod(shape) * dtype.itemsize, dtype=torch.uint8).numpy()
    return raw.view(dtype).reshape(shape)
