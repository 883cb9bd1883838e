"""volcam.viz.display: scans in the radiological display order, whatever their voxel order on disk."""

from __future__ import annotations

import numpy as np
import pytest

import volcam
from volcam import sample_data
from volcam.io.image import LPS_TO_RAS, make_volume
from volcam.maps.windowing import window_bounds
from volcam.viz.display import DisplayGeometry, display_geometry, display_limits


@pytest.fixture(scope="module")
def ct():
    return volcam.load(sample_data.file(sample_data.CT_NIFTI))


def _reordered(scan, perm, flips):
    """The same voxels stored in another order: axes permuted by ``perm``, then ``flips`` reversed."""
    data = scan[0].numpy()
    affine = scan.affine.numpy().copy()
    data = np.transpose(data, perm)
    affine[:3, :3] = affine[:3, :3][:, perm]
    for axis in flips:
        n = data.shape[axis]
        affine[:3, 3] += affine[:3, axis] * (n - 1)  # the last voxel becomes the first
        affine[:3, axis] *= -1
        data = np.flip(data, axis)
    return make_volume(np.ascontiguousarray(data)[None], affine, path="reordered", modality="CT")


def test_axial_lps_volume_is_shown_superior_posterior_left(ct):
    g = display_geometry(ct)
    assert g.order == (2, 1, 0) and g.flip == (False, False, False) and not g.oblique
    np.testing.assert_allclose(g.scale, (2.5, 0.7, 0.7), rtol=1e-6)
    lps = LPS_TO_RAS @ ct.affine.numpy()
    np.testing.assert_allclose(g.translate, lps[[2, 1, 0], 3], rtol=1e-6)
    shown = g.to_display(ct[0].numpy())
    assert shown.shape == (48, 128, 128)
    np.testing.assert_array_equal(g.to_source(shown), ct[0].numpy())


@pytest.mark.parametrize(("perm", "flips"), [((0, 1, 2), (0, 1)), ((2, 0, 1), (1,)), ((1, 2, 0), (0, 2))])
def test_any_voxel_order_gives_the_same_picture_and_origin(ct, perm, flips):
    reference = display_geometry(ct)
    other = _reordered(ct, perm, flips)
    g = display_geometry(other)
    np.testing.assert_array_equal(g.to_display(other[0].numpy()), reference.to_display(ct[0].numpy()))
    np.testing.assert_allclose(g.scale, reference.scale, rtol=1e-6)
    np.testing.assert_allclose(g.translate, reference.translate, atol=1e-4)
    np.testing.assert_array_equal(g.to_source(g.to_display(other[0].numpy())), other[0].numpy())


def test_rgb_last_axis_and_metadata_round_trip(ct):
    g = display_geometry(_reordered(ct, (0, 1, 2), (0,)))
    rgb = np.random.default_rng(0).random((*g.shape, 3))
    np.testing.assert_array_equal(g.to_source(g.to_display(rgb)), rgb)
    assert DisplayGeometry.from_metadata(g.as_metadata()) == g


def test_oblique_volume_is_flagged_and_shown_on_its_nearest_axes(ct):
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = ct.affine.numpy().copy()
    affine[:3, :3] = rotation @ affine[:3, :3]
    g = display_geometry(make_volume(ct.numpy(), affine, path="oblique", modality="CT"))
    assert g.oblique and g.order == (2, 1, 0)


def test_clip_is_shown_as_it_is():
    clip = volcam.load(sample_data.file(sample_data.LUS_DICOM))
    g = display_geometry(clip)
    assert g.axes == "tyx" and g.order == (0, 1, 2) and g.translate == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(g.scale, (0.1, 0.3, 0.3))


def test_display_limits_lung_window_for_ct_percentiles_otherwise():
    values = np.arange(1000, dtype=float)
    assert display_limits(values, "CT") == window_bounds("lung")
    low, high = display_limits(values, "US")
    assert low == pytest.approx(9.99) and high == pytest.approx(989.01)
    assert display_limits(np.zeros(5), "MR") == (0.0, 1.0)


def test_the_grey_range_of_a_long_clip_is_read_from_a_few_frames_and_matches_the_whole():
    """A 300-frame cine's percentiles from 32 evenly spaced frames (at a tenth of the cost) match the whole."""
    from volcam.maps.colour import GREY_SAMPLE_SLICES, percentile_limits

    rng = np.random.default_rng(0)
    frames = rng.gamma(2.0, 30.0, size=(300, 60, 80)).clip(0, 255).astype(np.uint8)  # speckle-like
    frames[::7] //= 2  # darker frames every now and then
    whole = np.percentile(frames, [1.0, 99.0])
    sampled = percentile_limits(frames, axis=0)
    assert GREY_SAMPLE_SLICES < 300
    np.testing.assert_allclose(sampled, whole, atol=3.0)  # 8-bit levels
    assert percentile_limits(frames[:10], axis=0) == tuple(float(v) for v in np.percentile(frames[:10], [1.0, 99.0]))
