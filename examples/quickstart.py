"""Quickstart: train a tiny 3D CNN to find a lesion, then ask every CAM method where it looks.

Runs in about half a minute on a laptop CPU, with nothing to download:

    python examples/quickstart.py [--device cuda]

1. makes noisy 32³ volumes with anisotropic texture; half hold a bright spherical "lesion" at a
   random place (label 1), half do not (label 0);
2. trains a 4-layer 3D CNN (global average pooling + linear head) to tell them apart;
3. explains a held-out lesion volume with every method volcam has, at the auto-picked layer, and
   prints per method: wall time, the share of the map's energy inside the lesion, and whether the
   map's peak falls inside the lesion (the pointing game, with one voxel of tolerance).

A model that has learnt the task looks at the lesion: energy inside far above the lesion's share
of the volume (about 1-2 %) and pointing hits.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import volcam

SIZE = 32


def make_volumes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` volumes ``(n, 1, S, S, S)``, labels ``(n,)`` and lesion masks ``(n, S, S, S)``."""
    noise = torch.randn(n, 1, SIZE, SIZE, SIZE, generator=generator)
    x = F.avg_pool3d(noise, 3, stride=1, padding=1) * 3  # correlated "tissue" texture
    labels = torch.arange(n) % 2
    grid = torch.stack(torch.meshgrid(*[torch.arange(SIZE)] * 3, indexing="ij")).float()
    masks = torch.zeros(n, SIZE, SIZE, SIZE, dtype=torch.bool)
    for i in range(n):
        if labels[i]:
            centre = torch.randint(6, SIZE - 6, (3,), generator=generator).float()
            radius = 3.0 + 2.0 * torch.rand(1, generator=generator).item()
            masks[i] = ((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2
    x = x + 2.5 * masks[:, None].float()
    return x, labels, masks


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(16, 32, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, epochs: int = 12) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        total = 0.0
        for i in range(0, len(x), 16):
            idx = perm[i : i + 16]
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"  epoch {epoch + 1}: loss {total / len(x):.3f}")
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    print("training a tiny 3D CNN on synthetic lesion / no-lesion volumes ...")
    x_train, y_train, _ = make_volumes(240, gen)
    model = tiny_cnn().to(device)
    train(model, x_train, y_train, device)
    x_test, y_test, m_test = make_volumes(40, gen)
    with torch.no_grad():
        accuracy = (model(x_test.to(device)).argmax(1).cpu() == y_test).float().mean().item()
    print(f"held-out accuracy: {accuracy:.0%}")

    case = int(torch.nonzero(y_test)[0])
    x, mask = x_test[case : case + 1], m_test[case]
    near = F.max_pool3d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0  # one voxel of tolerance
    print(f"\nexplaining a held-out lesion volume (lesion = {mask.float().mean():.1%} of the voxels)")
    print(f"{'method':<16}{'seconds':>9}{'energy in lesion':>18}{'pointing':>10}")
    with volcam.CamEngine(model, device=device, labels=["normal", "lesion"], progress=False) as engine:
        for info in volcam.methods():
            if "module" in info.takes:  # L-CAM: a trained attention module first (volcam.train_lcam)
                print(f"{info.name:<16}{'needs a trained module: volcam.train_lcam':>37}")
                continue
            start = time.perf_counter()
            result = engine.explain(x, info.name, target="lesion")
            seconds = time.perf_counter() - start
            cam = result.map[0, 0].cpu()
            energy = (cam[mask].sum() / cam.sum().clamp_min(1e-12)).item()
            peak = torch.unravel_index(cam.argmax(), cam.shape)
            print(f"{info.name:<16}{seconds:>9.3f}{energy:>18.1%}{'hit' if near[peak] else 'miss':>10}")
        print(f"\ntarget layer (auto): {result.layer}; P(lesion) = {result.probabilities[0, 1]:.3f}")
        print("the first method pays the forward; the others reuse it and pay only a backward through the head")


if __name__ == "__main__":
    main()
