"""volcam.load on nibabel's real NIfTI files, the ITK formats, and NIfTI round trips with the exact affine."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

import volcam
from io_fixtures import dicomdir_tests, nibabel_data
from volcam.errors import FileFormatError, InputError
from volcam.io import write_nifti

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def corners(shape) -> np.ndarray:
    return np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1).T


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")  # MONAI probing for a GPU codec
@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_nifti_equals_monai_loadimage(name: str) -> None:
    from monai.transforms import LoadImage

    path = nibabel_data(name)
    ours = volcam.load(path)
    theirs = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.numpy(), theirs.numpy().astype(np.float32))
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), nib.load(path).affine)
    assert ours.meta["space"] == "RAS"


def test_oblique_flipped_nifti_corners_agree_with_simpleitk() -> None:
    sitk = pytest.importorskip("SimpleITK")
    path = nibabel_data("example4d.nii.gz")  # x flipped (L), rotated about x
    image = volcam.load(path, volume=1)
    assert image.shape == (1, 128, 96, 24)
    reference = sitk.ReadImage(str(path))  # 4D in ITK: (x, y, z, t)
    ours = LPS @ image.affine.numpy()
    for corner in corners(image.shape[1:]):
        expected = reference.TransformIndexToPhysicalPoint([int(c) for c in corner] + [0])[:3]
        np.testing.assert_allclose((ours @ np.append(corner, 1.0))[:3], expected, atol=1e-3)


def test_4d_nifti_where_3d_is_expected_is_one_line() -> None:
    path = nibabel_data("example4d.nii.gz")
    with pytest.raises(FileFormatError, match=r"a 4D NIfTI \(128×96×24×2\).*volume=") as caught:
        volcam.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError, match="out of range"):
        volcam.load(path, volume=2)
    first, second = volcam.load(path, volume=0), volcam.load(path, volume=1)
    expected = np.asarray(nib.load(path).dataobj[..., 1], dtype=np.float32)
    np.testing.assert_array_equal(second[0].numpy(), expected)
    assert not torch.equal(first, second)


def test_gz_that_is_not_nifti(tmp_path) -> None:
    text = tmp_path / "scan.nii.gz"
    text.write_text("not an image")
    wrong = tmp_path / "other.nii.gz"
    wrong.write_bytes(gzip.compress(b"\0" * 1000))
    for path in (text, wrong):
        with pytest.raises(FileFormatError, match="not a readable NIfTI file") as caught:
            volcam.load(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_nifti(tmp_path) -> None:
    path = tmp_path / "cut.nii"
    path.write_bytes(nibabel_data("anatomical.nii").read_bytes()[:5000])
    with pytest.raises(FileFormatError, match="truncated or unreadable"):
        volcam.load(path)


def test_nan_voxels_are_refused(tmp_path) -> None:
    source = nib.load(nibabel_data("anatomical.nii"))
    data = np.asarray(source.dataobj, dtype=np.float32)
    data[3, 4, 5] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, source.affine), path)
    with pytest.raises(FileFormatError, match=r"1 voxel\(s\) are NaN") as caught:
        volcam.load(path)
    assert str(path) in str(caught.value)


def test_oblique_nifti_round_trip_keeps_the_affine_exactly(tmp_path) -> None:
    """load → map → write → reload: the map lands on the same voxels and patient points."""
    source_path = nibabel_data("example4d.nii.gz")
    image = volcam.load(source_path, volume=0)
    cam = (image - image.min()) / (image.max() - image.min())  # a map on the image grid
    out = write_nifti(cam, tmp_path / "cam.nii.gz", like=image)
    written = nib.load(out)
    np.testing.assert_array_equal(written.affine, nib.load(source_path).affine)  # bit for bit (float32 srow)
    assert int(written.header["sform_code"]) == int(nib.load(source_path).header["sform_code"])
    back = volcam.load(out)
    np.testing.assert_array_equal(back.affine.numpy(), image.affine.numpy())
    np.testing.assert_allclose(back.numpy(), cam.numpy(), atol=1 / 255)  # a map is stored as uint8 / 255


def test_dicom_series_to_nifti_keeps_patient_coordinates(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    ct = volcam.load(dicomdir_tests() / "98892001" / "CT5N")
    out = write_nifti(ct[0], tmp_path / "ct.nii", like=ct)
    reread = sitk.ReadImage(str(out))
    ours = LPS @ ct.affine.numpy()
    for corner in corners(ct.shape[1:]):
        expected = reread.TransformIndexToPhysicalPoint([int(c) for c in corner])
        np.testing.assert_allclose((ours @ np.append(corner, 1.0))[:3], expected, atol=1e-3)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats_match_the_nifti_they_came_from(tmp_path, suffix: str) -> None:
    sitk = pytest.importorskip("SimpleITK")
    source = nibabel_data("example4d.nii.gz")
    volume = sitk.ReadImage(str(source))[:, :, :, 0]  # the first 3D volume, geometry as ITK reads it
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(volume, str(path))
    ours = volcam.load(path)
    reference = volcam.load(source, volume=0)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine.numpy(), reference.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.numpy(), reference.numpy())


def test_itk_file_that_is_not_an_image(tmp_path) -> None:
    path = tmp_path / "broken.mha"
    path.write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(FileFormatError, match="not a readable image file") as caught:
        volcam.load(path)
    assert "\n" not in str(caught.value)


def test_series_and_volume_arguments_are_checked(tmp_path) -> None:
    with pytest.raises(InputError, match="series= picks a series in a DICOM folder"):
        volcam.load(nibabel_data("anatomical.nii"), series="x")
    with pytest.raises(InputError, match="volume= picks a volume of a 4D NIfTI"):
        volcam.load(dicomdir_tests() / "98892001" / "CT5N", volume=0)
