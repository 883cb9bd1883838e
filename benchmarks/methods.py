"""Every volcam method beside pytorch-grad-cam: map agreement on 2D and 3D models, time and memory at 96³.

Two parts, each variant in a fresh process, as in ``benchmarks/engine.py`` (whose helpers this reuses):

1. **Agreement.** MONAI ``resnet18`` (1 channel, 2 classes, ``torch.manual_seed(0)`` weights, class 1
   explained) in 2D at 128² (target ``layer4``, an 8×8 feature map) and in 3D at 32³ (target
   ``layer3``, 4×4×4: ``layer4`` would be 2×2×2 there, too few positions for a correlation, and a
   larger volume makes Score-CAM's 256-512 masked forwards slow). Each method pytorch-grad-cam has
   runs in both libraries and the maps are compared by Pearson r **at feature resolution**: volcam's
   ``CamResult.raw`` against pytorch-grad-cam's ``get_cam_image`` output after its ``np.maximum(cam, 0)``
   (caught with a wrapper around that method), i.e. both before any upsampling, so the comparison
   tests the method and not the resampling. r is invariant to the min-max normalisation both apply.
   Those two networks are untrained, and on an untrained network Score-CAM's channel weights hardly
   differ (every masked input gets about the same score), so a third case uses a trained one:
   volcam's demo CT classifier (``sample_data/ct_covid.card.json``, a small MONAI ResNet) on its
   sample scan as the card prepares it (32×32×24, target ``layer2``).
   r of the maps as each library returns them on the input grid is given too: volcam upsamples
   (tri)linearly, pytorch-grad-cam with ``cv2.resize`` (bilinear) in 2D and ``scipy.ndimage.zoom``
   (cubic spline, corner-aligned) in 3D, which alone costs several hundredths of r.
2. **Cost.** MONAI ``resnet18`` 3D at ``--size`` (96³ by default, target ``layer4``): median wall
   time, peak RSS and working memory of every volcam method and of the pytorch-grad-cam class that
   pairs with it, beside a bare ``no_grad`` forward (the floor) and, for Score-CAM, the cost of its K
   masked forwards: K = the non-constant channels volcam actually ran (its ``ModelRunner`` counts
   them), at volcam's batch size, timed as bare ``no_grad`` forwards of whole batches in a sibling
   process and scaled to ``K // batch`` full batches plus the remainder batch.

3. **A vision transformer** (``--parts vit``). MONAI's ``ViT`` in 2D (224², 16² patches: a 14×14 grid
   and a class token, 4 blocks of 192 channels, ``torch.manual_seed(0)`` weights), Grad-CAM of class 1
   at ``blocks.3.norm1``: volcam lays the tokens back on their grid by itself (``"auto"``),
   pytorch-grad-cam is given the ``reshape_transform`` of its documentation (class token dropped,
   ``(B, 14, 14, C)`` transposed to channels-first). r as in part 1.

pytorch-grad-cam 1.5.7's ``ScoreCAM`` and ``AblationCAM`` are 2D-only (``UpsamplingBilinear2d``; a
4-argument ``repeat``) and fail on volumes; that failure is recorded, and for 3D the script also runs
a "3D port": its own ``get_cam_weights`` code with just those dimension-specific lines made n-D
(trilinear upsampling with ``align_corners=True`` as ``UpsamplingBilinear2d`` has; ``repeat`` over
every axis), labelled as such. In the cost case the Ablation-CAM port (the whole network for each of the
K channels: another ~20 minutes at 96³) runs only with ``--ablation-port``.

Score-CAM formulations: pytorch-grad-cam weights the channels by ``softmax over channels`` of the
target's score of each masked input; with ``ClassifierOutputTarget`` (a logit) that equals volcam's
``weights="increase"`` (``softmax_k(y_c(x·H_k) - y_c(x))``: a softmax does not see the shift).
volcam's default ``weights="probability"`` (``s_k = softmax_c(f(x·H_k))_c``, no softmax over
channels) has no exact pytorch-grad-cam counterpart; it is compared with pytorch-grad-cam's
default target and with ``ClassifierOutputSoftmaxTarget`` (``softmax_k`` of the probabilities). One
difference remains between ``weights="increase"`` and pytorch-grad-cam: it upsamples the masks with
``align_corners=True``, volcam with ``align_corners=False``; the port also runs with volcam's
convention, as a diagnostic, to show whether that is all that separates them.

Eigen-CAM, Eigen-Grad-CAM, KPCA-CAM: both libraries centre each channel over the positions;
pytorch-grad-cam keeps the SVD's (or ARPACK's) arbitrary sign, volcam turns the component so it
agrees with the mean of the decomposed matrix over channels. So r is also given with
pytorch-grad-cam's projection turned by volcam's rule ("r, sign aligned").

Everything runs in ``benchmarks/.venv-gradcam`` (``bash benchmarks/setup_gradcam_venv.sh``): volcam is
pure Python and is imported from ``src/`` there (the working tree's, or with ``--volcam-rev REV`` a
commit's, exported with ``git archive``), so both libraries run on the same torch build.

Usage::

    python benchmarks/methods.py [--size 96] [--repeats 3] [--threads 2] [--parts agreement,cost]
                                 [--workdir DIR [--resume]] [--skip KEY,...] [--batch-size N] [--volcam-rev REV]
                                 [--ablation-port]
    python benchmarks/methods.py --quick      # tiny sizes, 1 call each: checks the script (minutes)

At 96³ one forward takes about 2 s on two cores, so Score-CAM (≈512 masked forwards) takes about
20 minutes in each library and the whole run about an hour. ``--workdir DIR --resume`` keeps each
worker's result in DIR and reuses those already there: delete a variant's ``.json`` to rerun it (when
the machine was busy during it, say). The tables are printed and written to
``benchmarks/results/methods.md`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine import (
    GRADCAM_PYTHON,
    TARGET_CLASS,
    busy_jiffies,
    cpu_model,
    current_rss_kib,
    load_average,
    number,
    own_cpu_seconds,
    verdict,
)

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
RESULTS = HERE / "results" / "methods.md"

R_TARGET = 1 - 1e-2  # r > 0.99
SCORECAM_LIMIT = 1.10  # Score-CAM time ≤ 1.1 × its K masked forwards

# volcam method -> pytorch-grad-cam class (None: pytorch-grad-cam has no such method)
PGC_CLASSES: dict[str, str | None] = {
    "cam": None,
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "smoothgradcam++": None,
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "occlusion": None,
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "kpcacam": "KPCA_CAM",
    "cfcam": None,
}
DECOMPOSITION = {"eigencam", "eigengradcam", "kpcacam"}
PERTURBATION = {"scorecam", "ablationcam", "occlusion"}
# pytorch-grad-cam classes that fail on 3D inputs; a port runs beside them
PORTED = {"ScoreCAM", "AblationCAM"}
# the agreement the issue asks for: these methods, r > 0.99, in 2D and 3D
REQUIRED_AGREEMENT = ("eigencam", "scorecam", "ablationcam")


@dataclass(frozen=True)
class Case:
    key: str
    dims: int
    size: int
    layer: str
    source: str = ""  # a torch.save file with "network" and "input" instead of resnet18 and noise
    description: str = ""

    @property
    def title(self) -> str:
        if self.description:
            return f"{self.description}, target layer `{self.layer}`"
        grid = "²" if self.dims == 2 else "³"
        return f"MONAI resnet18 ({self.dims}D) at {self.size}{grid}, target layer `{self.layer}`"


@dataclass(frozen=True)
class Variant:
    """One worker: a library's method with its options, or a floor."""

    key: str
    library: str  # "floor", "floor-k", "volcam", "pgc"
    method: str = ""  # volcam's name (for pgc: the volcam method it pairs with)
    options: tuple[tuple[str, object], ...] = ()  # volcam method options
    pgc_target: str = "logit"  # "logit": ClassifierOutputTarget, "softmax": ClassifierOutputSoftmaxTarget
    port: bool = False  # pytorch-grad-cam's code made n-D (ScoreCAM, AblationCAM)
    align_corners: bool = True  # the Score-CAM port's mask upsampling (pytorch-grad-cam's: True)
    expensive: bool = False  # one call, no warm-up

    @property
    def label(self) -> str:
        if self.library == "floor":
            return "no_grad forward (floor)"
        if self.library == "floor-k":
            return "K masked no_grad forwards (Score-CAM floor)"
        if self.library == "volcam":
            opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
            return f"volcam {self.method}" + (f" ({opts})" if opts else "")
        name = PGC_CLASSES[self.method]
        target = "" if self.pgc_target == "logit" else ", ClassifierOutputSoftmaxTarget"
        port = " (3D port)" if self.port and self.align_corners else ""
        port = port or ("" if self.align_corners else " (port with volcam's mask upsampling, align_corners=False)")
        return f"pytorch-grad-cam {name}" + port + target


def volcam_variant(method: str, **options: object) -> Variant:
    suffix = "".join(f":{k}={v}" for k, v in options.items())
    return Variant(
        f"volcam:{method}{suffix}",
        "volcam",
        method,
        tuple(options.items()),
        expensive=method in ("scorecam", "occlusion"),
    )


def pgc_variant(method: str, target: str = "logit", port: bool = False, align_corners: bool = True) -> Variant:
    key = f"pgc{'-port' if port else ''}:{method}" + (f":{target}" if target != "logit" else "")
    key += "" if align_corners else ":align_corners=False"
    # the ports run every forward; the stock classes fail fast in 3D
    expensive = port or (method in ("scorecam", "ablationcam"))
    return Variant(key, "pgc", method, pgc_target=target, port=port, align_corners=align_corners, expensive=expensive)


FLOOR = Variant("floor", "floor")
FLOOR_K = Variant("floor-k", "floor-k", expensive=True)


# -- worker: one variant in its own process ---------------------------------------------------------


def build_model(case: Case) -> torch.nn.Module:
    from monai.networks.nets import resnet18

    if case.source:
        return torch.load(case.source, weights_only=False)["network"].eval()
    torch.manual_seed(0)
    return resnet18(spatial_dims=case.dims, n_input_channels=1, num_classes=2).eval()


def make_input(case: Case) -> torch.Tensor:
    if case.source:
        return torch.load(case.source, weights_only=False)["input"]
    return torch.randn(1, 1, *[case.size] * case.dims, generator=torch.Generator().manual_seed(1))


DEMO_CARD, DEMO_SCAN = "sample_data/ct_covid.card.json", "sample_data/ct_covid_sample.nii.gz"


def demo_case(args: argparse.Namespace, workdir: Path) -> Case | None:
    """A trained model on a real-looking input: volcam's demo CT classifier and its sample scan,
    prepared by the model card (run here, in the parent: the card's I/O needs volcam's extras, which
    the gradcam venv lacks) and handed to the workers as a pickled network and input tensor."""
    path = workdir / "ct-demo.pt"
    if not path.exists():
        try:
            sys.path.insert(0, args.volcam_src)
            import volcam

            model = volcam.load_model(HERE.parent / DEMO_CARD)
            x = model.prepare(volcam.load(HERE.parent / DEMO_SCAN)).as_tensor()[None].float()
            torch.save({"network": model.network, "input": x, "layer": model.card.layer}, path)
        except Exception as error:  # a missing extra (nibabel) or a changed card API: skip the case
            print(f"  ct-demo skipped: {type(error).__name__}: {error}", flush=True)
            return None
    data = torch.load(path, weights_only=False)
    x, net = data["input"], data["network"]
    with torch.no_grad():
        p = torch.softmax(net.eval()(x), 1)[0, TARGET_CLASS]
    shape = "×".join(map(str, x.shape[2:]))
    return Case(
        "ct-demo",
        3,
        x.shape[2],
        data["layer"],
        source=str(path),
        description=f"volcam's demo CT classifier (trained MONAI ResNet, `{DEMO_CARD}`) on `{DEMO_SCAN}` as its "
        f"card prepares it ({shape}; p(class {TARGET_CLASS}) = {p:.4f})",
    )


@dataclass
class Output:
    """What one call returns: the map on the input grid and at feature resolution, and for
    pytorch-grad-cam's decompositions the pre-ReLU projection and the mean map its sign is judged by."""

    map: object = None
    raw: object = None
    projection: object = None
    reference: object = None


@dataclass
class Setup:
    run: Callable[[torch.Tensor], Output]
    info: Callable[[], dict] = field(default=lambda: {})


def setup_floor(model: torch.nn.Module, case: Case, variant: Variant, spec: dict, x: torch.Tensor) -> Setup:
    def run(xi: torch.Tensor) -> Output:
        with torch.no_grad():
            model(xi)
        return Output()

    return Setup(run)


def setup_volcam(model: torch.nn.Module, case: Case, variant: Variant, spec: dict, x: torch.Tensor) -> Setup:
    sys.path.insert(0, spec["volcam_src"])  # the working tree's src/ or a commit's, also in the gradcam venv
    import volcam

    engine = volcam.CamEngine(model, case.layer, batch_size=spec.get("batch_size"), progress=False)
    runners = []
    make_runner = engine.runner

    def spy(*args, **kwargs):  # keep the ModelRunner a perturbation method gets: it counts forwards
        runner = make_runner(*args, **kwargs)
        runners.append(runner)
        return runner

    engine.runner = spy
    options = dict(variant.options)

    def run(xi: torch.Tensor) -> Output:
        engine.close()
        runners.clear()
        result = engine.explain(xi, variant.method, target=TARGET_CLASS, **options)
        return Output(map=result.map, raw=result.raw)

    def info() -> dict:
        if not runners:
            return {}
        r = runners[-1]
        return {"forwards": r.forwards, "batch_size": r.batch_size, "head_only": r.head_only}

    return Setup(run, info)


def pgc_ports() -> dict[str, type]:
    """pytorch-grad-cam 1.5.7's ScoreCAM and AblationCAM with their 2D-only lines made n-D.

    Everything else is their code as it is (batching, softmax, ablation by zeroing or by
    ``min - 1e7``, division by the original score).
    """
    import torch.nn.functional as F
    from pytorch_grad_cam import AblationCAM, ScoreCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer

    class ScoreCAMPort(ScoreCAM):
        align_corners = True  # as UpsamplingBilinear2d; False is volcam's (a diagnostic variant)

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            with torch.no_grad():
                activation_tensor = torch.from_numpy(activations).to(self.device)
                # was: torch.nn.UpsamplingBilinear2d(size=input_tensor.shape[-2:]) (align_corners=True)
                mode = {4: "bilinear", 5: "trilinear"}[activation_tensor.ndim]
                upsampled = F.interpolate(
                    activation_tensor, size=input_tensor.shape[2:], mode=mode, align_corners=self.align_corners
                )
                maxs = upsampled.view(upsampled.size(0), upsampled.size(1), -1).max(dim=-1)[0]
                mins = upsampled.view(upsampled.size(0), upsampled.size(1), -1).min(dim=-1)[0]
                axes = (...,) + (None,) * (upsampled.ndim - 2)  # was: [:, :, None, None]
                maxs, mins = maxs[axes], mins[axes]
                upsampled = (upsampled - mins) / (maxs - mins + 1e-8)
                input_tensors = input_tensor[:, None] * upsampled[:, :, None]
                batch_size = getattr(self, "batch_size", 16)
                scores = []
                for target, tensor in zip(targets, input_tensors, strict=True):
                    for i in range(0, tensor.size(0), batch_size):
                        batch = tensor[i : i + batch_size, :]
                        scores.extend(target(o).cpu().item() for o in self.model(batch))
                scores = torch.Tensor(scores).view(activations.shape[0], activations.shape[1])
                return torch.nn.Softmax(dim=-1)(scores).numpy()

    class AblationLayerPort(AblationLayer):
        def set_next_batch(self, input_batch_index, activations, num_channels_to_ablate):
            one = activations[input_batch_index].clone().unsqueeze(0)
            self.activations = one.repeat(num_channels_to_ablate, *[1] * (one.ndim - 1))  # was: (n, 1, 1, 1)

    class AblationCAMPort(AblationCAM):
        def __init__(self, model, target_layers, batch_size: int = 32):
            super().__init__(model, target_layers, ablation_layer=AblationLayerPort(), batch_size=batch_size)

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

            handle = target_layer.register_forward_hook(self.save_activation)
            with torch.no_grad():
                outputs = self.model(input_tensor)
                handle.remove()
                original_scores = np.float32(
                    [target(output).cpu().item() for target, output in zip(targets, outputs, strict=True)]
                )
            ablation_layer = self.ablation_layer
            replace_layer_recursive(self.model, target_layer, ablation_layer)
            number_of_channels = activations.shape[1]
            weights = []
            with torch.no_grad():
                for batch_index, (target, tensor) in enumerate(zip(targets, input_tensor, strict=True)):
                    new_scores = []
                    batch_tensor = tensor.repeat(self.batch_size, *[1] * tensor.ndim)  # was: (n, 1, 1, 1)
                    channels_to_ablate = ablation_layer.activations_to_be_ablated(
                        activations[batch_index, :], self.ratio_channels_to_ablate
                    )
                    number_channels_to_ablate = len(channels_to_ablate)
                    for i in range(0, number_channels_to_ablate, self.batch_size):
                        if i + self.batch_size > number_channels_to_ablate:
                            batch_tensor = batch_tensor[: (number_channels_to_ablate - i)]
                        ablation_layer.set_next_batch(
                            input_batch_index=batch_index,
                            activations=self.activations,
                            num_channels_to_ablate=batch_tensor.size(0),
                        )
                        new_scores.extend(target(o).cpu().item() for o in self.model(batch_tensor))
                        ablation_layer.indices = ablation_layer.indices[batch_tensor.size(0) :]
                    weights.extend(
                        self.assemble_ablation_scores(
                            new_scores, original_scores[batch_index], channels_to_ablate, number_of_channels
                        )
                    )
            weights = np.float32(weights).reshape(activations.shape[:2])
            original_scores = original_scores[:, None]
            weights = (original_scores - weights) / original_scores
            replace_layer_recursive(self.model, ablation_layer, target_layer)
            return weights

    return {"ScoreCAM": ScoreCAMPort, "AblationCAM": AblationCAMPort}


def setup_pgc(model: torch.nn.Module, case: Case, variant: Variant, spec: dict, x: torch.Tensor) -> Setup:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    name = PGC_CLASSES[variant.method]
    cls = pgc_ports()[name] if variant.port else getattr(pytorch_grad_cam, name)
    layers = [model.get_submodule(case.layer)]
    batch_size = spec.get("batch_size")
    if name == "AblationCAM" and batch_size:
        cam = cls(model=model, target_layers=layers, batch_size=batch_size)
    else:
        cam = cls(model=model, target_layers=layers)
    if name == "ScoreCAM" and batch_size:
        cam.batch_size = batch_size  # read by ScoreCAM.get_cam_weights (16 when absent)
    if variant.port and name == "ScoreCAM":
        cam.align_corners = variant.align_corners
    target_cls = ClassifierOutputTarget if variant.pgc_target == "logit" else ClassifierOutputSoftmaxTarget
    targets = [target_cls(TARGET_CLASS)]
    caught: dict[str, np.ndarray] = {}
    get_cam_image = cam.get_cam_image

    def spy(input_tensor, target_layer, target_category, activations, grads, eigen_smooth=False):
        cam_image = get_cam_image(input_tensor, target_layer, target_category, activations, grads, eigen_smooth)
        caught["projection"] = np.asarray(cam_image, dtype=np.float32)
        if variant.method in DECOMPOSITION:  # what volcam's sign rule compares the component with
            decomposed = grads * activations if variant.method == "eigengradcam" else activations
            caught["reference"] = np.asarray(decomposed, dtype=np.float32).mean(axis=1)
        return cam_image

    cam.get_cam_image = spy

    def run(xi: torch.Tensor) -> Output:
        caught.clear()
        grid = cam(input_tensor=xi, targets=targets)  # (B, *S), min-max scaled and resized
        projection = caught["projection"]
        return Output(grid, np.maximum(projection, 0), projection, caught.get("reference"))

    return Setup(run, lambda: {"batch_size": batch_size or {"ScoreCAM": 16, "AblationCAM": 32}.get(name)})


SETUPS = {"floor": setup_floor, "volcam": setup_volcam, "pgc": setup_pgc}


def timed_calls(setup: Setup, x: torch.Tensor, repeats: int, warmup: bool) -> dict:
    baseline = current_rss_kib()
    result = setup.run(x.clone()) if warmup else None
    seconds = []
    busy, own, wall = busy_jiffies(), own_cpu_seconds(), time.perf_counter()
    for _ in range(repeats):
        result = None  # the previous map goes before the next call
        xi = x.clone()
        start = time.perf_counter()
        result = setup.run(xi)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    machine = (busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, machine - (own_cpu_seconds() - own)) / (time.perf_counter() - wall)
    return {
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "baseline_kib": baseline,
        "peak_kib": peak,
        "others_load": others,
        "result": result,
    }


def k_forwards(model: torch.nn.Module, x: torch.Tensor, k: int, batch_size: int, batches: int) -> dict:
    """The cost of ``k`` bare ``no_grad`` forwards ``batch_size`` at a time: the median of
    ``batches`` full batches times ``k // batch_size``, plus one remainder batch."""

    def forward(rows: int) -> float:
        batch = x.repeat(rows, *[1] * (x.ndim - 1)) * torch.rand(rows, *[1] * (x.ndim - 1))
        start = time.perf_counter()
        with torch.no_grad():
            model(batch)
        return time.perf_counter() - start

    full, rest = divmod(k, batch_size)
    baseline = current_rss_kib()
    forward(max(1, min(k, batch_size)))  # warm-up
    busy, own, wall = busy_jiffies(), own_cpu_seconds(), time.perf_counter()
    full_s = [forward(batch_size) for _ in range(batches if full else 0)]
    rest_s = forward(rest) if rest else 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    machine = (busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, machine - (own_cpu_seconds() - own)) / (time.perf_counter() - wall)
    estimate = (statistics.median(full_s) * full if full else 0.0) + rest_s
    return {
        "seconds": full_s + ([rest_s] if rest else []),
        "median_s": estimate,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "others_load": others,
        "result": None,
        "info": {"k": k, "batch_size": batch_size, "full_batches": full, "remainder": rest, "batch_s": full_s},
    }


def as_array(value: object) -> np.ndarray:
    return torch.as_tensor(value).detach().float().cpu().numpy().squeeze()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"torch": torch.__version__}
    for name in ("monai", "grad-cam", "scikit-learn", "numpy", "scipy"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    if "volcam" in sys.modules:
        found["volcam"] = sys.modules["volcam"].__version__ + " (src/)"
    return found


def worker(spec: dict, out: Path) -> None:
    torch.set_num_threads(spec["threads"])
    case = Case(**spec["case"])
    variant = Variant(**{**spec["variant"], "options": tuple(tuple(o) for o in spec["variant"]["options"])})
    model = build_model(case)
    x = make_input(case)
    sums = [round(sum(float(p.detach().double().sum()) for p in model.parameters()), 6), round(float(x.sum()), 6)]
    if variant.library == "floor-k":
        report = k_forwards(model, x, spec["k"], spec["batch_size"], spec["batches"])
    else:
        setup = SETUPS[variant.library](model, case, variant, spec, x)
        repeats = 1 if variant.expensive else spec["repeats"]
        report = timed_calls(setup, x, repeats, warmup=not variant.expensive and spec["warmup"])
        report["info"] = setup.info()
    result: Output | None = report.pop("result")
    if result is not None and result.raw is not None:
        arrays = {k: as_array(v) for k, v in vars(result).items() if v is not None}
        np.savez(out.with_suffix(".npz"), **arrays)
    report.update(checksum=sums, versions=library_versions(), threads=torch.get_num_threads())
    out.write_text(json.dumps(report))


# -- parent: spawn the workers, compare, report ------------------------------------------------------


@dataclass
class Measurement:
    variant: Variant
    median_s: float | None = None
    peak_mib: float | None = None
    working_mib: float | None = None
    calls: int = 0
    others_load: float | None = None
    info: dict = field(default_factory=dict)
    checksum: list[float] | None = None
    versions: dict[str, str] | None = None
    maps: dict[str, np.ndarray] | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.median_s is not None


def variant_spec(variant: Variant) -> dict:
    return {**vars(variant), "options": [list(o) for o in variant.options]}


def run_worker(variant: Variant, case: Case, args: argparse.Namespace, workdir: Path, **extra: object) -> Measurement:
    out = workdir / f"{case.key}--{variant.key.replace(':', '-').replace('=', '-')}.json"
    if not (args.resume and out.exists()):
        if not args.python.exists():
            return Measurement(variant, note=f"skipped: no {args.python}; run benchmarks/setup_gradcam_venv.sh")
        spec = {
            "case": vars(case),
            "variant": variant_spec(variant),
            "repeats": args.repeats,
            "warmup": not args.quick,
            "threads": args.threads,
            "batch_size": args.batch_size,
            "volcam_src": args.volcam_src,
            **extra,
        }
        cmd = [str(args.python), __file__, "--worker", json.dumps(spec), "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        out.unlink(missing_ok=True)
        out.with_suffix(".npz").unlink(missing_ok=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and "it/s]" not in ln]
            error = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), (lines or ["no output"])[-1])
            out.with_suffix(".err").write_text(proc.stderr)
            return Measurement(variant, note=f"failed: {first_sentence(error.strip())}")
    report = json.loads(out.read_text())
    maps_path = out.with_suffix(".npz")
    maps = dict(np.load(maps_path)) if maps_path.exists() else None
    return Measurement(
        variant,
        median_s=report["median_s"],
        peak_mib=report["peak_kib"] / 1024,
        working_mib=(report["peak_kib"] - report["baseline_kib"]) / 1024,
        calls=len(report["seconds"]),
        others_load=report["others_load"],
        info=report.get("info") or {},
        checksum=report["checksum"],
        versions=report["versions"],
        maps=maps,
    )


def first_sentence(text: str, limit: int = 150) -> str:
    head = text.split(". ")[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"


def pearson(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.shape != b.shape or a.std() == 0 or b.std() == 0:
        return math.nan  # a constant map (all zero after the ReLU) has no correlation
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class Agreement:
    r_feature: float | None = None
    r_grid: float | None = None
    r_aligned: float | None = None  # decompositions: pytorch-grad-cam's component turned by volcam's rule
    pgc_sign_agrees: bool | None = None


def agreement(vc: Measurement, pgc: Measurement) -> Agreement:
    if not (vc.maps and pgc.maps):
        return Agreement()
    a = Agreement(pearson(vc.maps["raw"], pgc.maps["raw"]), pearson(vc.maps["map"], pgc.maps["map"]))
    if "reference" in pgc.maps:
        proj, ref = pgc.maps["projection"], pgc.maps["reference"]
        r_ref = pearson(proj, ref)
        sign = -1.0 if r_ref is not None and r_ref < 0 else 1.0
        a.pgc_sign_agrees = sign > 0
        a.r_aligned = pearson(vc.maps["raw"], np.maximum(sign * proj, 0))
    return a


def progress_line(case: Case, m: Measurement) -> None:
    if m.ok:
        text = (
            f"{m.median_s:.3f} s ({m.calls} call{'s' if m.calls > 1 else ''}), peak {m.peak_mib:.0f} MiB, "
            f"working {m.working_mib:.0f} MiB, other load {m.others_load:.2f}"
        )
    else:
        text = m.note
    print(f"  {case.key}: {m.variant.label}: {text}", flush=True)


def run_variants(case: Case, variants: list[Variant], args, workdir: Path, **extra) -> dict[str, Measurement]:
    found = {}
    for v in variants:
        if v.key in args.skip:
            continue
        found[v.key] = m = run_worker(v, case, args, workdir, **extra)
        progress_line(case, m)
    return found


# -- part 1: agreement --------------------------------------------------------------------------------


def agreement_variants(case: Case) -> list[tuple[Variant, list[Variant]]]:
    """(volcam variant, pytorch-grad-cam variants to compare it with) for one case."""
    pairs = []
    for method, name in PGC_CLASSES.items():
        if name is None:
            continue
        stock = pgc_variant(method)
        others = [stock, pgc_variant(method, port=True)] if case.dims == 3 and name in PORTED else [stock]
        if method == "scorecam":
            softmax = pgc_variant(method, "softmax", port=case.dims == 3)
            pairs.append((volcam_variant(method), [*others, softmax]))
            # the one difference left between the two: how the masks are upsampled
            diagnostic = pgc_variant(method, port=True, align_corners=False)
            pairs.append((volcam_variant(method, weights="increase"), [*others[-1:], diagnostic]))
        else:
            pairs.append((volcam_variant(method), others))
    return pairs


def measure_agreement(case: Case, args, workdir: Path) -> tuple[list[list[str]], list, dict[str, Measurement]]:
    """Each pair's r; every variant runs once, without warm-up (its time is not reported)."""
    pairs = agreement_variants(case)
    variants = list(dict.fromkeys([v for vc, pg in pairs for v in (vc, *pg)]))
    found = run_variants(case, variants, args, workdir, repeats=1, warmup=False)
    rows, scores = [], []
    for vc, pgcs in pairs:
        for pg in pgcs:
            if vc.key not in found or pg.key not in found:
                continue
            m_vc, m_pg = found[vc.key], found[pg.key]
            a = agreement(m_vc, m_pg)
            note = m_vc.note or m_pg.note
            if a.pgc_sign_agrees is False:
                note = "pytorch-grad-cam's component has the opposite sign to volcam's rule"
            rows.append(
                [
                    vc.label,
                    pg.label,
                    number(a.r_feature, ".5f"),
                    number(a.r_aligned, ".5f") if a.r_aligned is not None else "",
                    number(a.r_grid, ".5f"),
                    note,
                ]
            )
            scores.append((vc.key, pg.key, a))
    return rows, scores, found


def agreement_table(case: Case, rows: list[list[str]]) -> list[str]:
    lines = [
        f"### {case.key}: {case.title}",
        "",
        "| volcam | pytorch-grad-cam | r, feature resolution | r, sign aligned | r, input grid as returned | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def required_pairs(dims: int) -> dict[str, tuple[str, str]]:
    """The pairs the r > 0.99 verdicts are on: the same formulation in both libraries."""
    prefix = "pgc-port" if dims == 3 else "pgc"
    return {
        "eigencam": ("volcam:eigencam", "pgc:eigencam"),
        "scorecam": ("volcam:scorecam:weights=increase", f"{prefix}:scorecam"),
        "ablationcam": ("volcam:ablationcam", f"{prefix}:ablationcam"),
    }


def agreement_verdicts(case: Case, scores: list[tuple[str, str, Agreement]]) -> list[str]:
    by_pair = {(vc, pg): a for vc, pg, a in scores}
    lines = []
    for method, (vc, pg) in required_pairs(case.dims).items():
        a = by_pair.get((vc, pg))
        if a is None or a.r_feature is None:
            lines.append(f"FAIL {case.key} {method}: no comparison ({vc} against {pg} did not run)")
            continue
        # The verdict is on the same formulation: a decomposition's sign is arbitrary in pytorch-grad-cam
        # (volcam fixes it by the mean activation), and its Score-CAM upsamples the masks with corners
        # aligned; the raw r stays in the line.
        r = a.r_feature
        text = f"{case.key} {method}: {vc} against {pg}, r = {r:.5f} at feature resolution"
        if a.r_aligned is not None and not a.pgc_sign_agrees:
            r = a.r_aligned
            text += (
                f"; pytorch-grad-cam's SVD sign came out opposite to volcam's mean-activation rule, r = "
                f"{a.r_aligned:.5f} with its component turned by that rule"
            )
        same_masks = by_pair.get((vc, pgc_variant(method, port=True, align_corners=False).key))
        if method == "scorecam" and same_masks is not None and same_masks.r_feature is not None:
            r = same_masks.r_feature
            text += f"; r = {same_masks.r_feature:.5f} when the port upsamples the masks as volcam does"
        text += f" (target > 0.99 on the like-for-like r: {r:.5f})"
        lines.append(f"{verdict(r > R_TARGET)} {text}")
    return lines


# -- part 2: cost at 96³ ------------------------------------------------------------------------------


def cost_variants(case: Case, args: argparse.Namespace) -> tuple[list[Variant], list[Variant]]:
    """volcam's variants (every method, defaults) and pytorch-grad-cam's (stock, and ports in 3D)."""
    import importlib

    sys.path.insert(0, args.volcam_src)
    registry = importlib.import_module("volcam.methods.registry")
    methods = [m.name for m in registry.methods()]
    unknown = [m for m in methods if m not in PGC_CLASSES]
    if unknown:
        print(f"  note: no pytorch-grad-cam pairing known for {unknown}", flush=True)
    volcam_vs = [volcam_variant(m) for m in methods]
    pgc_vs = []
    for m in methods:
        name = PGC_CLASSES.get(m)
        if name is None:
            continue
        pgc_vs.append(pgc_variant(m))
        if case.dims == 3 and name in PORTED and (name != "AblationCAM" or args.ablation_port):
            pgc_vs.append(pgc_variant(m, port=True))
    return volcam_vs, pgc_vs


def measure_cost(case: Case, args, workdir: Path) -> dict[str, Measurement]:
    """The cheap variants first, then each perturbation method's variants back to back (volcam's
    Score-CAM, its K-forwards floor, pytorch-grad-cam's Score-CAM), so they see similar machine load."""
    volcam_vs, pgc_vs = cost_variants(case, args)
    found = run_variants(case, [FLOOR, *(v for v in volcam_vs + pgc_vs if v.method not in PERTURBATION)], args, workdir)
    for method in ("scorecam", "ablationcam", "occlusion"):
        vc = run_variants(case, [v for v in volcam_vs if v.method == method], args, workdir)
        found.update(vc)
        m = vc.get(volcam_variant(method).key)
        batch = args.batch_size or (m.info.get("batch_size") if m is not None and m.ok else None)
        if method == "scorecam" and m is not None and m.ok and FLOOR_K.key not in args.skip:
            k = m.info["forwards"]
            found[FLOOR_K.key] = fk = run_worker(
                FLOOR_K, case, args, workdir, k=k, batch_size=batch, batches=args.batches
            )
            progress_line(case, fk)
        # pytorch-grad-cam's perturbation classes at volcam's batch size, for a like-for-like time
        found.update(run_variants(case, [v for v in pgc_vs if v.method == method], args, workdir, batch_size=batch))
    order = [FLOOR.key, FLOOR_K.key, *(v.key for v in volcam_vs + pgc_vs)]
    return {k: found[k] for k in order if k in found}


def pgc_pair(found: dict[str, Measurement], method: str) -> tuple[Measurement | None, Measurement | None]:
    """(the pytorch-grad-cam measurement to set beside volcam's, the stock one when that failed)."""
    stock, port = found.get(pgc_variant(method).key), found.get(pgc_variant(method, port=True).key)
    if port is not None and (stock is None or not stock.ok):
        return port, stock
    return stock, None


def cost_table(case: Case, found: dict[str, Measurement], args: argparse.Namespace) -> list[str]:
    floor = found.get(FLOOR.key)
    floor_s = floor.median_s if floor and floor.ok else None
    lines = [
        f"### {case.key}: {case.title}",
        "",
        "| method | volcam s | × floor | peak RSS MiB | working MiB | calls | pytorch-grad-cam | pgc s | pgc peak RSS "
        "MiB | pgc working MiB | calls | volcam s / pgc s | r, feature res. | other load (volcam / pgc) | note |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in (FLOOR.key, FLOOR_K.key):
        m = found.get(key)
        if m is None:
            continue
        if not m.ok:
            lines.append(f"| {m.variant.label} | {m.note} |" + " |" * 13)
            continue
        note = ""
        if key == FLOOR_K.key:
            i = m.info
            note = (
                f"K = {i['k']} at batch {i['batch_size']}: median of {len(i['batch_s'])} full batches "
                f"({', '.join(f'{s:.1f}' for s in i['batch_s'])} s) × {i['full_batches']}"
                + (f" + a batch of {i['remainder']}" if i["remainder"] else "")
            )
        cells = [m.variant.label, f"{m.median_s:.3f}", ratio(m.median_s, floor_s), f"{m.peak_mib:.0f}"]
        cells += [f"{m.working_mib:.0f}", str(m.calls), "", "", "", "", "", "", "", f"{m.others_load:.2f}", note]
        lines.append("| " + " | ".join(cells) + " |")
    for vc in found.values():
        if vc.variant.library != "volcam":
            continue
        pg, stock = pgc_pair(found, vc.variant.method)
        notes = [vc.note] if vc.note else []
        if vc.info.get("forwards"):
            notes.append(f"volcam: {vc.info['forwards']} forwards at batch {vc.info['batch_size']}")
        if vc.variant.method == "ablationcam" and vc.info:
            notes.append("volcam: head-only passes" if vc.info.get("head_only") else "volcam: full forwards")
        if vc.variant.method == "scorecam":
            notes.append("weights differ: volcam 'probability', pytorch-grad-cam softmax over channels of the logit")
        if stock is not None and not stock.ok:
            notes.append(f"stock pytorch-grad-cam {stock.note}")
        if vc.variant.method == "ablationcam" and case.dims == 3 and not args.ablation_port:
            notes.append(
                "pytorch-grad-cam's 3D port not timed here (`--ablation-port`): it runs the whole network for "
                "each of the K channels, the cost of the K-forwards floor"
            )
        cells = [vc.variant.method]
        cells += (
            [f"{vc.median_s:.3f}", ratio(vc.median_s, floor_s), f"{vc.peak_mib:.0f}", f"{vc.working_mib:.0f}"]
            if vc.ok
            else [vc.note, "", "", ""]
        )
        cells.append(str(vc.calls) if vc.ok else "")
        if pg is None:
            cells += ["–", "", "", "", "", "", ""]
        elif not pg.ok:
            cells += [pg.variant.label.removeprefix("pytorch-grad-cam "), pg.note, "", "", "", "", ""]
        else:
            a = agreement(vc, pg)
            r = number(a.r_feature, ".4f")
            if a.r_aligned is not None and not a.pgc_sign_agrees:
                r += f" (aligned {a.r_aligned:.4f})"
            cells += [
                pg.variant.label.removeprefix("pytorch-grad-cam "),
                f"{pg.median_s:.3f}",
                f"{pg.peak_mib:.0f}",
                f"{pg.working_mib:.0f}",
                str(pg.calls),
                ratio(vc.median_s, pg.median_s) if vc.ok else "–",
                r,
            ]
        load = number(vc.others_load, ".2f") + (f" / {pg.others_load:.2f}" if pg is not None and pg.ok else "")
        cells += [load, "; ".join(notes)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}×" if value is not None and reference else "–"


def cost_verdicts(case: Case, found: dict[str, Measurement]) -> list[str]:
    sc, floor_k = found.get("volcam:scorecam"), found.get(FLOOR_K.key)
    pg, _ = pgc_pair(found, "scorecam")
    lines = []
    if sc is None or not sc.ok or floor_k is None or not floor_k.ok:
        lines.append(f"FAIL {case.key} Score-CAM: cost against its K masked forwards not measured")
    else:
        q = sc.median_s / floor_k.median_s
        lines.append(
            f"{verdict(q <= SCORECAM_LIMIT)} {case.key}: volcam Score-CAM {sc.median_s:.1f} s = {q:.3f}× the "
            f"{floor_k.median_s:.1f} s of its K = {floor_k.info['k']} masked forwards at batch "
            f"{floor_k.info['batch_size']} (target ≤ {SCORECAM_LIMIT:.2f}×)"
        )
    if sc is None or not sc.ok or pg is None or not pg.ok:
        lines.append(f"FAIL {case.key} Score-CAM: no time to compare with pytorch-grad-cam's")
    else:
        lines.append(
            f"{verdict(sc.median_s < pg.median_s)} {case.key}: volcam Score-CAM {sc.median_s:.1f} s is faster "
            f"than {pg.variant.label} {pg.median_s:.1f} s ({sc.median_s / pg.median_s:.2f}×; peak RSS "
            f"{sc.peak_mib:.0f} against {pg.peak_mib:.0f} MiB)"
        )
    return lines


# -- report ---------------------------------------------------------------------------------------------


def header(args, load: tuple[str, str], versions: dict[str, str], cases: list[Case]) -> list[str]:
    fmt = ", ".join
    python = args.python.relative_to(HERE.parent) if args.python.is_relative_to(HERE.parent) else args.python
    return [
        "# Every method beside pytorch-grad-cam: agreement, time and memory",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, {platform.system()} {platform.release()}; "
        f"load average (1 min) {load[0]} at start, {load[1]} at end; other processes may have been running",
        f"- every worker in `{python}`"
        f" (CPU): {fmt(f'{k} {v}' for k, v in sorted(versions.items()))}; torch threads: {args.threads}",
        f"- volcam: {args.volcam_what}, imported from its `src/` (not installed in that venv)",
        f"- models: MONAI `resnet18(spatial_dims=…, n_input_channels=1, num_classes=2)`, weights "
        f"`torch.manual_seed(0)` (untrained); input 1×1×S^d standard normal, seed 1; and the trained demo CT "
        f"model (ct-demo); target class {TARGET_CLASS} (its logit; Score-CAM as each library weighs it)",
        f"- cases: {'; '.join(f'{c.key}: {c.title}' for c in cases)}",
        f"- cost: {args.repeats} timed calls per cheap method after 1 warm-up, median reported; Score-CAM, "
        "occlusion and pytorch-grad-cam's Score-/Ablation-CAM: one timed call, no warm-up; each call on a fresh "
        "copy of the input (volcam's forward cache never answers); time = the call that returns the map on "
        "the input grid. Agreement cases: one call per variant (their times are not reported)",
        "- peak RSS: `ru_maxrss` of the worker; working: peak RSS − RSS once the model, input and CAM object "
        "exist; × floor: time over the bare `no_grad` forward's",
        "- K masked forwards: bare `no_grad` forwards of batches of masked copies of the input at volcam's "
        "Score-CAM batch size (K = the forwards volcam's `ModelRunner` counted: the non-constant channels), "
        "the median full batch × the number of full batches + the remainder batch, in a sibling process; "
        "pytorch-grad-cam's Score-CAM and Ablation-CAM get that same batch size (their defaults: 16 and 32)",
        "- r: Pearson r between the maps at feature resolution (volcam's `CamResult.raw`, pytorch-grad-cam's "
        "`get_cam_image` output after its ReLU), before any upsampling; min-max normalisation does not change "
        "it. 'input grid as returned': each library's final map (volcam: (bi/tri)linear, `align_corners=False`; "
        "pytorch-grad-cam: `cv2.resize` in 2D, `scipy.ndimage.zoom` cubic spline in 3D). 'sign aligned': "
        "decompositions, pytorch-grad-cam's pre-ReLU component turned to agree with the mean of the decomposed "
        "matrix (volcam's rule), then ReLU'd",
        "- pytorch-grad-cam (3D port): its `ScoreCAM`/`AblationCAM` code with only the 2D-only lines made n-D "
        "(stock 1.5.7 fails on volumes: see the notes); `benchmarks/methods.py` `pgc_ports`",
        *(
            [
                "- assembled with `--resume` from the worker results kept in the work dir: variants that ran while "
                "the machine was busy were rerun; the load averages above are this invocation's, the other-load "
                "column is each variant's own"
            ]
            if args.resume
            else []
        ),
        "- other load: CPU-seconds per second used by other processes during the timed calls (from /proc/stat "
        f"less the worker's own CPU time; 0 = idle, {os.cpu_count()} = every core busy elsewhere)",
        "",
    ]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=True).stdout.strip()


def volcam_source(args: argparse.Namespace, workdir: Path) -> None:
    """Sets ``args.volcam_src`` (the ``src/`` the workers import) and ``args.volcam_what`` (for the header).

    With ``--volcam-rev`` that commit's ``src/`` is exported with ``git archive`` into the work dir, so
    edits to the working tree during a long run cannot reach the workers.
    """
    if args.volcam_rev is None:
        head = git("rev-parse", "--short", "HEAD")
        dirty = " with uncommitted changes in src/" if git("status", "--porcelain", "--", "src") else ""
        args.volcam_src, args.volcam_what = str(SRC), f"the working tree at {head}{dirty}"
        return
    commit = git("rev-parse", "--short", args.volcam_rev)
    target = workdir / f"volcam-{commit}"
    if not (target / "src" / "volcam" / "__init__.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=HERE.parent, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    args.volcam_src, args.volcam_what = str(target / "src"), f"commit {commit} (`git archive`)"


VIT_SIZE, VIT_PATCH, VIT_LAYER = 224, 16, "blocks.3.norm1"


def vit_worker(spec: dict, out: Path) -> None:
    """Part 3 in one process of the gradcam venv: both libraries' Grad-CAM on one MONAI ViT (2D)."""
    sys.path.insert(0, spec["volcam_src"])
    from monai.networks.nets import ViT
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import volcam

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    net = ViT(
        3, img_size=VIT_SIZE, patch_size=VIT_PATCH, hidden_size=192, mlp_dim=768, num_layers=4, num_heads=3,
        classification=True, num_classes=2, spatial_dims=2, post_activation="none",
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, VIT_SIZE, VIT_SIZE, generator=torch.Generator().manual_seed(1))
    side = VIT_SIZE // VIT_PATCH

    def reshape_transform(tensor: torch.Tensor, height: int = side, width: int = side) -> torch.Tensor:
        # pytorch-grad-cam's documented reshape_transform for ViTs (its tutorial's, at this grid)
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    class Logits(torch.nn.Module):  # MONAI's ViT returns (logits, hidden states)
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, xi: torch.Tensor) -> torch.Tensor:
            return self.net(xi)[0]

    cam = GradCAM(model=Logits(), target_layers=[net.get_submodule(VIT_LAYER)], reshape_transform=reshape_transform)
    caught: dict[str, np.ndarray] = {}
    get_cam_image = cam.get_cam_image

    def spy(*args, **kwargs):
        caught["projection"] = np.asarray(get_cam_image(*args, **kwargs), dtype=np.float32)
        return caught["projection"]

    cam.get_cam_image = spy
    grid = cam(input_tensor=x, targets=[ClassifierOutputTarget(TARGET_CLASS)])
    result = volcam.explain(net, x, "gradcam", target=TARGET_CLASS)
    report = {
        "layer": result.layer,
        "raw_shape": list(result.raw.shape),
        "r_feature": pearson(as_array(result.raw), np.maximum(caught["projection"], 0)),
        "r_grid": pearson(as_array(result.map), np.asarray(grid)),
        "versions": library_versions(),
    }
    out.write_text(json.dumps(report))


def measure_vit(args: argparse.Namespace, workdir: Path) -> tuple[list[str], list[str]]:
    """Part 3: the verdict line and the section."""
    out = workdir / "vit-2d.json"
    spec = {"volcam_src": args.volcam_src, "threads": args.threads}
    proc = subprocess.run(
        [str(args.python), __file__, "--vit-worker", json.dumps(spec), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    title = f"### vit-2d: MONAI ViT (2D) at {VIT_SIZE}², {VIT_PATCH}² patches, target layer `{VIT_LAYER}`"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"FAIL vit-2d gradcam: no comparison ({last[:200]})"], [title, "", f"failed: {last[:200]}", ""]
    report = json.loads(out.read_text())
    r, r_grid = report["r_feature"], report["r_grid"]
    verdict_line = (
        f"{verdict(r is not None and r > R_TARGET)} vit-2d gradcam: volcam (tokens laid back by itself, layer "
        f"{report['layer']!r}) against pytorch-grad-cam GradCAM with its documented reshape_transform, "
        f"r = {number(r, '.5f')} at feature resolution (target > 0.99)"
    )
    section = [
        title,
        "",
        "| volcam | pytorch-grad-cam | r, feature resolution | r, input grid as returned | volcam's raw map |",
        "|---|---|---:|---:|---|",
        f"| volcam gradcam (auto: `{report['layer']}`) | pytorch-grad-cam GradCAM + reshape_transform | "
        f"{number(r, '.5f')} | {number(r_grid, '.5f')} | {tuple(report['raw_shape'])} |",
        "",
    ]
    return [verdict_line], section


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.out)
        return
    if args.vit_worker:
        vit_worker(json.loads(args.vit_worker), args.out)
        return
    agreement_cases = [
        Case("2d", 2, 32 if args.quick else 128, "layer4"),
        Case("3d", 3, 16 if args.quick else 32, "layer3"),
    ]
    cost_case = Case(f"r18-{args.size}", 3, args.size, "layer4")
    start_load = load_average()
    targets, sections, cases = [], [], []
    measurements: dict[str, list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="volcam-methods-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        volcam_source(args, workdir)
        if "agreement" in args.parts:
            sections += ["## Agreement with pytorch-grad-cam", ""]
            demo = None if args.quick else demo_case(args, workdir)
            for case in agreement_cases + ([demo] if demo else []):
                rows, scores, found = measure_agreement(case, args, workdir)
                measurements[case.key] = list(found.values())
                targets += agreement_verdicts(case, scores)
                sections += agreement_table(case, rows)
                cases.append(case)
        if "vit" in args.parts:
            lines, section = measure_vit(args, workdir)
            targets += lines
            sections += ["## A vision transformer", "", *section]
        if "cost" in args.parts:
            found = measure_cost(cost_case, args, workdir)
            measurements[cost_case.key] = list(found.values())
            targets = cost_verdicts(cost_case, found) + targets
            sections += ["## Time and memory", "", *cost_table(cost_case, found, args)]
            cases.append(cost_case)
    versions: dict[str, str] = {}
    for key, found in measurements.items():
        for m in found:
            versions.update(m.versions or {})
        sums = {tuple(m.checksum) for m in found if m.checksum}
        if len(sums) > 1:
            targets.append(f"WARNING: {key}: workers saw different weights or inputs: {sorted(sums)}")
    lines = header(args, (start_load, load_average()), versions, cases)
    text = "\n".join([*lines, "## Targets", "", *[f"- {t}" for t in targets], "", *sections])
    print()
    print(text)
    if not args.quick and not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"written to {RESULTS.relative_to(HERE.parent)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="edge of the cost case's volume (resnet18 3D)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cheap method (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    parser.add_argument(
        "--parts", default="agreement,vit,cost", help="agreement, vit, cost, or several (comma-separated)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="rows per model call for every perturbation method "
        "(default: volcam picks from free memory; pytorch-grad-cam gets the same)",
    )
    parser.add_argument(
        "--ablation-port",
        action="store_true",
        help="also time pytorch-grad-cam's Ablation-CAM (3D port) in the cost case: K full forwards, ~20 min at 96³",
    )
    parser.add_argument("--batches", type=int, default=3, help="full batches timed for the K-forwards floor")
    parser.add_argument("--skip", default="", help="variant keys not to run, e.g. pgc-port:ablationcam")
    parser.add_argument("--python", type=Path, default=GRADCAM_PYTHON, help="interpreter of every worker")
    parser.add_argument("--volcam-rev", help="benchmark this commit's src/ (e.g. HEAD) instead of the working tree")
    parser.add_argument("--workdir", type=Path, help="keep the workers' results here (default: a temporary dir)")
    parser.add_argument("--resume", action="store_true", help="reuse worker results already in --workdir")
    parser.add_argument("--quick", action="store_true", help="small sizes, one call each, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--vit-worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.quick:
        args.size, args.repeats, args.batches = 24, 1, 1  # 24³: a 2³ layer4 (1³ has only constant channels)
    if args.resume and args.workdir is None:
        parser.error("--resume needs --workdir")
    return args


if __name__ == "__main__":
    main()
