"""VxAP and MaxF1 (SE3D) against a direct computation of the definitions on raw voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from volcam import VolcamError
from volcam.metrics import VoxelHistograms, precision_recall, voxel_histograms, voxel_precision_recall
from volcam.testing.phantoms import chest_ct

THRESHOLDS = np.arange(101, dtype=np.float64) / 100  # τ_k = k / 100, k = 0 … 100


def _normalised(cam: np.ndarray) -> np.ndarray:
    """The map as volcam reads it (float32) in float64, min–max normalised; a constant map is all 0."""
    v = np.asarray(cam, dtype=np.float32).astype(np.float64).ravel()
    low, high = v.min(), v.max()
    return (v - low) / (high - low) if high > low else np.zeros_like(v)


def _direct(values: np.ndarray, lesion: np.ndarray) -> dict[str, float]:
    """The definitions, threshold by threshold, on the voxels themselves (no histogram)."""
    positives = lesion.sum()
    precision, recall = [], []
    for tau in THRESHOLDS:
        above = values >= tau
        tp = np.sum(above & lesion)
        fp = np.sum(above & ~lesion)
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / positives)
    vxap = sum(precision[k] * (recall[k] - (recall[k + 1] if k + 1 < len(recall) else 0.0)) for k in range(101))
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]
    best = int(np.argmax(f1))
    return {
        "vxap": vxap,
        "max_f1": f1[best],
        "precision_at_max_f1": precision[best],
        "recall_at_max_f1": recall[best],
        "threshold_at_max_f1": THRESHOLDS[best],
    }


def _se3d_vxap(values: np.ndarray, lesion: np.ndarray) -> float:
    """VxAP as SE3D's evaluation code computes it (histograms over the edges 0, 0.01, …, 0.99, 1, 2, 3,
    cumulated from the top, precision · Δrecall), written out here independently."""
    edges = np.append(np.arange(0, 1, 0.01), [1.0, 2.0, 3.0])
    tp = np.histogram(values[lesion], bins=edges)[0][::-1].cumsum()
    fp = np.histogram(values[~lesion], bins=edges)[0][::-1].cumsum()
    with np.errstate(invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / lesion.sum()
    counted = (tp + fp) != 0
    return float((precision[1:] * np.diff(recall))[counted[1:]].sum())


def _check(found, expected: dict[str, float]) -> None:
    for name, value in expected.items():
        assert getattr(found, name) == pytest.approx(value, abs=1e-6), name


@pytest.fixture
def lesion() -> torch.Tensor:
    mask = torch.zeros(12, 10, 8, dtype=torch.bool)
    mask[3:7, 2:6, 2:5] = True
    return mask


def test_a_perfect_map_scores_one_and_an_inverted_one_the_prevalence(lesion) -> None:
    prevalence = float(lesion.double().mean())
    perfect = voxel_precision_recall(lesion.float(), lesion)
    assert (perfect.vxap, perfect.max_f1, perfect.precision_at_max_f1, perfect.recall_at_max_f1) == (1, 1, 1, 1)
    inverted = voxel_precision_recall(1 - lesion.float(), lesion)
    assert inverted.vxap == pytest.approx(prevalence, abs=1e-12)  # only τ = 0 finds a lesion voxel
    assert inverted.max_f1 == pytest.approx(2 * prevalence / (1 + prevalence), abs=1e-12)
    assert inverted.threshold_at_max_f1 == 0 and inverted.recall_at_max_f1 == 1
    for cam in (lesion.float(), 1 - lesion.float()):
        _check(voxel_precision_recall(cam, lesion), _direct(_normalised(cam.numpy()), lesion.numpy().ravel()))


@pytest.mark.parametrize("seed", range(5))
def test_random_maps_equal_the_direct_computation_and_se3d_code(lesion, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    cam = torch.rand(lesion.shape, generator=g) + 0.5 * lesion * torch.rand(1, generator=g) - 0.2
    values, truth = _normalised(cam.numpy()), lesion.numpy().ravel()
    found = voxel_precision_recall(cam, lesion)
    _check(found, _direct(values, truth))
    assert found.vxap == pytest.approx(_se3d_vxap(values, truth), abs=1e-9)
    h = voxel_histograms(cam, lesion)[0]
    assert h.lesion.sum() == truth.sum() and h.background.sum() == (~truth).sum()
    assert h.lesion.dtype == np.int64 and h.lesion.shape == (101,)


def test_threshold_convention_is_at_or_above_each_lower_edge(lesion) -> None:
    """Values exactly on a threshold count at it: 0.5 and 0.25 are exact in float32 and float64."""
    cam = torch.zeros(lesion.shape)
    cam[0, 0, 0] = 1.0  # the maximum: the last bin (value 1)
    cam[lesion] = 0.5
    cam[0, 0, 1] = 0.25
    h = voxel_histograms(cam, lesion)[0]
    assert h.lesion[50] == lesion.sum() and h.background[25] == 1 and h.background[100] == 1
    assert h.background[0] == (~lesion).sum() - 2
    found = voxel_precision_recall(cam, lesion)
    assert found.threshold_at_max_f1 == 0.26  # the lowest threshold above the 0.25 voxel (the maximum stays)
    _check(found, _direct(_normalised(cam.numpy()), lesion.numpy().ravel()))


def test_values_next_to_every_threshold_fall_on_the_right_side() -> None:
    """float32 k/100 lies a hair above or below the float64 threshold k/100: each is binned as ``≥`` says."""
    cam = torch.cat([torch.arange(101) / 100, torch.arange(101) / 100 + 1e-7, torch.arange(101) / 100 - 1e-7])
    cam = cam.clamp(0, 1).float()
    mask = torch.zeros_like(cam, dtype=torch.bool)
    mask[::3] = True
    values = _normalised(cam.numpy())
    h = voxel_histograms(cam, mask)[0]
    above = [int(np.sum(values >= tau)) for tau in THRESHOLDS] + [0]  # voxels at or above each threshold
    direct = [above[k] - above[k + 1] for k in range(101)]
    assert (h.lesion + h.background).tolist() == direct
    _check(voxel_precision_recall(cam, mask), _direct(values, mask.numpy()))


def test_a_constant_map_has_every_voxel_at_the_lowest_threshold(lesion) -> None:
    h = voxel_histograms(torch.full(lesion.shape, 3.0), lesion)[0]
    assert h.lesion[0] == lesion.sum() and h.background[0] == (~lesion).sum() and h.lesion[1:].sum() == 0
    p = float(lesion.double().mean())
    found = precision_recall(h)
    assert found.vxap == pytest.approx(p) and found.max_f1 == pytest.approx(2 * p / (1 + p))
    assert found.threshold_at_max_f1 == 0


def test_pooled_and_mean_of_cases_differ_and_pooling_is_the_voxels_together() -> None:
    """Case A: a big lesion, a sharp map; case B: a small lesion its map misses. Pooled MaxF1 counts voxels
    (A dominates), the mean of per-case MaxF1 counts cases."""
    a_mask = torch.zeros(20, 20, dtype=torch.bool)
    a_mask[2:14, 2:14] = True
    b_mask = torch.zeros(20, 20, dtype=torch.bool)
    b_mask[15:17, 15:17] = True
    g = torch.Generator().manual_seed(3)
    a = a_mask.float() * 0.8 + 0.2 * torch.rand(20, 20, generator=g)
    b = torch.rand(20, 20, generator=g) * (~b_mask)
    per_case = [voxel_histograms(cam, mask)[0] for cam, mask in ((a, a_mask), (b, b_mask))]
    pooled = precision_recall(sum(per_case))
    mean_of_cases = np.mean([precision_recall(h).max_f1 for h in per_case])
    assert pooled.max_f1 > mean_of_cases + 0.2
    values = np.concatenate([_normalised(a.numpy()), _normalised(b.numpy())])
    truth = np.concatenate([a_mask.numpy().ravel(), b_mask.numpy().ravel()])
    _check(pooled, _direct(values, truth))
    # a batch is pooled the same way: each map normalised on its own
    batch = voxel_precision_recall(torch.stack([a, b])[:, None], torch.stack([a_mask, b_mask]))
    assert batch.vxap == pytest.approx(pooled.vxap) and batch.max_f1 == pytest.approx(pooled.max_f1)


def test_on_a_ct_phantom_with_its_lesions_and_lungs() -> None:
    from scipy import ndimage

    phantom = chest_ct(4, covid=True, shape=(64, 64, 24))
    lesions = phantom.mask > 0
    assert lesions.any()
    rng = np.random.default_rng(0)
    cam = ndimage.gaussian_filter(lesions.astype(np.float32), 3) + 0.05 * rng.random(lesions.shape)
    found = voxel_precision_recall(torch.from_numpy(cam), torch.from_numpy(lesions))
    _check(found, _direct(_normalised(cam), lesions.ravel()))
    # within the lungs: the lung voxels only, normalised among themselves
    lungs = phantom.lungs
    inside = voxel_precision_recall(cam, lesions, region=lungs)
    _check(inside, _direct(_normalised(cam[lungs]), lesions[lungs]))
    assert inside.vxap > 0.5


def test_histograms_add_and_refuse_what_they_cannot_count(lesion) -> None:
    one = voxel_histograms(torch.rand(lesion.shape), lesion)[0]
    two = one + one
    assert np.array_equal(two.lesion, 2 * one.lesion) and np.array_equal(sum([one, one, one]).lesion, 3 * one.lesion)
    assert voxel_histograms(torch.rand(2, 1, *lesion.shape), lesion)[1].lesion.sum() == lesion.sum()
    with pytest.raises(VolcamError, match="bins"):
        one + voxel_histograms(torch.rand(lesion.shape), lesion, bins=10)[0]
    with pytest.raises(VolcamError, match="no lesion voxel"):
        precision_recall(voxel_histograms(torch.rand(lesion.shape), torch.zeros_like(lesion))[0])
    bad = torch.rand(lesion.shape)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(VolcamError, match="not finite"):
        voxel_histograms(bad, lesion)
    with pytest.raises(VolcamError, match="grid"):
        voxel_histograms(torch.rand(4, 4, 4), lesion)
    with pytest.raises(VolcamError, match="region"):
        voxel_histograms(torch.rand(lesion.shape), lesion, region=torch.zeros_like(lesion))
    with pytest.raises(VolcamError):
        VoxelHistograms(np.array([1, -1]), np.array([0, 0]))
