"""Every CAM method × every metric on the held-out synthetic chest-CT cohort with the demo CT model.

The held-out COVID phantoms the demo model was scored on (``synthetic.chest_ct(9000 + i,
covid=True)`` for odd ``i`` < 60: all 30 of them, as ``sample_data/train_demo_models.py`` draws
them) are explained for class 'covid' at the card's layer by each method. Localization is scored on
the scan's grid against the phantom's lesion mask (energy within the lung fields, whose lesion share
is the random baseline); faithfulness, sanity and robustness on the network's input. Deletion and
insertion run twice: over the whole input (deleted voxels → 0, insertion from a blur) and within the
lungs only (deleted voxels → the input's mean, insertion from a blur), because zeroing lung voxels,
which are already dark, hardly changes the input. Means over the cases, and the wall time per method
(map + all metrics). Learned methods (``lcam-fm``, ``lcam-img``) join when the card has their
trained modules.

Usage::

    python benchmarks/faithfulness.py [--cases 30] [--methods gradcam,gradcam++,...] [--threads 2]
                                      [--workdir DIR [--resume]]

``--workdir`` keeps one JSON per case and method, so ``--resume`` adds methods or cases to a run
without redoing the rest. The table is printed and written to ``benchmarks/results/faithfulness.md``.
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
RESULTS = HERE / "results" / "faithfulness.md"
SEED = 9000
COLUMNS = [
    ("pointing", "pointing game (5 mm)", "{:.2f}"),
    ("energy", "energy in lesions", "{:.3f}"),
    ("energy_random", "random baseline", "{:.3f}"),
    ("dice", "Dice, top-n", "{:.3f}"),
    ("lesion_hits", "lesion hit rate", "{:.2f}"),
    ("deletion", "deletion AUC ↓", "{:.3f}"),
    ("insertion", "insertion AUC ↑", "{:.3f}"),
    ("deletion_lungs", "deletion AUC, lungs ↓", "{:.3f}"),
    ("insertion_lungs", "insertion AUC, lungs ↑", "{:.3f}"),
    ("average_drop", "AD % ↓", "{:.1f}"),
    ("increase", "IC % ↑", "{:.0f}"),
    ("road", "ROAD ↑", "{:.3f}"),
    ("sanity", "sanity passed", "{:.2f}"),
    ("spearman", "Spearman, all random", "{:.2f}"),
    ("sensitivity", "max-sens. ↓", "{:.3f}"),
    ("gradient_ssim", "SSIM, grad noise 0.1 ↑", "{:.3f}"),
    ("seconds", "s per case", "{:.1f}"),
]


def score(model, phantom, name: str, steps: int) -> dict[str, float]:
    """Every metric of one method's map on one phantom, and the wall time of map + metrics."""
    from volcam import metrics
    from volcam.methods.registry import get_method

    net = model.network
    scan = phantom.metatensor()
    x = model.prepare(scan)[None].as_tensor()
    lesions = torch.from_numpy(phantom.mask > 0)
    lungs = torch.from_numpy(phantom.lungs)
    lungs_on_net = model.preprocessing.mask(lungs, like=scan)
    spacing = phantom.spacing
    start = time.perf_counter()
    explained = model.explain(scan, name, target="covid")
    layer = explained.layers[0]
    on_scan = explained.map.as_tensor()[0]
    on_net = explained.result.map
    on_net = on_net.as_tensor() if hasattr(on_net, "as_tensor") else on_net
    energy = metrics.energy_pointing_game(on_scan, lesions, region=lungs)
    di = metrics.deletion_insertion(net, x, on_net, target=1, steps=steps)
    # within the lungs a deleted voxel becomes healthy lung (the median lung voxel), not the image mean: mid grey
    # filling the lungs reads as ground glass everywhere, so that deletion would add lesion, not remove it
    healthy = float(x[0, 0][lungs_on_net].median())
    di_lungs = metrics.deletion_insertion(
        net, x, on_net, target=1, steps=steps, baseline=healthy, insertion_baseline=healthy, region=lungs_on_net
    )
    conf = metrics.average_drop_increase(net, x, on_net, target=1, window=(0.0, 1.0))
    extra = model.method_options(name, layer)  # a trained module (L-CAM) the card holds
    check = metrics.parameter_randomization(net, x, name, target=1, layer=layer, **extra)
    cell = {
        "pointing": metrics.pointing_game(on_scan, lesions, tolerance_mm=5.0, spacing=spacing).hits[0],
        "energy": energy.energy[0],
        "energy_random": energy.baseline[0],
        "dice": metrics.overlap(on_scan, lesions, thresholds=(0.5,)).matched_dice[0],
        "lesion_hits": metrics.lesion_hits(on_scan, lesions, tolerance_mm=5.0, spacing=spacing).hit_rate,
        "deletion": di.deletion.auc[0],
        "insertion": di.insertion.auc[0],
        "deletion_lungs": di_lungs.deletion.auc[0],
        "insertion_lungs": di_lungs.insertion.auc[0],
        "average_drop": conf.average_drop,
        "increase": conf.increase,
        "road": metrics.road(net, x, on_net, target=1).score[0],
        "sanity": check.passed,
        "spearman": check.spearman[-1].mean(),
        "sensitivity": metrics.max_sensitivity(net, x, name, 1, layer, n_samples=4, **extra).value[0],
    }
    if "gradients" in get_method(name).needs:
        cell["gradient_ssim"] = metrics.gradient_noise_stability(net, x, name, 1, layer, n_samples=4).mean[0]
    cell["seconds"] = time.perf_counter() - start
    return {key: float(value) for key, value in cell.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=30, help="held-out COVID phantoms (30: all of them)")
    parser.add_argument("--methods", default=None, help="comma-separated; default: every registered method")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep one JSON per case and method here")
    parser.add_argument("--resume", action="store_true", help="reuse the results already in --workdir")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import volcam
    from volcam import sample_data as sd
    from volcam.testing.phantoms import chest_ct

    model = volcam.load_model(sd.file(sd.CT_CARD))
    names = args.methods.split(",") if args.methods else [m.name for m in volcam.methods()]
    seeds = [SEED + i for i in range(1, 2 * args.cases, 2)]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for case, seed in enumerate(seeds):
        phantom = None
        for name in names:
            if name in skipped:
                continue
            cached = args.workdir / f"{seed}--{name}.json" if args.workdir else None
            if cached is not None and args.resume and cached.exists():
                cell = json.loads(cached.read_text())
            else:
                phantom = phantom or chest_ct(seed, covid=True)
                try:
                    cell = score(model, phantom, name, args.steps)
                except volcam.VolcamError as error:  # e.g. a learned method the card has no module for
                    skipped[name] = str(error).splitlines()[0]
                    print(f"{name}: skipped ({skipped[name]})", flush=True)
                    continue
                if cached is not None:
                    cached.write_text(json.dumps(cell))
                print(f"case {case + 1}/{len(seeds)} {name}: {cell['seconds']:.1f} s", flush=True)
            for key, value in cell.items():
                rows[name].setdefault(key, []).append(value)
    total = time.perf_counter() - started
    load_end = os.getloadavg()[0]

    shape = tuple(model.prepare(chest_ct(seeds[0], covid=True).metatensor()).shape[1:])

    def cell(values: list[float] | None, fmt: str) -> str:
        return fmt.format(statistics.fmean(values)) if values else "–"

    header = "| method | cases | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [
        "# Every method × every metric on the demo CT model",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs; torch {torch.__version__}, {args.threads} threads; load average (1 min) "
        f"{load_start:.2f} at start, {load_end:.2f} at end; total {total:.0f} s"
        + (" (this invocation; cells reused from `--workdir` kept their own times)" if args.resume else ""),
        f"- model: `sample_data/ct_covid.card.json` (network input {'×'.join(map(str, shape))}); "
        f"{len(seeds)} held-out COVID phantoms (`chest_ct(9000 + i, covid=True)`, odd i < {2 * args.cases}), "
        "class 'covid' explained at the card's layer",
        "- localization on the scan's grid (128×128×48, 0.7×0.7×2.5 mm) against the lesion mask; energy within "
        "the lung fields (random baseline: the lesions' share of the lungs); Dice of the top-n voxels, n = lesion "
        "volume; a lesion is hit where the map reaches half its maximum within 5 mm",
        f"- faithfulness on the network input: deletion to zeros / insertion from a blur, {args.steps} steps, "
        "over the whole input; and within the lungs (the lung mask carried to the network grid by the card's "
        "geometric steps), deleted voxels → healthy lung (the median lung voxel of the input), insertion from "
        "all-healthy lungs; AD/IC with the [0, 1] window; "
        "ROAD 10..90%, 26 neighbours, noise 0.01",
        "- sanity: cascading randomization from the head down; pass = the map changed (Spearman or SSIM < 0.5 "
        "with every block random); robustness: max-sensitivity, ±0.02 uniform input noise, 4 draws; gradient "
        "noise σ = 0.1 · std(g), 4 draws (gradient methods)",
        "- means over the cases; ↓ lower is better, ↑ higher is better",
        "",
        header,
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for name in names:
        if name in skipped and not rows[name]:
            continue
        cases = len(rows[name].get("seconds", []))
        lines.append(
            f"| {name} | {cases} | " + " | ".join(cell(rows[name].get(k), fmt) for k, _, fmt in COLUMNS) + " |"
        )
    lines += ["", *(f"- {name}: not run ({why})" for name, why in skipped.items())]
    text = "\n".join([*lines, ""])
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
