"""Scans load in their native dtype where it is exact; maps are written compactly (uint8 / 255).

``volcam.load`` gives int16 HU for a CT stored as integers with RescaleSlope 1 and an integer
RescaleIntercept (no float copy of a clinical CT), float32 when the rescale needs it; a NIfTI keeps
its dtype unless it is scaled. ``save_nifti`` stores a map in [0, 1] as uint8 with scl_slope 1/255.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

import volcam
from io_fixtures import make_series
from volcam.io.nifti import save_nifti


def _hu_of(files: list[Path]) -> np.ndarray:
    """The float path: stored value · RescaleSlope + RescaleIntercept per file, as (x, y, z) float64."""
    slices = []
    for path in files:
        ds = pydicom.dcmread(path)
        slices.append(ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(slices, axis=-1).transpose(1, 0, 2)


def _rewrite(files: list[Path], **changes: object) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def test_ct_series_loads_as_int16_with_the_float_paths_values(tmp_path) -> None:
    _, files = make_series(tmp_path, 5, seed=1)
    ct = volcam.load(tmp_path)
    assert ct.dtype == torch.int16
    # one slice-contiguous array (as the files store it), seen as (C, X, Y, Z) without a copy
    assert ct.stride() == (1, 1, ct.shape[2], ct.shape[1] * ct.shape[2])
    np.testing.assert_array_equal(ct[0].numpy().astype(np.float64), _hu_of(files))


def test_a_non_integer_rescale_slope_loads_as_float32(tmp_path) -> None:
    _, files = make_series(tmp_path, 4, seed=2)
    _rewrite(files, RescaleSlope="0.5", RescaleIntercept="-1024.25")
    ct = volcam.load(tmp_path)
    assert ct.dtype == torch.float32
    np.testing.assert_allclose(ct[0].numpy(), _hu_of(files), rtol=0, atol=1e-3)


def test_a_slice_out_of_int16_range_turns_the_whole_series_float32(tmp_path) -> None:
    """40 slices: the first batch of 32 is already in the volume as int16 when slice 35 does not fit."""
    _, files = make_series(tmp_path, 40, step=1.0, seed=3)
    ds = pydicom.dcmread(files[35])
    pixels = ds.pixel_array.copy()
    pixels[0, 0] = -32768  # stored minimum; with RescaleIntercept -1024 it is -33792 HU: not int16
    ds.PixelData = pixels.tobytes()
    ds.save_as(files[35])
    ct = volcam.load(tmp_path)
    assert ct.dtype == torch.float32
    np.testing.assert_array_equal(ct[0].numpy().astype(np.float64), _hu_of(files))


def test_a_single_ct_slice_and_a_shuffled_series_agree_on_values(tmp_path) -> None:
    _, files = make_series(tmp_path / "series", 3, seed=4)
    series = volcam.load(tmp_path / "series")
    for k, path in enumerate(files):
        one = volcam.load(path)
        assert one.dtype == torch.int16
        assert torch.equal(one[0, :, :, 0], series[0, :, :, k])


def _int16_volume(shape: tuple[int, int, int] = (128, 96, 64)) -> np.ndarray:
    return np.random.default_rng(0).integers(-1024, 3000, shape, dtype=np.int16)


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_an_int16_nifti_loads_as_int16_without_a_float_copy(tmp_path, name) -> None:
    data = _int16_volume()
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), path)
    tracemalloc.start()
    try:
        image = volcam.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.dtype == torch.int16
    np.testing.assert_array_equal(image[0].numpy(), nib.load(path).get_fdata())
    # The file's int16 (decompressed) and the one C-ordered copy; a float32 copy alone is 2× the data.
    assert peak < 2.6 * data.nbytes, peak / data.nbytes


def test_a_scaled_nifti_loads_as_float32_equal_to_nibabel(tmp_path) -> None:
    data = _int16_volume((40, 30, 20))
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_slope_inter(0.5, -3.25)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    loaded = volcam.load(path)
    assert loaded.dtype == torch.float32
    np.testing.assert_array_equal(loaded[0].numpy(), nib.load(path).get_fdata().astype(np.float32))


def test_unsigned_16_bit_nifti_widens_to_int32_exactly(tmp_path) -> None:
    data = np.random.default_rng(1).integers(0, 65535, (20, 10, 5), dtype=np.uint16)
    path = tmp_path / "mr.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    loaded = volcam.load(path)
    assert loaded.dtype == torch.int32
    np.testing.assert_array_equal(loaded[0].numpy(), data)


def _oblique_affine() -> np.ndarray:
    theta = np.deg2rad(12.0)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.7, 1.25])
    affine[:3, 3] = [-120.5, 88.25, -310.0]
    return affine.astype(np.float32).astype(np.float64)  # what a float32 sform holds exactly


def test_a_map_round_trips_within_1_255_and_the_affine_exactly(tmp_path) -> None:
    rng = np.random.default_rng(2)
    cam = np.clip(rng.normal(0.4, 0.25, (256, 256, 100)), 0.0, 1.0).astype(np.float32)
    cam[0, 0, 0], cam[1, 0, 0] = 0.0, 1.0
    affine = _oblique_affine()
    path = tmp_path / "cam.nii.gz"
    save_nifti(cam, affine, path, codes=(1, 2))
    written = nib.load(path)
    assert written.get_data_dtype() == np.uint8
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    np.testing.assert_array_equal(written.affine, affine)
    back = volcam.load(path)
    np.testing.assert_array_equal(back.affine.numpy(), affine)
    values = back[0].numpy()
    assert values.dtype == np.float32
    assert np.abs(values - cam).max() <= 0.5 / 255 + 1e-6
    assert values.min() >= 0.0 and values.max() <= 1.0  # 1/255 rounded down: 255 reads as at most 1


def test_masks_and_integer_scans_are_written_exactly(tmp_path) -> None:
    mask = (np.random.default_rng(3).random((30, 20, 10)) > 0.5).astype(np.float32)
    save_nifti(mask, np.eye(4), tmp_path / "mask.nii.gz")
    back = volcam.load(tmp_path / "mask.nii.gz")
    assert back.dtype == torch.uint8
    np.testing.assert_array_equal(back[0].numpy(), mask)
    hu = _int16_volume((30, 20, 10))
    save_nifti(hu, np.eye(4), tmp_path / "ct.nii.gz")
    back = volcam.load(tmp_path / "ct.nii.gz")
    assert back.dtype == torch.int16
    np.testing.assert_array_equal(back[0].numpy(), hu)
    signed = np.linspace(-1.0, 1.0, 6000, dtype=np.float32).reshape(30, 20, 10)  # not a [0, 1] map
    save_nifti(signed, np.eye(4), tmp_path / "signed.nii.gz")
    assert nib.load(tmp_path / "signed.nii.gz").get_data_dtype() == np.float32
    np.testing.assert_array_equal(volcam.load(tmp_path / "signed.nii.gz")[0].numpy(), signed)


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("isal", [True, False])
def test_a_map_in_many_gzip_members_is_one_standard_file(tmp_path, monkeypatch, layout, isal) -> None:
    """Blocks compressed in parallel (ISA-L, or zlib where python-isal is missing) make one valid
    .nii.gz: a plain gzip stream of the header at offset 352 and the voxels x fastest, which nibabel
    and SimpleITK read to the same values."""
    import builtins
    import gzip

    import SimpleITK as sitk

    from volcam.io import nifti

    if not isal:
        real_import = builtins.__import__

        def no_isal(name, *args, **kwargs):
            if name.startswith("isal"):
                raise ImportError("no isal here")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_isal)
    monkeypatch.setattr(nifti, "_BLOCK_BYTES", 3000)  # many members, of whole slices
    rng = np.random.default_rng(5)
    cam = np.asarray(rng.random((37, 29, 23), dtype=np.float32), order=layout)
    affine = _oblique_affine()
    path = tmp_path / "cam.nii.gz"
    save_nifti(cam, affine, path)
    raw = gzip.decompress(path.read_bytes())  # zlib reads every member as one stream
    expected = np.floor(cam * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    assert len(raw) == 352 + cam.size
    assert np.frombuffer(raw[108:112], "<f4")[0] == 352  # vox_offset as written (nibabel resets it on load)
    assert raw[352:] == expected.tobytes(order="F")
    written = nib.load(path)
    assert written.get_data_dtype() == np.uint8
    back = np.asarray(written.dataobj)
    assert np.abs(back - cam).max() <= 0.5 / 255 + 1e-6
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
    np.testing.assert_allclose(itk, back, atol=1e-6)


@pytest.mark.parametrize("where", [0, -1])
def test_a_map_with_nan_or_infinity_in_any_block_is_stored_as_it_is(tmp_path, monkeypatch, where) -> None:
    from volcam.io import nifti

    monkeypatch.setattr(nifti, "_BLOCK_BYTES", 2000)  # many blocks: the bad voxel in the first or the last
    for bad in (np.nan, np.inf):
        cam = np.random.default_rng(6).random((20, 20, 30), dtype=np.float32)
        cam[3, 4, where] = bad
        save_nifti(cam, np.eye(4), tmp_path / "cam.nii.gz")
        written = nib.load(tmp_path / "cam.nii.gz")
        assert written.get_data_dtype() == np.float32
        np.testing.assert_array_equal(np.asarray(written.dataobj), cam)
