"""Pointing game (tolerance in mm on anisotropic grids), energy pointing, IoU/Dice, per-lesion hits."""

from __future__ import annotations

import pytest
import torch

from volcam import VolcamError
from volcam.metrics import energy_pointing_game, lesion_hits, overlap, pointing_game


def _peak(shape: tuple[int, ...], at: tuple[int, ...]) -> torch.Tensor:
    m = torch.rand(shape) * 0.5
    m[at] = 1.0
    return m


@pytest.fixture
def lesion() -> torch.Tensor:
    mask = torch.zeros(10, 12, 14, dtype=torch.bool)
    mask[4:6, 5:8, 6:9] = True
    return mask


def test_pointing_game_inside_is_one_outside_is_zero(lesion) -> None:
    inside = _peak(lesion.shape, (5, 6, 7))
    outside = _peak(lesion.shape, (0, 0, 0))
    batch = torch.stack([inside, outside])[:, None]  # (2, 1, D, H, W)
    res = pointing_game(batch, lesion)
    assert res.hits.tolist() == [True, False]
    assert res.points.tolist() == [[5, 6, 7], [0, 0, 0]]
    assert res.distance_mm[0] == 0 and res.distance_mm[1] > 0
    assert pointing_game(inside, lesion).accuracy == 1.0
    assert pointing_game(outside, lesion).accuracy == 0.0


def test_pointing_tolerance_is_in_mm_on_anisotropic_spacing(lesion) -> None:
    spacing = (2.5, 0.7, 0.7)  # slices 2.5 mm apart, 0.7 mm pixels
    two_slices_off = _peak(lesion.shape, (7, 6, 7))  # 2 voxels past the lesion along axis 0: 5.0 mm
    two_pixels_off = _peak(lesion.shape, (5, 9, 7))  # 2 voxels past it along axis 1: 1.4 mm
    maps = torch.stack([two_slices_off, two_pixels_off])[:, None]
    res = pointing_game(maps, lesion, tolerance_mm=2.0, spacing=spacing)
    assert res.distance_mm.tolist() == pytest.approx([5.0, 1.4])
    assert res.hits.tolist() == [False, True]
    assert pointing_game(maps, lesion, tolerance_mm=5.0, spacing=spacing).hits.tolist() == [True, True]
    assert pointing_game(maps, lesion, tolerance_mm=1.0, spacing=spacing).hits.tolist() == [False, False]
    # the spacing comes from a MetaTensor's affine when it carries one
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    meta = MetaTensor(maps, affine=affine)
    assert pointing_game(meta, lesion, tolerance_mm=2.0).hits.tolist() == [False, True]


def test_pointing_game_2d_and_bad_masks() -> None:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    assert pointing_game(_peak((8, 8), (3, 3)), mask).accuracy == 1.0
    with pytest.raises(VolcamError, match="grid"):
        pointing_game(_peak((8, 8), (3, 3)), torch.ones(8, 9))
    with pytest.raises(VolcamError, match="empty"):
        pointing_game(_peak((8, 8), (3, 3)), torch.zeros(8, 8))
    with pytest.raises(VolcamError):
        pointing_game(_peak((8, 8), (3, 3)), mask, tolerance_mm=-1)


def test_energy_pointing_game_and_its_random_baseline(lesion) -> None:
    uniform = torch.ones(lesion.shape)
    res = energy_pointing_game(uniform, lesion)
    assert res.energy.item() == pytest.approx(res.baseline.item())
    assert res.baseline.item() == pytest.approx(lesion.float().mean().item())
    assert energy_pointing_game(lesion.float(), lesion).energy.item() == pytest.approx(1.0)
    # restricted to a lung region: the baseline is the lesion's share of the lung
    lung = torch.zeros_like(lesion)
    lung[2:8] = True
    within = energy_pointing_game(uniform, lesion, region=lung)
    assert within.baseline.item() == pytest.approx(lesion.sum().item() / lung.sum().item())
    assert within.energy.item() == pytest.approx(within.baseline.item())
    with pytest.raises(VolcamError):
        energy_pointing_game(-uniform, lesion)


def test_iou_and_dice_over_thresholds(lesion) -> None:
    exact = overlap(lesion.float(), lesion)
    assert torch.allclose(exact.iou, torch.ones(1, 9, dtype=torch.float64))
    assert exact.matched_dice.item() == pytest.approx(1.0)
    # a map twice the lesion's size around it: IoU 1/2, Dice 2/3 at every threshold
    bigger = torch.zeros(lesion.shape)
    bigger[4:8, 5:8, 6:9] = 1.0
    half = overlap(bigger, lesion, thresholds=(0.5,))
    assert half.iou.item() == pytest.approx(0.5) and half.dice.item() == pytest.approx(2 / 3)
    # a ramp: the lowest thresholds take the whole volume
    ramp = overlap(torch.linspace(0, 1, lesion.numel()).view(lesion.shape), lesion, thresholds=(0.0, 1.0))
    assert ramp.iou[0, 0].item() == pytest.approx(lesion.float().mean().item())
    assert overlap(torch.zeros(lesion.shape), lesion).iou.sum() == 0


def test_per_lesion_hit_rate() -> None:
    mask = torch.zeros(12, 12, 12, dtype=torch.bool)
    mask[1:3, 1:3, 1:3] = True  # lesion 1
    mask[8:11, 8:11, 8:11] = True  # lesion 2
    one = torch.zeros(12, 12, 12)
    one[9, 9, 9] = 1.0
    res = lesion_hits(one, mask, spacing=(2.0, 1.0, 1.0))
    assert res.hits[0].tolist() == [False, True]
    assert res.hit_rate == 0.5
    assert res.volumes_mm3[0].tolist() == [16.0, 54.0]
    both = one.clone()
    both[2, 2, 2] = 0.8
    assert lesion_hits(both, mask).hit_rate == 1.0
    assert lesion_hits(both, mask, fraction=0.9).hit_rate == 0.5
    # a peak one voxel outside lesion 1 counts within a tolerance of that voxel's size
    near = one.clone()
    near[3, 2, 2] = 0.8
    assert lesion_hits(near, mask, spacing=(2.0, 1.0, 1.0)).hit_rate == 0.5
    assert lesion_hits(near, mask, spacing=(2.0, 1.0, 1.0), tolerance_mm=2.0).hit_rate == 1.0
