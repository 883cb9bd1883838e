"""Transformer methods on the demo ViT: where do Grad-CAM, rollout and gradient-weighted attention point?

The held-out COVID phantoms the demo models were scored on (``chest_ct(9000 + i, covid=True)`` for
odd ``i`` < 60: all 30, as ``sample_data/train_demo_models.py`` draws them) are explained for class
'covid' with ``sample_data/ct_covid_vit.card.json`` at the card's layer (``blocks.2.norm1``) by each
method. On the scan's grid, against the phantom's lesion mask: the pointing game (the map's maximum
within 5 mm of a lesion, as the card's ``metrics.json`` scores it) and the energy pointing game within
the lung fields (the lesions' share of the lungs is its random baseline). Hits are counted out of the
cases, with a 95 % Wilson interval; energy means with a 95 % case-level bootstrap interval; the paired
differences against rollout on the same cases (bootstrap interval, p-value Holm-corrected over the
comparisons), from :mod:`volcam.metrics.intervals`.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/transformer_methods.py [--cases 30]
        [--methods gradcam,rollout,attention-gradient] [--threads 1]

The table is printed and written to ``benchmarks/results/transformer_methods.md`` (a ``## Reading``
section already there, written by hand, is kept); the per-case values to
``benchmarks/results/transformer_methods.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "transformer_methods.md"
CASES_JSON = HERE / "results" / "transformer_methods.json"
SEED = 9000
TOLERANCE_MM = 5.0
METHODS = ("gradcam", "rollout", "attention-gradient")
BASELINE = "rollout"
READING = "## Reading"


def score(model, phantom, name: str) -> dict[str, float]:
    """Pointing (hit 0/1) and energy within the lungs of one method's map on one phantom, and its time."""
    from volcam import metrics

    scan = phantom.metatensor()
    lesions = torch.from_numpy(phantom.mask > 0)
    lungs = torch.from_numpy(phantom.lungs)
    start = time.perf_counter()
    explained = model.explain(scan, name, target="covid")
    seconds = time.perf_counter() - start
    on_scan = explained.map.as_tensor()[0]
    pointing = metrics.pointing_game(on_scan, lesions, tolerance_mm=TOLERANCE_MM, spacing=phantom.spacing)
    energy = metrics.energy_pointing_game(on_scan, lesions, region=lungs)
    return {
        "pointing": float(pointing.hits[0]),
        "distance_mm": float(pointing.distance_mm[0]),
        "energy": float(energy.energy[0]),
        "energy_random": float(energy.baseline[0]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=30, help="held-out COVID phantoms (30: all of them)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated registry names")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import volcam
    from volcam import sample_data as sd
    from volcam.metrics.intervals import holm, interval_of, paired_difference
    from volcam.testing.phantoms import chest_ct

    model = volcam.load_model(sd.file(sd.CT_VIT_CARD))
    names = args.methods.split(",")
    seeds = [SEED + i for i in range(1, 2 * args.cases, 2)]
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    cells: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for case, seed in enumerate(seeds):
        phantom = chest_ct(seed, covid=True)
        for name in names:
            cells[name].append(score(model, phantom, name))
        row = ", ".join(f"{n} {'hit' if cells[n][-1]['pointing'] else 'miss'}" for n in names)
        print(f"case {case + 1}/{len(seeds)} (seed {seed}): {row}", flush=True)
    total = time.perf_counter() - started
    load_end = os.getloadavg()[0]

    def column(name: str, key: str) -> list[float]:
        return [c[key] for c in cells[name]]

    comparisons = [n for n in names if n != BASELINE] if BASELINE in names else []
    diffs = {
        (n, key): paired_difference(column(n, key), column(BASELINE, key))
        for n in comparisons
        for key in ("pointing", "energy")
    }
    corrected = dict(zip(diffs, holm([d.p_value for d in diffs.values()]), strict=True)) if diffs else {}

    layer = model.method_layer(names[0], None)
    lines = [
        "# Transformer methods on the demo ViT: pointing game on the 30 held-out phantoms",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs; torch {torch.__version__}, {args.threads} thread(s); load average "
        f"(1 min) {load_start:.2f} at start, {load_end:.2f} at end; total {total:.0f} s",
        f"- model: `sample_data/ct_covid_vit.card.json` (MONAI 3D ViT, 4×4×4-voxel patches on an 8×8×6 grid, "
        f"3 blocks, class token), class 'covid' explained at the card's layer `{layer}`",
        f"- cases: {len(seeds)} held-out COVID phantoms (`chest_ct(9000 + i, covid=True)`, odd i < {2 * args.cases})",
        f"- pointing game: the map's maximum on the scan's grid within {TOLERANCE_MM:g} mm of a lesion; 95 % "
        "Wilson interval of the hit rate",
        "- energy: the map's share inside the lesions, within the lung fields (random baseline: the lesions' share "
        "of the lungs); mean over the cases with a 95 % studentized case-level bootstrap interval (2000 resamples, "
        "seed 0)",
        f"- paired differences against {BASELINE} on the same cases: bootstrap interval of the mean difference and "
        f"its p-value, Holm-corrected over the {len(diffs)} comparisons",
        "- benchmark: `OMP_NUM_THREADS=1 python benchmarks/transformer_methods.py`",
        "",
        "| method | pointing hits | hit rate [95 %] | median distance of the maximum to a lesion (mm) | "
        "energy in lesions [95 %] | random baseline | s per case |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        hits = column(name, "pointing")
        rate = interval_of(hits, hits=1.0)
        energy = interval_of(column(name, "energy"))
        base = sum(column(name, "energy_random")) / len(seeds)
        seconds = sum(column(name, "seconds")) / len(seeds)
        distance = statistics.median(column(name, "distance_mm"))
        lines.append(
            f"| {name} | {int(sum(hits))} / {len(hits)} | {rate.estimate:.2f} [{rate.low:.2f}, {rate.high:.2f}] | "
            f"{distance:.1f} | {energy.estimate:.3f} [{energy.low:.3f}, {energy.high:.3f}] | "
            f"{base:.3f} | {seconds:.2f} |"
        )
    if diffs:
        lines += [
            "",
            f"| method − {BASELINE} | metric | mean difference [95 %] | p (Holm) |",
            "|---|---|---:|---:|",
        ]
        for (name, key), d in diffs.items():
            iv = d.difference
            p = corrected[(name, key)]
            lines.append(f"| {name} | {key} | {iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}] | {p:.3g} |")
    lines += [
        "",
        "Per case (✓ a pointing hit):",
        "",
        "| seed | " + " | ".join(names) + " |",
        "|---:|" + ":---:|" * len(names),
    ]
    for i, seed in enumerate(seeds):
        marks = ["✓" if cells[n][i]["pointing"] else "·" for n in names]
        lines.append(f"| {seed} | " + " | ".join(marks) + " |")
    text = "\n".join([*lines, ""])
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        old = RESULTS.read_text() if RESULTS.exists() else ""
        reading = old[old.index(READING) :] if READING in old else ""
        RESULTS.write_text(text + ("\n" + reading if reading else ""))
        CASES_JSON.write_text(json.dumps({"seeds": seeds, "methods": cells}, indent=1) + "\n")


if __name__ == "__main__":
    main()
