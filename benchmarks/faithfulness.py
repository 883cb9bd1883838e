"""Every CAM method × every metric on held-out synthetic chest CTs with the demo CT model.

The held-out COVID phantoms the demo model was scored on (``synthetic.chest_ct(9000 + i,
covid=True)`` for odd ``i``, as ``sample_data/train_demo_models.py`` draws them) are explained for
class 'covid' at the card's layer by each method. Localization is scored on the scan's grid against
the phantom's lesion mask (energy within the lung fields, whose lesion share is the random
baseline); faithfulness, sanity and robustness on the network's input. Means over the cases, and
the wall time per method (map + all metrics).

Usage::

    python benchmarks/faithfulness.py [--cases 10] [--methods gradcam,gradcam++,...] [--threads 2]

The table is printed and written to ``benchmarks/results/faithfulness.md``.
"""

from __future__ import annotations

import argparse
import datetime
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
    ("average_drop", "AD % ↓", "{:.1f}"),
    ("increase", "IC % ↑", "{:.0f}"),
    ("road", "ROAD ↑", "{:.3f}"),
    ("sanity", "sanity passed", "{:.2f}"),
    ("spearman", "Spearman, all random", "{:.2f}"),
    ("sensitivity", "max-sens. ↓", "{:.3f}"),
    ("gradient_ssim", "SSIM, grad noise 0.1 ↑", "{:.3f}"),
    ("seconds", "s per case", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10, help="held-out COVID phantoms")
    parser.add_argument("--methods", default=None, help="comma-separated; default: every registered method")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import volcam
    from volcam import metrics
    from volcam import sample_data as sd
    from volcam.methods.registry import get_method
    from volcam.synthetic import chest_ct

    model = volcam.load_model(sd.file(sd.CT_CARD))
    net = model.network
    names = args.methods.split(",") if args.methods else [m.name for m in volcam.methods()]
    phantoms = [chest_ct(SEED + i, covid=True) for i in range(1, 2 * args.cases, 2)]
    load_start = os.getloadavg()[0]
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    started = time.perf_counter()
    for case, phantom in enumerate(phantoms):
        scan = phantom.metatensor()
        x = model.prepare(scan)[None].as_tensor()
        lesions = torch.from_numpy(phantom.mask > 0)
        lungs = torch.from_numpy(phantom.lungs)
        spacing = phantom.spacing
        for name in names:
            start = time.perf_counter()
            explained = model.explain(scan, name, target="covid")
            layer = explained.layers[0]
            on_scan = explained.map.as_tensor()[0]
            on_net = explained.result.map
            on_net = on_net.as_tensor() if hasattr(on_net, "as_tensor") else on_net
            r = rows[name]

            def add(key: str, value: float, r=r) -> None:
                r.setdefault(key, []).append(float(value))

            add("pointing", metrics.pointing_game(on_scan, lesions, tolerance_mm=5.0, spacing=spacing).hits[0])
            energy = metrics.energy_pointing_game(on_scan, lesions, region=lungs)
            add("energy", energy.energy[0])
            add("energy_random", energy.baseline[0])
            add("dice", metrics.overlap(on_scan, lesions, thresholds=(0.5,)).matched_dice[0])
            add("lesion_hits", metrics.lesion_hits(on_scan, lesions, tolerance_mm=5.0, spacing=spacing).hit_rate)
            di = metrics.deletion_insertion(net, x, on_net, target=1, steps=args.steps)
            add("deletion", di.deletion.auc[0])
            add("insertion", di.insertion.auc[0])
            conf = metrics.average_drop_increase(net, x, on_net, target=1, window=(0.0, 1.0))
            add("average_drop", conf.average_drop)
            add("increase", conf.increase)
            add("road", metrics.road(net, x, on_net, target=1).score[0])
            check = metrics.parameter_randomization(net, x, name, target=1, layer=layer)
            add("sanity", check.passed)
            add("spearman", check.spearman[-1].mean())
            add("sensitivity", metrics.max_sensitivity(net, x, name, 1, layer, n_samples=4).value[0])
            if "gradients" in get_method(name).needs:
                add("gradient_ssim", metrics.gradient_noise_stability(net, x, name, 1, layer, n_samples=4).mean[0])
            add("seconds", time.perf_counter() - start)
            print(f"case {case + 1}/{len(phantoms)} {name}: {r['seconds'][-1]:.1f} s", flush=True)
    total = time.perf_counter() - started
    load_end = os.getloadavg()[0]

    def cell(values: list[float] | None, fmt: str) -> str:
        return fmt.format(statistics.fmean(values)) if values else "–"

    header = "| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [
        "# Every method × every metric on the demo CT model",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs; torch {torch.__version__}, {args.threads} threads; load average (1 min) "
        f"{load_start:.2f} at start, {load_end:.2f} at end; total {total:.0f} s",
        f"- model: `sample_data/ct_covid.card.json` (network input {'×'.join(map(str, x.shape[2:]))}); "
        f"{len(phantoms)} held-out COVID phantoms (`chest_ct(9000 + i, covid=True)`, odd i < {2 * args.cases}), "
        "class 'covid' explained at the card's layer",
        "- localization on the scan's grid (128×128×48, 0.7×0.7×2.5 mm) against the lesion mask; energy within "
        "the lung fields (random baseline: the lesions' share of the lungs); Dice of the top-n voxels, n = lesion "
        "volume; a lesion is hit where the map reaches half its maximum within 5 mm",
        f"- faithfulness on the network input: deletion to zeros / insertion from a blur, {args.steps} steps; "
        "AD/IC with the [0, 1] window; ROAD 10..90%, 26 neighbours, noise 0.01",
        "- sanity: cascading randomization from the head down; pass = the map changed (Spearman or SSIM < 0.5 "
        "with every block random); robustness: max-sensitivity, ±0.02 uniform input noise, 4 draws; gradient "
        "noise σ = 0.1 · std(g), 4 draws (gradient methods)",
        "- means over the cases; ↓ lower is better, ↑ higher is better",
        "",
        header,
        "|---|" + "---|" * len(COLUMNS),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(rows[name].get(k), fmt) for k, _, fmt in COLUMNS) + " |")
    text = "\n".join([*lines, ""])
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
