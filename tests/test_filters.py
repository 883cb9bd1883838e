"""Spacing-aware Gaussian filtering (σ in mm) and the rank Gaussian filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from volcam.maps.filters import gaussian_filter_mm, rank_gaussian_filter, sigma_in_voxels


def voxel_gaussian(sigma: float, radius: int, truncate: float = 4.0) -> torch.Tensor:
    """The analytic Gaussian integrated over each voxel [r - 1/2, r + 1/2], r = -radius..radius, cut
    at ``truncate`` σ (rounded to whole voxels) and normalised to sum 1."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    cdf = lambda x: 0.5 * (1 + torch.erf(x / (sigma * math.sqrt(2))))  # noqa: E731
    k = torch.where(r.abs() <= round(truncate * sigma), cdf(r + 0.5) - cdf(r - 0.5), 0.0)
    return k / k.sum()


def impulse(shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.zeros(1, 1, *shape, dtype=torch.float64)
    x[(0, 0, *[s // 2 for s in shape])] = 1.0
    return x


def profiles(y: torch.Tensor) -> list[torch.Tensor]:
    """The 1D profiles of ``y`` (1, 1, *s) through its centre along each axis, each summing to 1."""
    c = [s // 2 for s in y.shape[2:]]
    out = []
    for axis in range(y.ndim - 2):
        index = [0, 0, *c]
        index[2 + axis] = slice(None)
        p = y[tuple(index)]
        out.append(p / p.sum())
    return out


def test_sigma_in_mm_on_an_anisotropic_grid_smooths_equally_in_voxels():
    """σ = (2, 1, 1) mm on a (2, 1, 1) mm grid is one voxel on every axis: an impulse spreads into
    the same Gaussian along each axis, and that Gaussian is the analytic one."""
    y = gaussian_filter_mm(impulse((17, 17, 17)), sigma_mm=(2.0, 1.0, 1.0), spacing=(2.0, 1.0, 1.0))
    expected = voxel_gaussian(1.0, 8)
    for p in profiles(y):
        torch.testing.assert_close(p, expected, atol=1e-6, rtol=0)
    # separable and mass-preserving: the 3D response is the outer product of the 1D kernels
    k = expected
    torch.testing.assert_close(y[0, 0], k[:, None, None] * k[None, :, None] * k[None, None, :], atol=1e-7, rtol=0)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_sigma_in_mm_on_an_isotropic_grid_is_wider_where_sigma_is():
    y = gaussian_filter_mm(impulse((25, 17, 17)), sigma_mm=(2.0, 1.0, 1.0), spacing=1.0)
    p0, p1, p2 = profiles(y)
    r0, r1 = torch.arange(-12, 13, dtype=torch.float64), torch.arange(-8, 9, dtype=torch.float64)
    # variance of a voxel-integrated Gaussian: σ² + 1/12 (the box of one voxel), less a little for the 4σ cut
    assert (p0 * r0**2).sum().item() == pytest.approx(4 + 1 / 12, rel=2e-3)
    assert (p1 * r1**2).sum().item() == pytest.approx(1 + 1 / 12, rel=2e-3)
    torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(p0, voxel_gaussian(2.0, 12), atol=1e-6, rtol=0)


def test_a_time_axis_takes_seconds():
    """A clip (T, H, W) at 0.2 s per frame and 1 mm pixels: σ = (0.4 s, 0, 0) smooths 2 frames, not space."""
    y = gaussian_filter_mm(impulse((21, 5, 5)), sigma_mm=(0.4, 0.0, 0.0), spacing=(0.2, 1.0, 1.0))
    torch.testing.assert_close(profiles(y)[0], voxel_gaussian(2.0, 10), atol=1e-6, rtol=0)
    torch.testing.assert_close(y.sum(dim=2), impulse((21, 5, 5)).sum(dim=2))  # nothing moved within a frame


def test_sigma_zero_is_identity_and_a_zero_axis_is_left_alone():
    t = torch.randn(2, 3, 5, 6, 7)
    assert gaussian_filter_mm(t, 0.0, (1.0, 2.0, 3.0)) is t
    ramp = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 1, 6, 5).contiguous()  # varies along axis 0 only
    torch.testing.assert_close(gaussian_filter_mm(ramp, (0.0, 3.0), 1.0), ramp)


@pytest.mark.parametrize("spatial", [(9,), (7, 8), (5, 6, 7)])
def test_dimension_agnostic_batched_on_device_and_dtype(spatial):
    t = torch.randn(3, 4, *spatial, dtype=torch.float64)
    y = gaussian_filter_mm(t, 1.5, 1.0)
    assert y.shape == t.shape and y.dtype == t.dtype and y.device == t.device
    one = gaussian_filter_mm(t[1:2, 2:3], 1.5, 1.0)  # each sample and channel on its own
    torch.testing.assert_close(y[1:2, 2:3], one)
    assert y.std() < t.std()


def test_borders_replicate_so_a_constant_stays_constant_on_a_tiny_map():
    """Feature maps can be 2-3 voxels a side; zero padding would pull them towards 0."""
    t = torch.full((1, 2, 2, 3, 3), 5.0)
    torch.testing.assert_close(gaussian_filter_mm(t, (20.0, 20.0, 20.0), (16.0, 16.0, 16.0)), t)


def test_bad_widths_and_spacings_are_errors():
    t = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="3 values for 2 spatial axes"):
        gaussian_filter_mm(t, (1.0, 1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="sigma_mm"):
        gaussian_filter_mm(t, -1.0, 1.0)
    with pytest.raises(ValueError, match="spacing"):
        gaussian_filter_mm(t, 1.0, (1.0, 0.0))
    assert sigma_in_voxels(np.float32(4.0), (2.0, 0.5), 2) == (2.0, 8.0)


# --- rank Gaussian filter -------------------------------------------------------------------------


def rank_filter_reference(m: np.ndarray) -> np.ndarray:
    """A voxel-by-voxel reading of METHODS.md (mirror padding as in the Token Activation Map code)."""
    padded = np.pad(m, 1, mode="reflect")
    out = np.zeros_like(m)
    n = 3**m.ndim
    offsets = np.arange(n) - n // 2
    for idx in np.ndindex(m.shape):
        window = np.sort(padded[tuple(slice(i, i + 3) for i in idx)].ravel())
        mean = window.mean()
        if mean > 0:
            w = np.exp(-(offsets**2) / (2 * (window.std() / mean) ** 2))
            out[idx] = (window * w / w.sum()).sum()
    return out


@pytest.mark.parametrize("shape", [(2, 1, 6, 7), (2, 1, 4, 5, 3)])
def test_rank_filter_matches_a_voxel_by_voxel_reference_in_2d_and_3d_and_batches(shape):
    m = torch.rand(shape, dtype=torch.float64) - 0.2
    out = rank_gaussian_filter(m)
    assert out.shape == m.shape
    for b in range(shape[0]):
        np.testing.assert_allclose(out[b, 0].numpy(), rank_filter_reference(m[b, 0].numpy()), atol=1e-12)


def test_rank_filter_constant_window_gives_the_constant():
    torch.testing.assert_close(rank_gaussian_filter(torch.full((1, 1, 4, 5), 3.0)), torch.full((1, 1, 4, 5), 3.0))
    torch.testing.assert_close(rank_gaussian_filter(torch.full((1, 1, 3, 3, 3), 0.7)), torch.full((1, 1, 3, 3, 3), 0.7))


def test_rank_filter_smooth_window_acts_like_a_median():
    """Nine values near 10 (std/mean ≈ 0.015): the weight sits on the middle rank, the median."""
    window = torch.tensor([10.0, 10.3, 10.0, 10.3, 10.0, 10.3, 10.0, 10.3, 10.0]).view(1, 1, 3, 3)
    centre = rank_gaussian_filter(window)[0, 0, 1, 1]  # the centre's window is the whole map
    assert centre.item() == pytest.approx(10.0, abs=1e-6)  # the median; the mean is 10.13


def test_rank_filter_noisy_window_acts_like_a_mean():
    """Values spread far around a small positive mean (std/mean ≈ 60): nearly equal weights, the mean."""
    window = torch.tensor([-3.0, -3.0, -3.0, -3.0, -3.0, 3.5, 4.0, 4.0, 3.95]).view(1, 1, 3, 3)
    centre = rank_gaussian_filter(window)[0, 0, 1, 1]
    assert centre.item() == pytest.approx(0.05, abs=0.01)  # the mean; the median is -3


def test_rank_filter_is_zero_where_the_window_mean_is_not_positive():
    assert (rank_gaussian_filter(-torch.rand(1, 1, 4, 4, 4)) == 0).all()
    zero_mean = torch.tensor([-1.0, 1.0, -1.0, 1.0, 0.0, 1.0, -1.0, 1.0, -1.0]).view(1, 1, 3, 3)
    assert rank_gaussian_filter(zero_mean)[0, 0, 1, 1] == 0
    assert torch.isfinite(rank_gaussian_filter(torch.zeros(1, 1, 3, 3))).all()


def test_rank_filter_handles_an_axis_of_length_one_and_rejects_other_shapes():
    out = rank_gaussian_filter(torch.rand(1, 1, 1, 5, 5))  # one slice: replicate, not reflect
    assert out.shape == (1, 1, 1, 5, 5) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        rank_gaussian_filter(torch.rand(1, 2, 5, 5))
