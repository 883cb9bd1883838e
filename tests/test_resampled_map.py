"""A map made slab by slab on the scan's grid equals the whole map, and the writers that read it slab by
slab write the same files as from the whole map."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import volcam
from volcam import sample_data
from volcam.io.write import write_nifti
from volcam.maps.geometry import resample_axis_aligned
from volcam.maps.resampled import ResampledMap, is_resampled
from volcam.workflows.explain_folder import explain_to_folder


def _affine(spacing, origin, flips=(1, 1, 1), order=(0, 1, 2)) -> torch.Tensor:
    a = torch.zeros(4, 4, dtype=torch.float64)
    for i, (axis, s, f) in enumerate(zip(order, spacing, flips, strict=True)):
        a[axis, i] = s * f
    a[:3, 3] = torch.tensor(origin, dtype=torch.float64)
    a[3, 3] = 1
    return a


@pytest.fixture
def grids():
    g = torch.Generator().manual_seed(3)
    source = torch.rand(1, 9, 11, 7, generator=g)
    src = _affine((2.4, 2.1, 3.0), (-10.0, 4.0, 2.5))
    # the scan: flipped on one axis, axes permuted, finer and offset
    dst = _affine((0.7, 0.8, 1.25), (8.0, -3.0, 1.0), flips=(-1, 1, 1), order=(1, 0, 2))
    return source, src, dst, (31, 23, 17)


def test_a_region_is_that_box_of_the_whole(grids) -> None:
    source, src, dst, shape = grids
    whole = resample_axis_aligned(source, src, dst, shape)
    for box in [(slice(0, 31), slice(0, 23), slice(5, 6)), (slice(3, 17), slice(20, 23), slice(0, 17)),
                (slice(30, 31), slice(0, 1), slice(16, 17))]:  # fmt: skip
        part = resample_axis_aligned(source, src, dst, shape, region=box)
        torch.testing.assert_close(part, whole[(slice(None), *box)], rtol=0, atol=1e-6)  # float32 rounding


def test_resampled_map_reads_like_the_array_it_stands_for(grids) -> None:
    source, src, dst, shape = grids
    made = ResampledMap.of(source, src, dst, shape)
    assert made is not None and is_resampled(made) and made.shape == shape and made.ndim == 3
    whole = resample_axis_aligned(source, src, dst, shape)[0].clamp(0, 1).numpy()
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # noqa: E731
    close(made[...], whole)
    close(made[4], whole[4])
    close(made[..., -1], whole[..., -1])
    close(made[2:5, :, 3], whole[2:5, :, 3])
    close(np.asarray(made), whole)
    assert made[4].shape == whole[4].shape and made[2:5, :, 3].shape == (3, 23)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        np.testing.assert_allclose(made.mass(axis), whole.astype(np.float64).sum(others), rtol=1e-6)
    with pytest.raises(IndexError):
        made[::2]
    with pytest.raises(IndexError):
        made[31]


def test_levels_are_the_map_rounded_as_a_writer_stores_it(grids) -> None:
    """``levels(box)`` is ``round(map · 255)`` (half up) of that box: the NIfTI writer's quantisation,
    made in the resampling; a box larger than the source it reads comes out with its first axis fastest."""
    from volcam.io.nifti import _quantized

    source, src, dst, shape = grids
    made = ResampledMap.of(source, src, dst, shape)
    assert made is not None
    for box in [(slice(0, 31), slice(0, 23), slice(0, 17)), (slice(3, 17), slice(20, 23), slice(4, 9))]:
        levels = made.levels(box)
        expected = _quantized(made[box])
        assert levels.dtype == np.uint8 and levels.shape == expected.shape
        # the same rounding, up to the float32 rounding of the interpolation at exact halves
        assert np.abs(levels.astype(int) - expected).max() <= 1 and (levels != expected).mean() < 1e-3
    whole = made.levels(tuple(slice(0, n) for n in shape))
    assert whole.flags.f_contiguous  # NIfTI's order: a writer stores it without a copy
    assert ResampledMap.of(torch.ones(1, 9, 11, 7), src, dst, shape).levels(box).min() == 255  # the top exactly
    assert ResampledMap.of(torch.zeros(1, 9, 11, 7), src, dst, shape).levels(box).max() == 0
    with pytest.raises(ValueError):
        made.levels(box, top=256)


def test_oblique_grids_are_not_made_slab_by_slab(grids) -> None:
    source, src, _, shape = grids
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = torch.eye(4, dtype=torch.float64)
    rotated[:2, :2] = torch.tensor([[c, -s], [s, c]])
    assert ResampledMap.of(source, src, rotated, shape) is None


def test_a_ct_map_goes_to_nifti_slab_by_slab_as_from_the_whole_map(tmp_path) -> None:
    ct_dicom_scan = volcam.load(sample_data.file(sample_data.CT_DICOM))
    explained = volcam.load_model(sample_data.file(sample_data.CT_CARD)).explain(ct_dicom_scan, "gradcam")
    assert is_resampled(explained.placed)  # nothing full-size made yet
    assert "map" not in vars(explained)
    write_nifti(explained, tmp_path / "slabs.nii.gz", like=ct_dicom_scan)
    assert "map" not in vars(explained)  # written without the full-size map
    write_nifti(explained.map, tmp_path / "whole.nii.gz", like=ct_dicom_scan)
    slabs, whole = nib.load(tmp_path / "slabs.nii.gz"), nib.load(tmp_path / "whole.nii.gz")
    np.testing.assert_array_equal(slabs.affine, whole.affine)
    assert slabs.get_data_dtype() == whole.get_data_dtype() == np.uint8
    stored_slabs, stored_whole = np.asarray(slabs.dataobj.get_unscaled()), np.asarray(whole.dataobj.get_unscaled())
    assert np.abs(stored_slabs.astype(int) - stored_whole).max() <= 1  # a rounding boundary at most
    assert (stored_slabs == stored_whole).mean() > 0.999
    np.testing.assert_allclose(slabs.get_fdata(), explained.map[0].numpy(), atol=0.5 / 255 + 1e-6)


def test_a_clip_is_explained_to_a_folder_without_its_full_size_map(tmp_path) -> None:
    clip = volcam.load(sample_data.file(sample_data.LUS_DICOM))
    model = volcam.load_model(sample_data.file(sample_data.LUS_CARD))
    explained = model.explain(clip, "gradcam")
    assert is_resampled(explained.placed)
    summary = explain_to_folder(clip, model, tmp_path / "out", methods=["gradcam"])
    assert (tmp_path / "out" / "gradcam.nii.gz").exists() and summary["explanations"][0]["files"]["png"]
    read = nib.load(tmp_path / "out" / "gradcam.nii.gz")
    np.testing.assert_allclose(read.get_fdata(), explained.map[0].numpy(), atol=0.5 / 255 + 1e-6)


def test_interleaved_channels_resample_as_planar_ones() -> None:
    """An RGB clip as decoded ((T, H, W, 3) in memory, seen as (3, T, H, W)) resamples all channels in
    one go, to the same values as the planar copy."""
    raw = torch.randint(0, 255, (5, 60, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    interleaved = raw.permute(3, 0, 1, 2)
    src = _affine((0.033, 0.1, 0.1), (0.0, 0.0, 0.0))
    for dst, shape in ((_affine((0.033, 0.6, 0.7), (0.0, 0.25, 0.3)), (5, 10, 11)),
                       (_affine((0.033, 0.05, 0.04), (0.0, -0.02, 0.0)), (5, 120, 200))):  # fmt: skip
        got = resample_axis_aligned(interleaved, src, dst, shape)
        want = resample_axis_aligned(interleaved.contiguous(), src, dst, shape)
        assert got.shape == (3, *shape)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
