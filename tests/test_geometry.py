"""Upsampling to the input grid and normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from volcam.maps.geometry import like_input, normalize, upsample


@pytest.mark.parametrize(
    ("low", "size", "mode"),
    [((2, 1, 5), (20,), "linear"), ((2, 1, 4, 5), (16, 20), "bilinear"), ((2, 1, 2, 3, 4), (8, 12, 16), "trilinear")],
)
def test_upsample_is_linear_with_centres_aligned(low, size, mode):
    m = torch.rand(*low)
    up = upsample(m, size)
    assert up.shape == (*low[:2], *size)
    assert torch.equal(up, F.interpolate(m, size=size, mode=mode, align_corners=False))


def test_upsample_keeps_a_map_already_on_the_grid():
    m = torch.rand(1, 1, 4, 4, 4)
    assert upsample(m, (4, 4, 4)) is m


def test_normalize_per_sample_to_exact_unit_range():
    m = torch.stack([torch.rand(1, 3, 3, 3) * 1e-6 + 5, torch.rand(1, 3, 3, 3) * 100])
    out = normalize(m)
    assert torch.equal(out.flatten(1).amin(1), torch.zeros(2))
    assert torch.equal(out.flatten(1).amax(1), torch.ones(2))


def test_normalize_keeps_constant_and_zero_maps_zero():
    out = normalize(torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 3.0)]))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_like_input_passes_plain_tensors_through():
    cam = torch.rand(1, 1, 2, 2, 2)
    assert like_input(cam, torch.rand(1, 1, 2, 2, 2)) is cam
