"""Grad-CAM cost against a bare forward: volcam beside MONAI, TorchCAM and pytorch-grad-cam.

For MONAI's 3D ``resnet18`` at 96³ and 128³, its 3D ``DenseNet121`` at 96³ and its 3D ``ViT``
(ViT-B/16: 12 blocks of 768 channels, 16³-voxel patches, a class token) at 96³ (1 channel, 2
classes, class 1 explained at ``layer4`` / ``class_layers.relu`` / ``blocks.11.norm1``, the ViT's
tokens laid back on their 6×6×6 grid), each variant runs in a fresh process: a bare
``no_grad`` forward (the floor), volcam Grad-CAM, MONAI ``GradCAM``, TorchCAM ``GradCAM`` and
pytorch-grad-cam ``GradCAM``. A worker builds the model, the input and the CAM object, reads its RSS
(the baseline), makes one warm-up call and then ``--repeats`` timed calls, each on a fresh copy of the
input (so volcam's per-input forward cache never answers) and each producing the map on the input
grid. It reports the median wall time, the process's peak RSS and its working memory (peak minus
baseline); the parent prints their ratios to the floor and the Pearson r of each map against volcam's.

MONAI's and TorchCAM's Grad-CAM take no token layer (their failure is recorded); pytorch-grad-cam
explains the ViT with its documented ``reshape_transform``, written for the 3D grid.

pytorch-grad-cam needs torchvision, which loads only with PyPI's CUDA build of torch, so it runs in
``benchmarks/.venv-gradcam`` (``bash benchmarks/setup_gradcam_venv.sh``) and is also compared with a
floor measured in that venv.

Usage::

    python benchmarks/engine.py [--repeats 3] [--cases r18-96,r18-128,dn121-96] [--threads 2]

The table is printed and written to ``benchmarks/results/engine.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from machine import cpu_model  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "engine.md"
GRADCAM_PYTHON = HERE / ".venv-gradcam" / "bin" / "python"

TARGET_CLASS = 1
CASES = {
    "r18-96": ("resnet18", 96),
    "r18-128": ("resnet18", 128),
    "dn121-96": ("densenet121", 96),
    "vit-96": ("vit", 96),
}
LAYERS = {"resnet18": "layer4", "densenet121": "class_layers.relu", "vit": "blocks.11.norm1"}
TITLES = {
    "resnet18": "MONAI resnet18 (3D)",
    "densenet121": "MONAI DenseNet121 (3D)",
    "vit": "MONAI ViT-B/16 (3D, class token)",
}
VIT_PATCH = 16

# the time and memory targets: resnet18 at 128³; the ViT at 96³ (its backward runs through the last block)
TARGETS = {"r18-128": (1.10, 1.15), "vit-96": (1.25, 1.15)}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    gradcam_venv: bool = False


FLOOR = Variant("floor", "no_grad forward (floor)")
VOLCAM = Variant("volcam", "volcam Grad-CAM")
MONAI = Variant("monai", "MONAI GradCAM")
TORCHCAM = Variant("torchcam", "TorchCAM GradCAM")
PGC = Variant("pytorch-grad-cam", "pytorch-grad-cam GradCAM", gradcam_venv=True)
PGC_FLOOR = Variant("floor", "no_grad forward, gradcam venv (floor′)", gradcam_venv=True)
VARIANTS = (FLOOR, VOLCAM, MONAI, TORCHCAM, PGC, PGC_FLOOR)
LIBRARIES = (MONAI, TORCHCAM, PGC)


# -- worker: one variant, one case, in its own process ------------------------------------------------


def build_model(arch: str) -> torch.nn.Module:
    from monai.networks.nets import DenseNet121, ViT, resnet18

    torch.manual_seed(0)
    if arch == "resnet18":
        model = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
    elif arch == "vit":
        size = CASES["vit-96"][1]
        model = ViT(1, img_size=size, patch_size=VIT_PATCH, classification=True, num_classes=2, spatial_dims=3)
    else:
        model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    return model.eval()


class Logits(torch.nn.Module):
    """MONAI's ViT returns (logits, hidden states); pytorch-grad-cam and TorchCAM want the logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


def make_input(size: int) -> torch.Tensor:
    return torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(1))


def setup_floor(model: torch.nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
    def run(xi: torch.Tensor) -> None:
        with torch.no_grad():
            model(xi)

    return run


def setup_volcam(model: torch.nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
    import volcam

    engine = volcam.CamEngine(model, layer)

    def run(xi: torch.Tensor) -> torch.Tensor:
        engine.close()  # with a fresh input each call this is redundant; it makes the real forward certain
        return engine.explain(xi, "gradcam", target=TARGET_CLASS).map

    return run


def setup_monai(model: torch.nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=model, target_layers=layer)

    def run(xi: torch.Tensor) -> torch.Tensor:
        return cam(x=xi, class_idx=TARGET_CLASS)

    return run


def setup_torchcam(model: torch.nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
    import torch.nn.functional as F
    from torchcam.methods import GradCAM

    extractor = GradCAM(model, target_layer=layer, input_shape=tuple(x.shape[1:]))

    def run(xi: torch.Tensor) -> torch.Tensor:
        scores = model(xi)
        cam = extractor(class_idx=TARGET_CLASS, scores=scores)[0]  # (B, *s) at feature resolution
        return F.interpolate(cam[:, None], size=xi.shape[2:], mode="trilinear", align_corners=False)

    return run


def setup_pytorch_grad_cam(model: torch.nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reshape = None
    if hasattr(model, "patch_embedding"):  # the ViT: its documented reshape_transform, on the 3D grid
        grid = x.shape[2] // VIT_PATCH

        def reshape(t: torch.Tensor) -> torch.Tensor:
            return t[:, 1:, :].reshape(t.size(0), grid, grid, grid, t.size(2)).permute(0, 4, 1, 2, 3)

    target_layer = model.get_submodule(layer)
    cam = GradCAM(model=Logits(model), target_layers=[target_layer], reshape_transform=reshape)
    targets = [ClassifierOutputTarget(TARGET_CLASS)]

    def run(xi: torch.Tensor) -> np.ndarray:
        return cam(input_tensor=xi, targets=targets)  # (B, D, H, W), resized by scipy.ndimage.zoom

    return run


SETUPS = {
    "floor": setup_floor,
    "volcam": setup_volcam,
    "monai": setup_monai,
    "torchcam": setup_torchcam,
    "pytorch-grad-cam": setup_pytorch_grad_cam,
}


def current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def normalised_map(cam: object, size: int, variant: str) -> np.ndarray:
    """The map as a float32 ``(S, S, S)`` array scaled to [0, 1], high meaning important.

    MONAI's default post-processing maps (min, max) to (1, 0) for display, so its map is flipped back.
    """
    a = torch.as_tensor(cam).detach().float().cpu().numpy().reshape(size, size, size)
    a = (a - a.min()) / (a.max() - a.min() + 1e-12)
    return 1 - a if variant == "monai" else a


def busy_jiffies() -> int:
    """CPU time the whole machine spent busy since boot, in clock ticks (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return sum(fields[:8]) - idle - iowait


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def checksum(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """Sums of the weights and of the input: every worker of a case must see the same ones."""
    weights = sum(float(p.detach().double().sum()) for p in model.parameters())
    return [round(weights, 6), round(float(x.double().sum()), 6)]


def library_versions(variant: str) -> dict[str, str]:
    from importlib.metadata import version

    names = {"volcam": "volcam", "monai": "monai", "torchcam": "torchcam", "pytorch-grad-cam": "grad-cam"}
    found = {"torch": torch.__version__, "monai": version("monai")}
    if variant in names:
        found[names[variant]] = version(names[variant])
    return found


def worker(variant: str, case: str, repeats: int, threads: int, out: Path) -> None:
    torch.set_num_threads(threads)
    arch, size = CASES[case]
    model = build_model(arch)
    x = make_input(size)
    sums = checksum(model, x)
    run = SETUPS[variant](model, LAYERS[arch], x)
    baseline = current_rss_kib()
    result = run(x.clone())  # warm-up
    seconds = []
    busy, own, wall = busy_jiffies(), own_cpu_seconds(), time.perf_counter()
    for _ in range(repeats):
        result = None  # the previous map goes before the next call
        xi = x.clone()
        start = time.perf_counter()
        result = run(xi)
        seconds.append(time.perf_counter() - start)
        del xi
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    machine = (busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, machine - (own_cpu_seconds() - own)) / (time.perf_counter() - wall)
    if result is not None:
        np.save(out.with_suffix(".npy"), normalised_map(result, size, variant))
    report = {
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "baseline_kib": baseline,
        "peak_kib": peak,
        "checksum": sums,
        "others_load": others,
        "versions": library_versions(variant),
        "threads": torch.get_num_threads(),
    }
    out.write_text(json.dumps(report))


# -- parent: spawn the workers, compare, report -----------------------------------------------------


@dataclass
class Measurement:
    variant: Variant
    median_s: float | None = None
    peak_mib: float | None = None
    working_mib: float | None = None
    r: float | None = None
    checksum: list[float] | None = None
    others_load: float | None = None
    versions: dict[str, str] | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.median_s is not None


def run_worker(variant: Variant, case: str, args: argparse.Namespace, tmp: Path) -> Measurement:
    python = str(GRADCAM_PYTHON) if variant.gradcam_venv else sys.executable
    if variant.gradcam_venv and not GRADCAM_PYTHON.exists():
        return Measurement(variant, note="skipped: no benchmarks/.venv-gradcam; run benchmarks/setup_gradcam_venv.sh")
    out = tmp / f"{case}-{variant.key}-{'gradcam' if variant.gradcam_venv else 'main'}.json"
    cmd = [python, __file__, "--worker", variant.key, "--cases", case, "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Measurement(variant, note=f"failed: {last[:200]}")
    report = json.loads(out.read_text())
    return Measurement(
        variant,
        median_s=report["median_s"],
        peak_mib=report["peak_kib"] / 1024,
        working_mib=(report["peak_kib"] - report["baseline_kib"]) / 1024,
        checksum=report["checksum"],
        others_load=report["others_load"],
        versions=report["versions"],
    )


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def add_agreement(rows: list[Measurement], case: str, tmp: Path) -> None:
    """Pearson r of each library's map against volcam's."""
    reference = tmp / f"{case}-volcam-main.npy"
    if not reference.exists():
        return
    ref = np.load(reference)
    for m in rows:
        path = tmp / f"{case}-{m.variant.key}-{'gradcam' if m.variant.gradcam_venv else 'main'}.npy"
        if m.variant.key != "floor" and path.exists():
            m.r = pearson(ref, np.load(path))


def measure_case(case: str, args: argparse.Namespace, tmp: Path) -> list[Measurement]:
    rows = []
    for variant in VARIANTS:
        print(f"  {case}: {variant.label} ...", end=" ", flush=True)
        m = run_worker(variant, case, args, tmp)
        rows.append(m)
        done = (
            f"{m.median_s:.3f} s, peak {m.peak_mib:.0f} MiB, working {m.working_mib:.0f} MiB, "
            f"other load {m.others_load:.2f}"
            if m.ok
            else m.note
        )
        print(done, flush=True)
    add_agreement(rows, case, tmp)
    sums = {tuple(m.checksum) for m in rows if m.checksum is not None}
    if len(sums) > 1:
        rows[0].note = f"WARNING: workers saw different weights or inputs: {sorted(sums)}"
    return rows


def ratio(value: float | None, floor: float | None) -> str:
    return f"{value / floor:.2f}×" if value is not None and floor else "–"


def number(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "–"


def table_row(label: str, m: Measurement, floor: Measurement) -> str:
    if not m.ok:
        return f"| {label} | {m.note} | | | | | | | |"
    cells = [
        label,
        number(m.median_s, ".3f"),
        ratio(m.median_s, floor.median_s),
        number(m.peak_mib, ".0f"),
        ratio(m.peak_mib, floor.peak_mib),
        number(m.working_mib, ".0f"),
        ratio(m.working_mib, floor.working_mib),
        number(m.r, ".5f"),
        number(m.others_load, ".2f"),
    ]
    return "| " + " | ".join(cells) + " |"


def case_table(case: str, rows: list[Measurement]) -> list[str]:
    arch, size = CASES[case]
    by_key = {(m.variant.key, m.variant.gradcam_venv): m for m in rows}
    floor, own_floor = by_key[("floor", False)], by_key[("floor", True)]
    lines = [
        f"### {case}: {TITLES[arch]} at {size}³, target layer `{LAYERS[arch]}`",
        "",
        "| variant | median s | × floor | peak RSS MiB | × floor | working MiB | × floor | r vs volcam | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [table_row(m.variant.label, m, floor) for m in rows]
    pgc = by_key[("pytorch-grad-cam", True)]
    if pgc.ok and own_floor.ok:
        lines.append(table_row("pytorch-grad-cam GradCAM, × floor′ (its own venv)", pgc, own_floor))
    notes = [m.note for m in rows if m.ok and m.note]
    return lines + [f"\n{n}" for n in notes] + [""]


def check_targets(results: dict[str, list[Measurement]]) -> list[str]:
    lines = []
    for case, (time_limit, memory_limit) in TARGETS.items():
        if case not in results:
            continue
        rows = {(m.variant.key, m.variant.gradcam_venv): m for m in results[case]}
        floor, vc = rows[("floor", False)], rows[("volcam", False)]
        if floor.ok and vc.ok:
            t, p = vc.median_s / floor.median_s, vc.peak_mib / floor.peak_mib
            lines.append(
                f"{verdict(t <= time_limit)} {case}: volcam time {vc.median_s:.3f} s = {t:.3f}× the floor's "
                f"{floor.median_s:.3f} s (target ≤ {time_limit:.2f}×)"
            )
            lines.append(
                f"{verdict(p <= memory_limit)} {case}: volcam peak RSS {vc.peak_mib:.0f} MiB = {p:.3f}× the "
                f"floor's {floor.peak_mib:.0f} MiB (target ≤ {memory_limit:.2f}×)"
            )
    for case, rows in results.items():
        lines += compare_libraries(case, rows)
    return lines


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def compare_libraries(case: str, rows: list[Measurement]) -> list[str]:
    """volcam against each library: less memory, and no slower than the fastest."""
    by_key = {(m.variant.key, m.variant.gradcam_venv): m for m in rows}
    vc, floor, own_floor = by_key[("volcam", False)], by_key[("floor", False)], by_key[("floor", True)]
    libs = [m for m in rows if m.variant in LIBRARIES and m.ok]
    if vc.ok and not libs:  # the ViT: MONAI and TorchCAM take no token layer
        failed = [m.variant.label for m in rows if m.variant in LIBRARIES]
        return [f"INFO {case}: no other library explained it ({', '.join(failed)}: failed or skipped)"]
    if not vc.ok or not libs:
        return [f"FAIL {case}: comparison impossible (volcam or every library failed)"]
    memory_ok, memory_text = True, []
    for m in libs:
        ok = vc.working_mib < m.working_mib
        text = f"{m.variant.label} working {m.working_mib:.0f}"
        if m.variant.gradcam_venv and own_floor.ok:  # its peak counts another torch build: compare ratios
            own, mine = m.peak_mib / own_floor.peak_mib, vc.peak_mib / floor.peak_mib
            ok = ok and mine < own
            text += f", peak {own:.2f}× floor′ vs volcam's {mine:.2f}× floor"
        elif not m.variant.gradcam_venv:
            ok = ok and vc.peak_mib < m.peak_mib
            text += f", peak {m.peak_mib:.0f}"
        memory_ok &= ok
        memory_text.append(text)
    fastest = min(libs, key=lambda m: m.median_s)
    missing = [m.variant.label for m in rows if m.variant in LIBRARIES and not m.ok]
    tail = f" (not measured: {', '.join(missing)})" if missing else ""
    return [
        f"{verdict(memory_ok)} {case}: volcam uses less memory (working {vc.working_mib:.0f} MiB, peak "
        f"{vc.peak_mib:.0f} MiB) than {'; '.join(memory_text)} MiB{tail}",
        f"{verdict(vc.median_s <= fastest.median_s)} {case}: volcam {vc.median_s:.3f} s is no slower than the "
        f"fastest library, {fastest.variant.label} {fastest.median_s:.3f} s{tail}",
    ]


def header(results: dict[str, list[Measurement]], args: argparse.Namespace, load: tuple[str, str]) -> list[str]:
    versions: dict[str, str] = {}
    gradcam_versions: dict[str, str] = {}
    for rows in results.values():
        for m in rows:
            if m.versions:
                (gradcam_versions if m.variant.gradcam_venv else versions).update(m.versions)
    fmt = ", ".join
    return [
        "# Grad-CAM engine benchmark: volcam beside MONAI, TorchCAM and pytorch-grad-cam",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, {platform.system()} {platform.release()}; "
        f"load average (1 min) {load[0]} at start, {load[1]} at end; other processes may have been running",
        f"- torch threads: {args.threads}; {args.repeats} timed calls per variant after 1 warm-up, median reported; "
        "each variant in its own process; each call on a fresh copy of the input",
        f"- main venv: {fmt(f'{k} {v}' for k, v in sorted(versions.items()))}",
        "- gradcam venv (benchmarks/.venv-gradcam, CPU): "
        + fmt(f"{k} {v}" for k, v in sorted(gradcam_versions.items())),
        f"- input: 1×1×S³ standard normal, seed 1; weights: `torch.manual_seed(0)`; target class {TARGET_CLASS}",
        "- time: wall time of the call that returns the map on the input grid (TorchCAM's map is upsampled "
        "trilinearly inside the timed region; pytorch-grad-cam resizes with `scipy.ndimage.zoom`, cubic spline)",
        "- peak RSS: `ru_maxrss` of the worker; working: peak RSS − RSS once the model, input and CAM object exist",
        "- pytorch-grad-cam runs on another torch build (PyPI's CUDA build, on the CPU), so it is also given "
        "against floor′, a bare forward in its own venv",
        "- r vs volcam: Pearson r between min-max normalised maps on the input grid (MONAI's map flipped back: "
        "its default post-processing maps (min, max) to (1, 0))",
        "- other load: CPU-seconds per second used by other processes on the machine during the timed calls "
        "(from /proc/stat less the worker's own CPU time; 0 = idle, "
        f"{os.cpu_count()} = every core busy elsewhere)",
        "",
    ]


def write_report(results: dict[str, list[Measurement]], args: argparse.Namespace, load: tuple[str, str]) -> str:
    lines = header(results, args, load)
    lines += ["## Targets", "", *[f"- {t}" for t in check_targets(results)], "", "## Results", ""]
    for case, rows in results.items():
        lines += case_table(case, rows)
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return text


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant (median reported)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker, args.cases[0], args.repeats, args.threads, args.out)
        return
    start_load = load_average()
    results = {}
    with tempfile.TemporaryDirectory(prefix="volcam-engine-bench-") as tmp:
        for case in args.cases:
            results[case] = measure_case(case, args, Path(tmp))
    print()
    print(write_report(results, args, (start_load, load_average())))
    print(f"written to {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
