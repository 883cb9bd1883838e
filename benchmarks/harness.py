"""What the side-by-side benchmarks share in how they run their variants (imported by the scripts beside it)."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["in_rounds"]


def in_rounds(
    variants: list[str], repeats: int, run: Callable[[str, int], dict], seconds: Callable[[dict], float]
) -> dict[str, list[dict]]:
    """Each variant ``repeats`` times, in rounds (every variant once per round, in the order given),
    rather than all repeats of one variant and then the next: on a machine shared with other jobs, a
    slow minute then weighs on every variant alike instead of on whichever ran in it, so the ratios
    between variants hold up better than the seconds. ``run(variant, i)`` runs one fresh process;
    its line on the terminal gives ``seconds(result)`` and its peak. Returns each variant's runs, in order."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for i in range(repeats):
        for variant in variants:
            print(f"{variant} ({i + 1}/{repeats}), load {os.getloadavg()[0]:.2f} ...", flush=True)
            runs[variant].append(run(variant, i))
            r = runs[variant][-1]
            line = "FAILED" if "error" in r else f"{seconds(r):.2f} s, peak {r['peak_mib']:.0f} MiB"
            print(f"{variant}: {line}", flush=True)
    return runs
