"""What the benchmarks say about the machine they ran on (imported by the scripts beside it)."""

from __future__ import annotations

import compileall
import importlib.util
import platform
from pathlib import Path

__all__ = ["compile_sources", "cpu_model"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compile_sources(packages: tuple[str, ...] = ("volcam", "napari_volcam")) -> float:
    """Write the bytecode of ``packages`` (as installing a wheel does) before any timed process starts.

    Every variant runs in a fresh process, and the first one to import a module of a fresh checkout or
    a changed one compiles it (0.05-0.3 s, and only in whichever variant imports it first): a cost no
    installed copy pays, which would land in one variant's figures by the order they run in.
    Returns the seconds it took."""
    import time

    start = time.perf_counter()
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                compileall.compile_dir(Path(folder), quiet=1)
    return time.perf_counter() - start
