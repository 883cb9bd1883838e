"""Deletion + insertion against the bare forwards they need: the cost target of issue 8.

Deletion and insertion with S steps score ``2·S`` perturbed copies of the input (plus the input
itself once). The floor is those ``2·S`` rows through the model in the same batches, with nothing
else: ``model(batch)`` under ``no_grad`` on copies made before the clock starts. The target is
``volcam.metrics.deletion_insertion`` ≤ 1.10× the floor.

MONAI's 3D ``resnet18`` (1 channel, 2 classes, ``torch.manual_seed(0)`` weights), a 1×1×N³ input
of smoothed noise with a Grad-CAM map, class 1 scored. Runs, in one process: a warm-up, then
floor, metric, floor (the floor is the mean of the two, so drift in the machine's load shows as
their spread). Inside the metric run, forward hooks time the model calls, so the report also says
where the rest of the time goes (ranking, building the batches, the blur).

Usage::

    python benchmarks/faithfulness_cost.py [--size 64] [--steps 100] [--batch-size 16] [--threads 2]

The result is printed and written to ``benchmarks/results/faithfulness_cost.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "faithfulness_cost.md"
LIMIT = 1.10


def floor(model: torch.nn.Module, x: torch.Tensor, rows: int, batch_size: int) -> float:
    """Seconds for ``rows`` copies of ``x`` through the model, ``batch_size`` per call."""
    batches = [x.repeat(min(batch_size, rows - i), 1, 1, 1, 1) for i in range(0, rows, batch_size)]
    start = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model(b)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from monai.networks.nets import resnet18

    import volcam
    from volcam.maps.filters import gaussian_filter_mm
    from volcam.metrics import deletion_insertion

    torch.manual_seed(0)
    model = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    gen = torch.Generator().manual_seed(1)
    n = args.size
    x = gaussian_filter_mm(torch.randn(1, 1, n, n, n, generator=gen), 2.0)
    x = (x - x.mean()) / x.std()
    cam = volcam.explain(model, x, "gradcam", target=1).map
    rows = 2 * args.steps
    load_start = os.getloadavg()[0]

    # warm-up: allocator and oneDNN kernels for this batch shape
    floor(model, x, args.batch_size, args.batch_size)

    calls: list[float] = []
    starts: list[float] = []
    first = floor(model, x, rows, args.batch_size)
    print(f"floor 1: {first:.2f} s", flush=True)
    pre = model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    post = model.register_forward_hook(lambda *_: calls.append(time.perf_counter() - starts[-1]))
    start = time.perf_counter()
    result = deletion_insertion(model, x, cam, target=1, steps=args.steps, batch_size=args.batch_size)
    metric = time.perf_counter() - start
    pre.remove()
    post.remove()
    print(f"deletion + insertion: {metric:.2f} s ({result.forwards} rows)", flush=True)
    second = floor(model, x, rows, args.batch_size)
    print(f"floor 2: {second:.2f} s", flush=True)
    load_end = os.getloadavg()[0]

    # the demo CT model on the shipped sample CT, 1% steps: the "under a minute on 2 cores" target
    from volcam import sample_data as sd

    demo = volcam.load_model(sd.file(sd.CT_CARD))
    scan = volcam.load(sd.file(sd.CT_DICOM))
    explained = demo.explain(scan, "gradcam", target="covid")
    demo_x = demo.prepare(scan)[None].as_tensor()
    start = time.perf_counter()
    demo_result = deletion_insertion(demo.network, demo_x, explained.result.map, target=1, steps=100)
    demo_seconds = time.perf_counter() - start
    print(f"demo CT model: {demo_seconds:.2f} s", flush=True)

    bare = (first + second) / 2
    ratio = metric / bare
    inside = sum(calls)
    verdict = "PASS" if ratio <= LIMIT else "FAIL"
    lines = [
        "# Deletion + insertion cost against the bare forwards",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.platform()}; "
        f"load average (1 min) {load_start:.2f} at start, {load_end:.2f} at end; other processes may have been running",
        f"- torch {torch.__version__}, {args.threads} threads; volcam {volcam.__version__}",
        f"- model: MONAI resnet18 (3D), 1 channel, 2 classes, seed-0 weights, eval mode; input 1×1×{n}³ "
        "smoothed noise, z-scored; map: volcam Grad-CAM of class 1 at layer4",
        f"- metric: `deletion_insertion(steps={args.steps}, batch_size={args.batch_size})`, deletion to zeros, "
        f"insertion from a blurred copy (σ 5 mm), class-1 probability; {result.forwards} model rows "
        f"(2·S = {rows} perturbed + the input once)",
        f"- floor: {rows} copies of the input through the model in batches of {args.batch_size} under `no_grad`, "
        "copies made before the clock starts; measured before and after the metric, mean used",
        "",
        "## Target",
        "",
        f"- {verdict}: deletion + insertion {metric:.2f} s = **{ratio:.3f}×** the floor's {bare:.2f} s "
        f"(target ≤ {LIMIT:.2f}×)",
        f"- the same run, against its own model calls: {metric:.2f} s = {metric / inside:.3f}× the {inside:.2f} s "
        "the model itself took (immune to load drift between runs; includes the one extra row for the input)",
        f"- {'PASS' if demo_seconds < 60 else 'FAIL'}: on the demo CT model (sample_data/ct_covid.card.json, the "
        f"sample CT's {'×'.join(map(str, demo_x.shape[2:]))} network input), both curves with 1% steps in "
        f"{demo_seconds:.2f} s (target < 60 s on 2 cores); Grad-CAM of 'covid': deletion AUC "
        f"{demo_result.deletion.auc.item():.3f}, insertion AUC {demo_result.insertion.auc.item():.3f}",
        "",
        "## Numbers",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| floor, before | {first:.2f} |",
        f"| deletion + insertion | {metric:.2f} |",
        f"| floor, after | {second:.2f} |",
        f"| model calls inside the metric ({len(calls)} calls) | {inside:.2f} |",
        f"| the rest: ranking, batches, blur, softmax | {metric - inside:.2f} |",
        "",
        f"Deletion AUC {result.deletion.auc.item():.3f}, insertion AUC {result.insertion.auc.item():.3f} "
        "(an untrained network: the numbers show the cost, not a faithful map).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
