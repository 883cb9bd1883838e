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


def header_with_axes(path, axes: int) -> None:
    """A NIfTI (``.nii``) or Analyze pair (``.hdr`` + ``.img``) of a 4×4×4 int16 image whose header's
    ``dim[0]`` (its number of axes) is then overwritten with ``axes``, as stored."""
    image = nib.Nifti1Pair if path.suffix == ".hdr" else nib.Nifti1Image
    nib.save(image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    with open(path, "r+b") as file:
        file.seek(40)  # dim[0], a little-endian int16 after sizeof_hdr and the Analyze fields
        file.write(np.int16(axes).tobytes())


@pytest.mark.filterwarnings("ignore:.*nibabel fixed the header")
@pytest.mark.parametrize("axes", [-1, 0, 8])
def test_a_header_whose_number_of_axes_is_not_1_to_7_is_one_line(tmp_path, capfd, axes: int) -> None:
    """An Analyze pair whose dim[0] is -1 gave no axes at all (a 0-dimensional array: an IndexError
    reading it); 0 gives size 0 and 8 makes nibabel read the header byte-swapped. Each is refused from
    the header in one line naming the file; nibabel's fixes of the header are not lines on stderr."""
    path = tmp_path / "scan.hdr"
    header_with_axes(path, axes)
    with pytest.raises(FileFormatError) as caught:
        volcam.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: the header gives ") and "\n" not in message
    assert "axes (dim[0]; a NIfTI or Analyze image has 1 to 7): no image" in message
    assert capfd.readouterr().err == ""


@pytest.mark.filterwarnings("ignore:.*nibabel fixed the header")
def test_a_single_file_nifti_whose_number_of_axes_is_not_1_to_7_is_one_line(tmp_path) -> None:
    """In a .nii, a dim[0] nibabel takes for byte-swapped makes the data offset nonsense too: one line."""
    for axes in (-1, 8):
        path = tmp_path / f"scan{axes}.nii"
        header_with_axes(path, axes)
        with pytest.raises(FileFormatError) as caught:
            volcam.load(path)
        assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("shape", "volume", "selected"),
    [
        ((6, 5, 4, 3, 1), 2, (slice(None), slice(None), slice(None), 2, 0)),  # 4D stored with a 5th singleton
        ((6, 5, 4, 3, 1, 1), 1, (slice(None), slice(None), slice(None), 1, 0, 0)),
        ((6, 5, 4, 1, 1), None, (slice(None), slice(None), slice(None), 0, 0)),  # 3D stored as 5D
        ((6, 5, 1, 3), 0, (slice(None), slice(None), slice(None), 0)),  # one slice, three volumes
        ((6, 5), None, (slice(None), slice(None))),  # 2D: a volume one slice deep
    ],
)
def test_trailing_singleton_axes_and_the_volume_asked_for_read_the_right_voxels(
    tmp_path, shape, volume, selected
) -> None:
    """The volume is picked on the fourth axis and a trailing singleton axis at 0, whatever the header's
    number of axes (a 6×5×4×3×1 file read its singleton axis as the volume: a ValueError reshaping)."""
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    path = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    image = volcam.load(path, volume=volume)
    expected = data[selected]
    expected = expected.reshape(expected.shape + (1,) * (3 - expected.ndim))
    assert image.shape == (1, *expected.shape)
    np.testing.assert_array_equal(image[0].numpy(), expected)


def test_a_4d_nifti_with_a_trailing_singleton_axis_is_described_with_the_problem(tmp_path) -> None:
    from volcam.io.info import describe

    path = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 4, 3, 1), np.uint8), np.eye(4)), path)
    (found,), _ = describe(path)
    assert found.shape == (6, 6, 4)
    assert any(p.startswith("a 4D NIfTI (6×6×4×3) where a 3D volume is expected") for p in found.problems)


def test_a_sheared_affine_is_kept_with_a_problem(tmp_path) -> None:
    """An affine whose voxel axes are not perpendicular (an Analyze header's odd sform, a kept gantry
    tilt) is used as it is, and said: spacing alone (0.8 × 0.8 × 316 mm) would not show it."""
    from volcam.errors import VolcamWarning

    affine = np.array([[0.8, 0, 316.0, -10], [0, 0.8, 0, 20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    path = tmp_path / "sheared.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.int16), affine), path)
    with pytest.warns(VolcamWarning, match=r"sheared: axes 1 and 3 meet at 0\.5°, not 90°") as caught:
        image = volcam.load(path)
    assert str(caught[0].message).startswith(f"{path}: ")
    np.testing.assert_allclose(image.affine.numpy(), affine, rtol=1e-6)
    rotated = nib.Nifti1Image(np.zeros((8, 8, 6), np.int16), nib.affines.from_matvec(np.eye(3)[[1, 0, 2]] * 0.7))
    nib.save(rotated, tmp_path / "plain.nii")
    assert not [p for p in volcam.load(tmp_path / "plain.nii").meta["problems"] if "sheared" in p]


def test_a_header_nibabel_fixes_is_read_with_the_fix_as_a_problem_not_on_stderr(tmp_path, capfd) -> None:
    """nibabel logs the fixes it makes to a header through a handler of its own (stderr): while volcam
    opens a file they become the image's problems (warnings), and nothing else reaches stderr."""
    from volcam.errors import VolcamWarning

    path = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    with open(path, "r+b") as file:
        file.seek(80)  # pixdim[1], a little-endian float32
        file.write(np.float32(-2.0).tobytes())
    with pytest.warns(VolcamWarning, match="nibabel fixed the header: pixdim.* should be positive"):
        image = volcam.load(path)
    assert any("pixdim" in p for p in image.meta["problems"])
    assert capfd.readouterr().err == ""
