"""CF-CAM against Grad-CAM: how far each map moves under gradient noise, and how much it depends on the class.

The gradient-noise variant of max-sensitivity (``docs/methods.md``): take the activations ``A`` and gradients
``g`` of MONAI's 3D ``resnet18`` (1 channel, 2 classes, ``torch.manual_seed(0)`` weights, untrained)
at ``layer3`` and ``layer4`` from one :class:`volcam.CamEngine` forward and backward, add
``N(0, (s · std g)²)`` to the gradients for a few relative levels ``s`` (``std g`` per sample and
layer), and compare each method's noisy map with its clean map by 3D SSIM (MONAI ``SSIMMetric``'s
definition, data range 1, computed separably) on the input grid, after the usual trilinear
upsampling and per-sample min-max normalisation. Mean ± std over the noise draws and samples.

Methods, all pure functions of the same ``A`` and noisy ``g``:

- Grad-CAM: ``ReLU(sum_k mean_v(g_k) A_k)``.
- CF-CAM as volcam computes it (:func:`volcam.methods.cfcam.cfcam`): ``softmax(w / tau)`` with
  ``tau`` the std of the retained weights, the registry's defaults (``sigma_mm=10``, no range
  term), on the layer's spacing (1 mm input voxels times the stride).
- Two ablations with the same ``w``: CF-CAM with ``softmax(w)`` and no temperature (volcam's first
  version: gradients are ~1e-3, so its weights are uniform), and CF-CAM without a softmax
  (``ReLU(sum_k w_k A_k)`` over the retained channels).

Beside stability the script reports how class-specific each clean map is (SSIM between the maps for
class 0 and class 1: 1 means the map does not depend on the class), how close to uniform CF-CAM's
channel coefficients are, with and without the temperature, and how many channels CF-CAM found
important, clustered, and dropped as noise.

The inputs are four synthetic 96³ volumes: smooth noise plus one bright ellipsoid, at a different
place in each. The network is untrained, so this measures the methods' arithmetic, not what a
trained classifier attends to.

Usage::

    python benchmarks/cfcam_stability.py [--size 96] [--samples 4] [--draws 10] [--levels 0.5,1,2,4] [--threads 2]

The tables are printed and written to ``benchmarks/results/cfcam_stability.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import volcam
from volcam.maps.filters import gaussian_filter_mm
from volcam.methods.base import channel_weighted_sum
from volcam.methods.cfcam import IMPORTANT, NOISE, cfcam_weights, channel_groups, tempered_softmax
from volcam.methods.gradient import gradcam

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cfcam_stability.md"
LAYERS = ("layer3", "layer4")
SIGMA_MM, RANGE_SIGMA = 10.0, None  # the registry's defaults for cfcam
HISTORY = "## History"


def phantoms(n: int, size: int, seed: int = 1) -> torch.Tensor:
    """``(n, 1, size³)``: smoothed noise plus one bright ellipsoid per volume, z-scored."""
    gen = torch.Generator().manual_seed(seed)
    x = gaussian_filter_mm(torch.randn(n, 1, size, size, size, generator=gen), 3.0)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij"))
    for i in range(n):
        centre = (torch.rand(3, generator=gen) - 0.5) * 1.0
        radii = 0.12 + 0.1 * torch.rand(3, generator=gen)
        inside = (((grid - centre.view(3, 1, 1, 1)) / radii.view(3, 1, 1, 1)) ** 2).sum(0) <= 1
        x[i, 0][inside] += 4 * x.std()
    return (x - x.mean()) / x.std()


def ssim3d(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """3D SSIM per sample of ``(B, 1, D, H, W)`` maps in [0, 1], as MONAI's ``SSIMMetric(spatial_dims=3,
    data_range=1)`` computes it (11-voxel Gaussian window, σ 1.5, valid region, k1 0.01, k2 0.03), but
    with the window applied separably: ~40× fewer operations than its dense 11³ convolution."""
    r = torch.arange(size, dtype=x.dtype) - (size - 1) / 2
    k = torch.exp(-((r / sigma) ** 2) / 2)
    k = k / k.sum()
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5, D, H, W)
    for axis in range(3):
        shape = [5, 1, 1, 1, 1]  # one 1D window per map, along this axis
        shape[2 + axis] = size
        stack = F.conv3d(stack, k.view(1, 1, *shape[2:]).expand(shape), groups=5)
    mx, my, mxx, myy, mxy = stack.unbind(1)
    c1, c2 = 0.01**2, 0.03**2
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    s = ((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * ((2 * cxy + c2) / (vx + vy + c2))
    return s.flatten(1).mean(1)


def upsample(m: torch.Tensor, size) -> torch.Tensor:
    """Trilinear, ``align_corners=False``: the engine's way to the input grid."""
    return F.interpolate(m, size=tuple(size), mode="trilinear", align_corners=False)


def normalize(m: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max to [0, 1]; a constant map becomes 0 (the engine's rule)."""
    flat = m.flatten(1)
    low = flat.amin(1).view(-1, 1, 1, 1, 1)
    span = flat.amax(1).view(-1, 1, 1, 1, 1) - low
    return (m - low) / torch.where(span > 0, span, torch.ones_like(span))


def cfcam_no_softmax(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``ReLU(sum_k w_k A_k)`` over the retained channels (noise channels' weight -inf -> 0)."""
    return torch.relu(channel_weighted_sum(torch.where(torch.isinf(w), torch.zeros_like(w), w), a))


def maps_for(a: torch.Tensor, g: torch.Tensor, groups: torch.Tensor, spacing: tuple[float, ...], size) -> dict:
    w = cfcam_weights(g, groups, spacing, SIGMA_MM, RANGE_SIGMA)
    raw = {
        "Grad-CAM": gradcam(a, g),
        "CF-CAM": torch.relu(channel_weighted_sum(tempered_softmax(w), a)),
        "CF-CAM softmax(w), before": torch.relu(channel_weighted_sum(torch.softmax(w, dim=1), a)),
        "CF-CAM w/o softmax": cfcam_no_softmax(a, w),
    }
    return {k: normalize(upsample(m, size)) for k, m in raw.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--levels", default="0.5,1,2,4")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    levels = [float(s) for s in args.levels.split(",")]

    from monai.metrics import SSIMMetric
    from monai.networks.nets import resnet18

    reference = SSIMMetric(spatial_dims=3, data_range=1.0)
    torch.manual_seed(0)
    net = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    x = phantoms(args.samples, args.size)
    size = x.shape[2:]
    start = time.perf_counter()
    engine = volcam.CamEngine(net, list(LAYERS), progress=False)
    fwd = engine.forward(x)
    predicted = fwd.output.argmax(1)
    grads = engine.gradients(x)  # the predicted class per sample
    class_grads = [engine.gradients(x, c) for c in (0, 1)]
    ssim = ssim3d

    split_rows, stab_rows, spec_rows = [], [], []
    noise_gen = torch.Generator().manual_seed(123)
    for layer in LAYERS:
        a, g = fwd.activations[layer].detach(), grads[layer]
        spacing = tuple(s / f for s, f in zip(size, a.shape[2:], strict=True))  # 1 mm input voxels x stride
        groups = channel_groups(a)
        k = a.shape[1]
        for i in range(a.shape[0]):
            labels = groups[i]
            n_clusters = int(labels.max()) + 1
            split_rows.append(
                f"| {layer} | {i} | {k} | {'×'.join(map(str, a.shape[2:]))} | {spacing[0]:.0f} "
                f"| {int((labels == IMPORTANT).sum())} | {int((labels >= 0).sum())} in {n_clusters} "
                f"| {int((labels == NOISE).sum())} |"
            )
        clean = maps_for(a, g, groups, spacing, size)
        w = cfcam_weights(g, groups, spacing, SIGMA_MM, RANGE_SIGMA)
        retained = (groups != NOISE).sum(1).float()
        # largest coefficient × N retained: 1.0 = exactly uniform weights
        uniformity = {
            "CF-CAM": (tempered_softmax(w).amax(1) * retained).tolist(),
            "CF-CAM softmax(w), before": (torch.softmax(w, dim=1).amax(1) * retained).tolist(),
        }
        per_class = [maps_for(a, cg[layer], groups, spacing, size) for cg in class_grads]
        check = (per_class[0]["Grad-CAM"], per_class[1]["Grad-CAM"])
        torch.testing.assert_close(ssim3d(*check), reference(*check).flatten(), atol=1e-4, rtol=0)
        for method in clean:
            spec = ssim(per_class[0][method], per_class[1][method]).flatten()
            spec_rows.append((layer, method, spec.mean().item(), spec.min().item()))
        for method, u in uniformity.items():
            spec_rows.append((layer, f"{method}: max coefficient × N retained", sum(u) / len(u), max(u)))

        g_std = g.flatten(1).std(dim=1).view(-1, *[1] * (g.ndim - 1))
        for level in levels:
            scores: dict[str, list[torch.Tensor]] = {m: [] for m in clean}
            for _ in range(args.draws):
                noisy = g + level * g_std * torch.randn(g.shape, generator=noise_gen)
                for method, m in maps_for(a, noisy, groups, spacing, size).items():
                    scores[method].append(ssim(m, clean[method]).flatten())
            stab_rows.append((layer, level, {m: torch.cat(v) for m, v in scores.items()}))
        print(f"{layer} done ({time.perf_counter() - start:.0f} s)", flush=True)

    lines = report(args, predicted.tolist(), split_rows, stab_rows, spec_rows, time.perf_counter() - start)
    print("\n".join(lines))
    RESULTS.parent.mkdir(exist_ok=True)
    # the hand-written history at the end of the results (what changed, earlier numbers) is kept
    old = RESULTS.read_text() if RESULTS.is_file() else ""
    history = old[old.index(HISTORY) :] if HISTORY in old else ""
    RESULTS.write_text("\n".join(lines) + "\n" + ("\n" + history if history else ""))
    print(f"\nwritten to {RESULTS.relative_to(HERE.parent)}")


def report(args, predicted, split_rows, stab_rows, spec_rows, seconds: float) -> list[str]:
    import monai
    import sklearn

    methods = list(stab_rows[0][2])
    lines = [
        "# CF-CAM vs Grad-CAM: gradient noise and class specificity",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {platform.machine()}, torch threads {args.threads}; torch {torch.__version__}, "
        f"monai {monai.__version__}, scikit-learn {sklearn.__version__}, volcam {volcam.__version__}",
        f"- model: MONAI resnet18 (3D, 1 channel, 2 classes), `torch.manual_seed(0)` weights, untrained; "
        f"layers {', '.join(LAYERS)}",
        f"- input: {args.samples} synthetic {args.size}³ volumes (smoothed noise + one bright ellipsoid each), "
        f"1 mm voxels; predicted classes {predicted}, explained",
        f"- noise: g + N(0, (s · std g)²), std per sample and layer; {args.draws} draws per level; "
        "SSIM (3D, data range 1; MONAI SSIMMetric's definition, computed separably and checked against it) "
        f"between noisy and clean maps on the {args.size}³ grid "
        "after trilinear upsampling and min-max normalisation; mean ± std over draws × samples",
        f"- CF-CAM: sigma_mm={SIGMA_MM}, range_sigma={RANGE_SIGMA} (the registry defaults), spacing = 1 mm × stride",
        f"- run time {seconds:.0f} s",
        "",
        "## Stability: SSIM of the noisy map to the clean map (1 = unchanged)",
        "",
        "| layer | noise s | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for layer, level, scores in stab_rows:
        cells = [f"{v.mean():.3f} ± {v.std():.3f}" for v in scores.values()]
        lines.append(f"| {layer} | {level:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Channel split (CF-CAM, per sample; it depends on the activations only, not on the noise)",
        "",
        "| layer | sample | K | feature map | spacing mm | important | clustered | dropped as noise |",
        "|---|---|---|---|---|---|---|---|",
        *split_rows,
        "",
        "## Class specificity of the clean maps: SSIM(map for class 0, map for class 1)",
        "",
        "1 means the map is the same whichever class is explained. The last two rows per layer are the",
        "largest channel coefficient times the number of retained channels (1 = all coefficients equal),",
        "for the explained class, with and without the temperature.",
        "",
        "| layer | method | mean over samples | min (max for the coefficient rows) |",
        "|---|---|---|---|",
        *[f"| {layer} | {m} | {mean:.3f} | {other:.3f} |" for layer, m, mean, other in spec_rows],
    ]
    return lines


if __name__ == "__main__":
    main()
