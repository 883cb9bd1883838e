"""A fuzz campaign: inputs made from the seeds, each run through its targets by the :class:`Oracle`.

``run_campaign`` is what CI's bounded campaign (``tests/fuzz/test_fuzz_campaign.py``) and the long
one (``benchmarks/fuzz.py --minutes N``) both run. Input ``i`` of campaign ``seed`` is made from
seed ``i mod len(seeds)`` with ``Random(f"{seed}-{i}")``: the same numbers give the same inputs on
any machine. Targets per kind of seed: scans ``load`` and ``info`` (and every ``explain_every``-th
one ``volcam explain`` in-process with the demo model that fits it); cards and bundles
``load_model`` (and every ``explain_every``-th one ``volcam explain`` of a small scan with it);
manifests ``read_cases`` (and every ``explain_every``-th one ``volcam cohort``).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from fuzz.generators import make_input
from fuzz.oracle import Oracle, Outcome, Request, keep_failure
from fuzz.seeds import SAMPLE, Seed


@dataclass
class Tally:
    """What a campaign did: inputs made, target runs by status, the failures (kept where asked)."""

    inputs: int = 0
    runs: Counter = field(default_factory=Counter)
    by_target: Counter = field(default_factory=Counter)
    failures: list[tuple[Request, Outcome, Path | None]] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.runs.items()))
        targets = ", ".join(f"{n} {target}" for target, n in sorted(self.by_target.items()))
        return (
            f"{self.inputs} inputs, {sum(self.runs.values())} runs ({targets}): {statuses}; "
            f"{len(self.failures)} failures in {self.seconds:.0f} s"
        )


def requests_for(seed: Seed, path: Path, folder: Path, index: int, explain_every: int) -> list[Request]:
    """The runs of one input (see the module's list)."""
    requests = []
    out = folder / "out"
    explain = explain_every > 0 and index % explain_every == 0
    for target in seed.targets:
        requests.append(Request(target, path, folder))
    if not explain:
        return requests
    if seed.kind in ("card", "bundle"):
        scan = folder / "scan.nii.gz"
        shutil.copy(SAMPLE / "ct_covid_sample.nii.gz", scan)
        args = ["explain", str(scan), "--model", str(path), "--out", str(out), "--methods", "gradcam"]
        requests.append(Request("explain", path, folder, args, out))
    elif seed.kind == "manifest":
        args = ["cohort", str(path), "--model", str(SAMPLE / "ct_covid.card.json"), "--out", str(out)]
        args += ["--methods", "gradcam", "--faithfulness-steps", "0", "--no-prefetch"]
        requests.append(Request("cohort", path, folder, args, out))
    else:
        args = ["explain", str(path), "--model", str(SAMPLE / seed.card), "--out", str(out), "--methods", "gradcam"]
        requests.append(Request("explain", path, folder, args, out))
    return requests


def run_campaign(
    seeds: list[Seed],
    oracle: Oracle,
    work: Path,
    *,
    seed: int,
    count: int | None = None,
    seconds: float | None = None,
    explain_every: int = 10,
    keep: Path | None = None,
    say: object = None,
) -> Tally:
    """Make and run inputs until ``count`` inputs or ``seconds`` have passed (whichever first)."""
    tally = Tally()
    start = time.perf_counter()
    index = 0
    while (count is None or index < count) and (seconds is None or time.perf_counter() - start < seconds):
        chosen = seeds[index % len(seeds)]
        rng = Random(f"{seed}-{index}")
        folder = work / f"input-{seed}-{index:06d}"
        path = make_input(chosen, rng, folder)
        tally.inputs += 1
        for request in requests_for(chosen, path, folder, index // len(seeds), explain_every):
            outcome = oracle.run(request)
            tally.runs[outcome.failure or outcome.status] += 1
            tally.by_target[request.target] += 1
            if outcome.failed:
                kept = keep_failure(folder, request, outcome, keep) if keep is not None else None
                tally.failures.append((request, outcome, kept))
                if callable(say):
                    say(f"FAILED {chosen.name} #{index} {request.target}: {outcome.failure}: {outcome.detail[:300]}")
        shutil.rmtree(folder, ignore_errors=True)
        index += 1
    tally.seconds = time.perf_counter() - start
    return tally
