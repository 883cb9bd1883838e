"""The long fuzz campaign: inputs from the seed corpus for N minutes, the failures kept in a folder.

The same generators and oracle as CI's bounded campaign (``tests/fuzz/``; see
``tests/fuzz/campaign.py`` for the targets and ``tests/fuzz/oracle.py`` for the property): every input
made from a real file of its kind (DICOM, NIfTI/Analyze, NRRD/MHA, MP4/AVI, cards, bundles,
manifests) must load, describe and explain, or be refused with one line, within the time-out,
without a crash, without memory no header check allowed, and without a file outside ``--out``.

Usage::

    python benchmarks/fuzz.py --minutes 30 [--seed 1] [--failures fuzz-failures] [--explain-every 10]
        [--timeout 60] [--budget-mb 3072] [--kinds dicom,nifti,...]

Prints the inputs tried and the failures found (each kept as ``<failures>/<target>-<failure>-<hash>/``
with the input and a ``failure.json`` saying what was run); exits 1 when any was found. Campaign
seeds differ from CI's (``tests/fuzz/test_fuzz_campaign.py``), so a long run tries new inputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fuzz package and io_fixtures live with the tests


def main() -> int:
    from fuzz.campaign import run_campaign
    from fuzz.oracle import BUDGET_MB, Oracle
    from fuzz.seeds import build_seeds

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="the campaign's seed (CI uses others)")
    parser.add_argument("--failures", type=Path, default=Path("fuzz-failures"), help="where failing inputs go")
    parser.add_argument("--explain-every", type=int, default=10, help="volcam explain/cohort on every n-th input")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds an input may take (a hang past it)")
    parser.add_argument("--budget-mb", type=int, default=BUDGET_MB, help="the child's address space above its start")
    parser.add_argument(
        "--kinds",
        default="",
        help="only seeds of these kinds (comma-separated): dicom, dicom-folder, nifti, analyze, itk-text, video, "
        "card, bundle, manifest",
    )
    options = parser.parse_args()

    options.failures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="volcam-fuzz-") as scratch:
        root = Path(scratch)
        seeds = build_seeds(root / "seeds")
        if options.kinds:
            wanted = {k.strip() for k in options.kinds.split(",") if k.strip()}
            known = sorted({s.kind for s in seeds})
            if unknown := sorted(wanted - set(known)):
                parser.error(f"--kinds: no seeds of kind {', '.join(unknown)}; the kinds are {', '.join(known)}")
            seeds = [s for s in seeds if s.kind in wanted]
        print(f"{len(seeds)} seeds: {', '.join(s.name for s in seeds)}", flush=True)
        (root / "work").mkdir()
        with Oracle(root / "oracle", timeout=options.timeout, budget_mb=options.budget_mb) as oracle:
            tally = run_campaign(
                seeds, oracle, root / "work", seed=options.seed, seconds=options.minutes * 60,
                explain_every=options.explain_every, keep=options.failures, say=lambda line: print(line, flush=True),
            )  # fmt: skip
            restarts = oracle.starts
    print(tally.line() + f"; the child started {restarts} times")
    for request, outcome, kept in tally.failures:
        print(f"  {request.target} {outcome.failure}: {outcome.detail[:200]} -> {kept}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
