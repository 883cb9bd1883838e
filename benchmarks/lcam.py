"""L-CAM inference cost against one bare forward of the classifier (target: ≤ 1.10×).

Two cases: the demo CT model (``sample_data/ct_covid.card.json``, its shipped L-CAM-Fm and L-CAM-Img
modules, the sample CT after the card's preprocessing: 1×1×32×32×24) and MONAI's 3D ``resnet18`` at
96³ (layer4, an untrained attention module of the same shape a trained one has: the cost does not
depend on the weights). Each timed call explains a fresh copy of the input (so volcam's per-input
forward cache never answers) and returns the normalised map on the input grid; the floor is
``with torch.no_grad(): model(x)``. Floor and L-CAM calls alternate, so both see the same load from
other processes on the shared machine, and the median of each is reported with the CPU-seconds per
second other processes used meanwhile.

Usage::

    python benchmarks/lcam.py [--repeats 15] [--threads 2]

The table is printed and written to ``benchmarks/results/lcam.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine import busy_jiffies, own_cpu_seconds

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "lcam.md"
LIMIT = 1.10


def demo_case() -> tuple[str, torch.nn.Module, torch.Tensor, str, dict[str, torch.nn.Module]]:
    import volcam
    from volcam import sample_data as sd

    model = volcam.load_model(sd.file(sd.CT_CARD))
    x = model.prepare(volcam.load(sd.file(sd.CT_NIFTI)))[None].as_tensor()
    modules = {v: model.lcam_module(v) for v in ("fm", "img")}
    return "demo CT model (ct_covid), layer2", model.network, x, model.card.lcam["fm"]["layer"], modules


def resnet_case() -> tuple[str, torch.nn.Module, torch.Tensor, str, dict[str, torch.nn.Module]]:
    from monai.networks.nets import resnet18

    from volcam.methods.learned import LCamAttention

    torch.manual_seed(0)
    net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    x = torch.randn(1, 1, 96, 96, 96, generator=torch.Generator().manual_seed(1))
    module = LCamAttention(512, 2).eval()
    return "MONAI resnet18 (3D) at 96³, layer4", net, x, "layer4", {"fm": module, "img": module}


def timed(run: Callable[[torch.Tensor], object], x: torch.Tensor) -> float:
    xi = x.clone()
    start = time.perf_counter()
    run(xi)
    return time.perf_counter() - start


def measure(net: torch.nn.Module, x: torch.Tensor, layer: str, modules: dict, repeats: int) -> dict[str, list[float]]:
    import volcam

    engine = volcam.CamEngine(net, layer, progress=False)

    def floor(xi: torch.Tensor) -> None:
        with torch.no_grad():
            net(xi)

    own: dict[str, list[float]] = {"lcam-fm": [], "lcam-img": []}

    def explainer(method: str) -> Callable[[torch.Tensor], torch.Tensor]:
        module = modules[method.removeprefix("lcam-")]

        def run(xi: torch.Tensor) -> torch.Tensor:
            engine.close()
            result = engine.explain(xi, method, module=module)
            own[method].append(result.timings["method"] + result.timings["upsample"])
            return result.map

        return run

    runs = {"floor": floor, "lcam-fm": explainer("lcam-fm"), "lcam-img": explainer("lcam-img")}
    for run in runs.values():  # warm-up (and the first auto-layer probe, thread pools, ...)
        timed(run, x)
    times: dict[str, list[float]] = {k: [] for k in runs}
    ticks = os.sysconf("SC_CLK_TCK")
    busy0, own0, wall0 = busy_jiffies(), own_cpu_seconds(), time.perf_counter()
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run, x))
    wall = time.perf_counter() - wall0
    other = ((busy_jiffies() - busy0) / ticks - (own_cpu_seconds() - own0)) / wall
    times["other_load"] = [max(other, 0.0)]
    times.update({f"{k} own": v for k, v in own.items()})
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    header = [
        "# L-CAM inference cost: one forward, against a bare forward",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.platform()}; "
        f"torch {torch.__version__}, {args.threads} threads; load average (1 min) {load0:.2f} at start",
        f"- {args.repeats} timed calls per variant after 1 warm-up, floor and L-CAM calls alternating, median reported",
        "- L-CAM call: `CamEngine.explain(x, 'lcam-fm' | 'lcam-img', module=...)` on a fresh copy of the input: "
        "hooked forward + 1×1 conv + sigmoid + upsampling + normalisation, map on the input grid",
        "- other load: CPU-seconds per second used by other processes during the timed calls "
        "(0 = idle, 2 = both cores busy elsewhere); shared machine, other engineers at work",
        "- L-CAM's own ms: the engine's `method` + `upsample` timings (1×1 conv, sigmoid, class pick, upsampling, "
        "normalisation); the rest of an L-CAM call is the hooked forward itself",
    ]
    rows = [
        "| case | variant | median s | × floor | L-CAM's own ms | other load |",
        "|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for make in (demo_case, resnet_case):
        title, net, x, layer, modules = make()
        times = measure(net, x, layer, modules, args.repeats)
        floor = statistics.median(times["floor"])
        other = times["other_load"][0]
        for name in ("floor", "lcam-fm", "lcam-img"):
            median = statistics.median(times[name])
            label = "no_grad forward (floor)" if name == "floor" else name
            mine = "–" if name == "floor" else f"{1000 * statistics.median(times[f'{name} own']):.2f}"
            rows.append(f"| {title} | {label} | {median:.4f} | {median / floor:.3f}× | {mine} | {other:.2f} |")
            if name != "floor":
                ok = "PASS" if median / floor <= LIMIT else "FAIL"
                verdicts.append(f"- {ok} {title}: {name} {median / floor:.3f}× the floor (target ≤ {LIMIT:.2f}×)")
        print("\n".join(rows[-3:]), flush=True)
    RESULTS.write_text("\n".join([*header, "", "## Targets", "", *verdicts, "", "## Results", "", *rows, ""]))
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
