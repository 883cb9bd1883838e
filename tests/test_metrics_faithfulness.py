"""Deletion/insertion, Average Drop/Increase and ROAD on a model whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from volcam import VolcamError
from volcam.metrics import (
    MetricInputError,
    average_drop_increase,
    deletion_insertion,
    imputation_system,
    noisy_linear_imputation,
    removal_order,
    road,
)

A, B = 8.0, 4.0  # logit = A * (mean of x over the region) - B


class RegionModel(nn.Module):
    """Two classes; class 1's logit is ``A · mean(x over R) − B``, class 0's is 0.

    Only the region R matters, so the order in which voxels are removed is the whole story.
    """

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)[:, 0]
        mean = (h * self.region).flatten(1).sum(1) / self.region.sum()
        return torch.stack([torch.zeros_like(mean), A * mean - B], dim=1)


def _sigmoid_auc(slope: float, offset: float) -> float:
    """∫_0^1 sigmoid(slope·f + offset) df."""
    return (math.log1p(math.exp(slope + offset)) - math.log1p(math.exp(offset))) / slope


@pytest.fixture
def case() -> tuple[RegionModel, torch.Tensor, torch.Tensor]:
    region = torch.zeros(16, 16, 16, dtype=torch.bool)
    region[2:10, 4:12, 5:13] = True  # 512 of 4096 voxels
    x = torch.rand(1, 1, 16, 16, 16)
    x[0, 0][region] = 1.0
    return RegionModel(region).train(), x, region


def test_deletion_and_insertion_rank_the_true_map_first(case) -> None:
    model, x, region = case
    good = region.float() + 0.01 * torch.rand(region.shape)
    inverse = 1 - good
    random = torch.rand(region.shape)
    res = {
        name: deletion_insertion(model, x, m, target=1, insertion_baseline="zero", batch_size=32)
        for name, m in [("good", good), ("inverse", inverse), ("random", random)]
    }
    # every curve starts and ends at the known probabilities: p(x) and the all-baseline one
    p_full, p_empty = 1 / (1 + math.exp(-(A - B))), 1 / (1 + math.exp(B))
    for r in res.values():
        assert r.deletion.scores.shape == (1, 101) and r.forwards == 201
        assert r.deletion.scores[0, 0].item() == pytest.approx(p_full, abs=1e-6)
        assert r.deletion.scores[0, -1].item() == pytest.approx(p_empty, abs=1e-6)
        assert r.insertion.scores[0, 0].item() == pytest.approx(p_empty, abs=1e-6)
        assert r.insertion.scores[0, -1].item() == pytest.approx(p_full, abs=1e-6)
    # the true map removes R within the first 1/8: the fastest possible drop and rise
    assert res["good"].deletion.auc < res["random"].deletion.auc < res["inverse"].deletion.auc
    assert res["good"].insertion.auc > res["random"].insertion.auc > res["inverse"].insertion.auc
    r_frac = region.float().mean().item()
    assert res["good"].deletion.auc.item() < r_frac + p_empty
    # a random order removes a fraction f of R at step f: the curve is sigmoid(A(1-f) - B)
    random_auc = _sigmoid_auc(A, -B)
    assert res["random"].deletion.auc.item() == pytest.approx(random_auc, abs=0.03)
    assert res["random"].insertion.auc.item() == pytest.approx(random_auc, abs=0.03)
    assert model.training  # mode restored


def test_baselines_region_and_ties(case) -> None:
    model, x, region = case
    good = region.float()  # all ties inside R and outside: broken at random, R still first
    for baseline in ("zero", "mean", "blur", 0.25):
        r = deletion_insertion(model, x, good, target=1, steps=10, baseline=baseline, spacing=(2.0, 1.0, 1.0))
        assert r.deletion.scores.shape == (1, 11)
        assert torch.all(r.deletion.scores[0, 2:] <= r.deletion.scores[0, 0] + 1e-6)
    # ranking restricted to the region: voxels outside it never change, so the first step already hits R
    body = region.clone()
    body[10:, :, :] = True
    inside = deletion_insertion(model, x, torch.rand(region.shape), target=1, steps=4, region=body, batch_size=2)
    assert (
        inside.deletion.scores[0, 1]
        < deletion_insertion(model, x, torch.rand(region.shape), target=1, steps=4).deletion.scores[0, 1]
    )
    with pytest.raises(MetricInputError):
        deletion_insertion(model, x, good, baseline="black")
    with pytest.raises(VolcamError, match="grid"):
        deletion_insertion(model, x, torch.rand(8, 8, 8))
    with pytest.raises(VolcamError, match="region"):
        deletion_insertion(model, x, good, region=torch.ones(8, 8, 8, dtype=torch.bool))


def test_removal_order_breaks_ties_at_random() -> None:
    flat = torch.zeros(1000)
    a, n = removal_order(flat, generator=torch.Generator().manual_seed(0))
    b, _ = removal_order(flat, generator=torch.Generator().manual_seed(1))
    assert n == 1000 and sorted(a.tolist()) == list(range(1000))
    assert (a != b).any() and (a[:10] != torch.arange(10)).any()


def test_average_drop_and_increase(case) -> None:
    model, x, region = case
    ones = average_drop_increase(model, x, torch.ones(region.shape), target=1)
    assert ones.average_drop == pytest.approx(0, abs=1e-4) and ones.increase == 0
    # keeping only R (which is at the window's top) keeps the score: no drop
    kept = average_drop_increase(model, x, region.float(), target=1, window=(0.0, 1.0))
    assert kept.average_drop == pytest.approx(0, abs=1e-4)
    # keeping everything but R loses most of it
    lost = average_drop_increase(model, x, 1 - region.float(), target=1, window=(0.0, 1.0))
    p_full, p_empty = 1 / (1 + math.exp(-(A - B))), 1 / (1 + math.exp(B))
    assert lost.average_drop == pytest.approx(100 * (p_full - p_empty) / p_full, rel=1e-4)
    assert lost.increase == 0
    with pytest.raises(MetricInputError):
        average_drop_increase(model, x, 2 * torch.ones(region.shape))


def _dense_imputation(values: np.ndarray, removed: np.ndarray, neighbours: int) -> np.ndarray:
    """The same system, written voxel by voxel and solved densely."""
    shape = removed.shape
    ndim = len(shape)
    unknown = [tuple(int(i) for i in p) for p in np.argwhere(removed)]
    index = {p: i for i, p in enumerate(unknown)}
    offsets = [o for o in np.ndindex(*(3,) * ndim) if any(v != 1 for v in o)]
    offsets = [tuple(v - 1 for v in o) for o in offsets]
    if neighbours == 2 * ndim:
        offsets = [o for o in offsets if sum(map(abs, o)) == 1]
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros(len(unknown))
    for i, p in enumerate(unknown):
        for o in offsets:
            q = tuple(pi + oi for pi, oi in zip(p, o, strict=True))
            if not all(0 <= qi < s for qi, s in zip(q, shape, strict=True)):
                continue
            w = 1 / sum(map(abs, o))
            a[i, i] += w
            if removed[q]:
                a[i, index[q]] -= w
            else:
                b[i] += w * values[q]
    out = values.copy()
    out[removed] = np.linalg.solve(a, b)
    return out


@pytest.mark.parametrize(("shape", "neighbours"), [((6, 7), 4), ((6, 7), 8), ((5, 6, 4), 6), ((5, 6, 4), 26)])
def test_imputation_matches_a_dense_solve(shape, neighbours) -> None:
    gen = np.random.default_rng(0)
    values = gen.normal(size=shape)
    removed = gen.random(shape) < 0.6
    removed[(0,) * len(shape)] = True  # a removed corner voxel: fewer neighbours inside the grid
    image, hole = torch.from_numpy(values)[None], torch.from_numpy(removed)
    got = noisy_linear_imputation(image, hole, neighbours=neighbours, noise=0)
    np.testing.assert_allclose(got[0].numpy(), _dense_imputation(values, removed, neighbours), atol=1e-10)
    # kept voxels are untouched; the noise goes to the removed ones only
    noisy = noisy_linear_imputation(image, hole, neighbours=neighbours)
    assert torch.equal(noisy[0][~hole], image[0][~hole])
    a, _ = imputation_system(values[None], removed, neighbours)
    assert abs(a - a.T).max() < 1e-12  # symmetric: conjugate gradients apply


def test_imputation_by_conjugate_gradients(monkeypatch) -> None:
    from volcam.metrics import imputation

    gen = np.random.default_rng(1)
    values = gen.normal(size=(2, 12, 12, 12))
    removed = gen.random((12, 12, 12)) < 0.5
    direct = noisy_linear_imputation(torch.from_numpy(values), torch.from_numpy(removed), noise=0)
    monkeypatch.setattr(imputation, "_DIRECT_LIMIT", 0)
    iterative = noisy_linear_imputation(torch.from_numpy(values), torch.from_numpy(removed), noise=0, rtol=1e-10)
    torch.testing.assert_close(iterative, direct, atol=1e-7, rtol=0)
    with pytest.raises(MetricInputError):
        noisy_linear_imputation(torch.zeros(1, 3, 3), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(MetricInputError):
        noisy_linear_imputation(torch.zeros(1, 3, 3), torch.eye(3, dtype=torch.bool), neighbours=6)  # 2D: 4 or 8


def test_road_prefers_the_true_map(case) -> None:
    model, x, region = case
    good = road(model, x, region.float() + 0.01 * torch.rand(region.shape), target=1, percentages=(10, 50, 90))
    random = road(model, x, torch.rand(region.shape), target=1, percentages=(10, 50, 90), neighbours=6)
    assert good.morf.shape == (1, 3) and good.percentages.tolist() == [10, 50, 90]
    assert good.score > random.score
    assert good.morf[0, 1] < random.morf[0, 1]
    with pytest.raises(MetricInputError):
        road(model, x, region.float(), percentages=(0, 100))


def test_images_work_as_volumes_do() -> None:
    from conftest import GapNet

    net = GapNet(2, num_classes=2).eval()
    x = torch.rand(2, 1, 12, 12)
    cam = torch.rand(2, 1, 12, 12)
    curves = deletion_insertion(net, x, cam, steps=5, baseline="blur")
    assert curves.deletion.scores.shape == (2, 6) and curves.classes.shape == (2,)
    assert road(net, x, cam, percentages=(25, 75), neighbours=8).morf.shape == (2, 2)
    assert average_drop_increase(net, x, cam).original.shape == (2,)
