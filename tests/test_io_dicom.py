"""volcam.load on real DICOM: series from folders, single files, multi-frame, cine, codecs, bad input."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
import torch

import volcam
from io_fixtures import CT_SMALL_IDENTIFIERS, dicomdir_tests, make_series, nibabel_data, pydicom_file
from volcam.errors import DependencyError, FileFormatError, SeriesError, VolcamWarning

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_series(folder, uid=None):
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    uid = uid or reader.GetGDCMSeriesIDs(str(folder))[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def assert_same_geometry(image, reference) -> None:
    """Our (x, y, z) grid and a SimpleITK image cover the same patient points with the same values.

    The 8 corners of both grids must be the same points (LPS mm), and at each of our corners the
    SimpleITK voxel found there must hold the same value: this holds whatever order either reader
    put the slices in, and fails if either maps a voxel to the wrong place.
    """
    import SimpleITK as sitk

    ours = LPS @ image.affine.numpy()
    shape = np.array(image.shape[1:])
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1).T
    points = (ours[:3, :3] @ corners.T).T + ours[:3, 3]
    size = np.array(reference.GetSize())
    theirs = np.array(np.meshgrid(*[[0, n - 1] for n in size], indexing="ij")).reshape(3, -1).T
    their_points = np.array([reference.TransformIndexToPhysicalPoint([int(v) for v in c]) for c in theirs])
    for point in points:
        assert np.min(np.linalg.norm(their_points - point, axis=1)) < 1e-3, point
    array = sitk.GetArrayFromImage(reference)  # (z, y, x)
    values = image[0].numpy()
    for corner, point in zip(corners, points, strict=True):
        index = reference.TransformPhysicalPointToIndex([float(v) for v in point])
        assert values[tuple(corner)] == pytest.approx(float(array[index[2], index[1], index[0]]), abs=1e-3)


# --- single files --------------------------------------------------------------------------------


def test_ct_slice_in_hounsfield_units_on_the_simpleitk_grid() -> None:
    import SimpleITK as sitk

    path = pydicom_file("CT_small.dcm")
    ct = volcam.load(path)
    ds = pydicom.dcmread(path)
    assert ct.shape == (1, 128, 128, 1)
    assert ct.meta["modality"] == "CT"
    assert ct.meta["spacing"] == pytest.approx((0.661468, 0.661468, 5.0))
    # HU: stored value · slope + intercept (-1024), and (x, y) = (column, row).
    assert ct.dtype == torch.int16
    np.testing.assert_array_equal(ct[0, :, :, 0].numpy(), ds.pixel_array.T.astype(np.int32) - 1024)
    assert_same_geometry(ct, sitk.ReadImage(str(path)))


def test_enhanced_ct_frames_ordered_along_the_normal_and_rescaled_per_frame() -> None:
    import SimpleITK as sitk

    path = pydicom_file("eCT_Supplemental.dcm")
    ct = volcam.load(path)
    assert ct.shape == (1, 512, 512, 2)
    assert ct.meta["spacing"] == pytest.approx((0.388672, 0.388672, 10.0))
    # IOP (-1, 0, 0, 0, 1, 0): the normal points to the feet, so the frame at z = -149 comes first.
    positions = np.array(ct.meta["slice_positions_lps"])
    assert positions[:, 2].tolist() == [-149.0, -159.0]
    assert float(ct.min()) == -1024.0  # RescaleIntercept from the shared functional groups
    assert_same_geometry(ct, sitk.ReadImage(str(path)))


def test_enhanced_mr_without_geometry_loads_with_a_warning() -> None:
    with pytest.warns(VolcamWarning) as record:
        mr = volcam.load(pydicom_file("emri_small.dcm"))
    messages = " | ".join(str(w.message) for w in record)
    assert "no ImagePositionPatient" in messages and "no PixelSpacing" in messages
    assert mr.shape == (1, 64, 64, 10)
    assert mr.meta["modality"] == "MR"
    assert mr.meta["spacing"][2] == pytest.approx(1.2)  # SpacingBetweenSlices
    assert any("PixelSpacing" in p for p in mr.meta["problems"])


def test_ultrasound_cine_ybr_jpeg_is_an_rgb_clip_with_its_frame_time() -> None:
    clip = volcam.load(pydicom_file("examples_ybr_color.dcm"))
    assert clip.shape == (3, 30, 240, 320)  # (C, T, H, W)
    assert clip.meta["axes"] == "thw"
    assert clip.meta["frame_interval"] == pytest.approx(0.033333)
    # 0.0510 cm per pixel in the ultrasound region → 0.510 mm
    assert clip.meta["spacing"] == pytest.approx((0.033333, 0.5104970559, 0.5104970559))
    assert float(clip.min()) >= 0 and float(clip.max()) <= 255
    assert clip.meta["problems"] == []


def test_single_frame_rgb_ultrasound_is_a_one_frame_clip() -> None:
    with pytest.warns(VolcamWarning, match="pixel spacing"):
        clip = volcam.load(pydicom_file("US1_UNCR.dcm"))
    assert clip.shape == (3, 1, 480, 640)
    assert clip.meta["modality"] == "US"
    reference = pydicom.dcmread(pydicom_file("US1_UNCR.dcm")).pixel_array
    np.testing.assert_array_equal(clip.numpy().transpose(1, 2, 3, 0)[0], reference)


def test_palette_colour_ultrasound_two_frames() -> None:
    with pytest.warns(VolcamWarning, match="frame time"):
        clip = volcam.load(pydicom_file("OBXXXX1A_2frame.dcm"))
    assert clip.shape == (3, 2, 600, 800)
    assert clip.meta["frame_interval"] is None
    assert clip.meta["spacing"][1:] == pytest.approx((0.2622878766, 0.2622878766))
    assert float(clip.max()) <= 255.0 and float(clip.float().std()) > 1.0


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("FrameTimeVector", [0.0] + [40.0] * 29), ("CineRate", 25), ("RecommendedDisplayFrameRate", 25)],
)
def test_frame_interval_from_frame_time_vector_or_cine_rate(tmp_path, keyword: str, value) -> None:
    ds = pydicom.dcmread(pydicom_file("examples_ybr_color.dcm"))
    del ds.FrameTime
    setattr(ds, keyword, value)
    ds.FrameIncrementPointer = pydicom.datadict.tag_for_keyword(keyword) if keyword == "FrameTimeVector" else None
    path = tmp_path / "cine.dcm"
    ds.save_as(path)
    assert volcam.load(path).meta["frame_interval"] == pytest.approx(0.040)


@pytest.mark.parametrize(
    ("compressed", "plain"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ],
)
def test_compressed_transfer_syntaxes_decode_to_the_same_voxels(compressed: str, plain: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolcamWarning)
        a, b = volcam.load(pydicom_file(compressed)), volcam.load(pydicom_file(plain))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy())


def test_missing_decoder_names_the_package_to_install(monkeypatch) -> None:
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLSLossless

    # As if no JPEG-LS plugin were installed: the decoder reports no available plugin.
    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})
    hint = r"pip install pylibjpeg pylibjpeg-libjpeg \(or pip install 'volcam\[codecs\]'\)"
    with pytest.raises(DependencyError, match=r"JPEG-LS.*" + hint) as caught:
        volcam.load(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    assert "\n" not in str(caught.value)


# --- series from folders -------------------------------------------------------------------------


def test_shuffled_series_mixed_with_another_is_listed_then_picked_and_ordered_by_position(tmp_path) -> None:
    uid, files = make_series(tmp_path, 8, seed=3, description="axial 5 mm")
    other, _ = make_series(tmp_path / "more", 3, step=2.0, seed=4, description="other")
    with pytest.raises(SeriesError) as caught:
        volcam.load(tmp_path)
    message = str(caught.value)
    assert uid in message and other in message and "'axial 5 mm'" in message and "series=" in message
    assert "\n" not in message

    for pick in (uid, "axial 5 mm"):
        ct = volcam.load(tmp_path, series=pick)
        assert ct.shape == (1, 128, 128, 8)
        # Slice k holds CT_small + 10 k HU: the order follows ImagePositionPatient, not names or numbers.
        assert ct.dtype == torch.int16  # HU are whole numbers: the native type, no float copy
        base = ct[0, :, :, 0].float().mean()
        steps = [float(ct[0, :, :, k].float().mean() - base) for k in range(8)]
        assert steps == pytest.approx([10.0 * k for k in range(8)], abs=1e-3)
        assert ct.meta["source_files"] == [str(f) for f in files]
        assert ct.meta["series_uid"] == uid
    assert_same_geometry(ct, sitk_series(tmp_path, uid))


def test_a_deflated_series_reads_as_its_plain_twin(tmp_path) -> None:
    # The shipped CT is Explicit VR Little Endian (what every PACS serves); Deflated Explicit VR Little
    # Endian, lossless and a third smaller, is still read: the phantom written both ways loads the same.
    from volcam.testing.phantoms import chest_ct, write_ct_dicom

    phantom = chest_ct(7, covid=True)
    deflated = write_ct_dicom(phantom, tmp_path / "deflated", key=7, deflate=True)
    plain = write_ct_dicom(phantom, tmp_path / "plain", key=7)
    assert (
        pydicom.dcmread(next(deflated.glob("*.dcm"))).file_meta.TransferSyntaxUID
        == pydicom.uid.DeflatedExplicitVRLittleEndian
    )
    a, b = volcam.load(deflated), volcam.load(plain)
    assert a.dtype == torch.int16
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.affine.numpy(), b.affine.numpy())
    np.testing.assert_array_equal(a[0].numpy(), phantom.image)


def test_a_deflated_single_file_from_pydicom() -> None:
    ds = pydicom.dcmread(pydicom_file("image_dfl.dcm"))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolcamWarning)  # a secondary capture: no geometry
        image = volcam.load(pydicom_file("image_dfl.dcm"))
    np.testing.assert_array_equal(image[0, :, :, 0].numpy().T, ds.pixel_array)


def test_series_order_ignores_instance_numbers_on_a_real_series() -> None:
    # CT5N: InstanceNumber 6..10 run from z = 8.76 down to z = -1.24.
    folder = dicomdir_tests() / "98892001" / "CT5N"
    ct = volcam.load(folder)
    assert ct.shape == (1, 16, 16, 5)
    assert np.array(ct.meta["slice_positions_lps"])[:, 2] == pytest.approx([-1.2375, 1.2625, 3.7625, 6.2625, 8.7625])
    assert ct.meta["spacing"] == pytest.approx((0.488281, 0.488281, 2.5))
    assert_same_geometry(ct, sitk_series(folder))


def test_duplicate_copies_and_the_dicomdir_index(tmp_path) -> None:
    _, files = make_series(tmp_path, 4)
    shutil.copy(files[1], tmp_path / "copy-of-a-slice.dcm")
    assert volcam.load(tmp_path).shape == (1, 128, 128, 4)
    # Pointing at a DICOMDIR reads the folder it indexes.
    ct = volcam.load(dicomdir_tests() / "DICOMDIR", series="SmartScore - Gated 0.5 sec")
    assert ct.shape == (1, 16, 16, 5)


def test_slices_with_different_pixel_spacing_are_not_one_volume(tmp_path) -> None:
    _, files = make_series(tmp_path, 3)
    ds = pydicom.dcmread(files[0])
    ds.PixelSpacing = [0.7, 0.7]
    ds.save_as(files[0])
    with pytest.raises(SeriesError, match="different pixel spacings"):
        volcam.load(tmp_path)


def test_a_real_series_with_a_gap_warns_with_the_gap() -> None:
    with pytest.warns(VolcamWarning, match=r"missing slices: gap of 202\.50 mm between slices 0 and 1"):
        ct = volcam.load(dicomdir_tests() / "77654033" / "CT2")
    assert ct.shape == (1, 16, 16, 4)
    assert ct.meta["spacing"][2] == pytest.approx(1.25)


def test_missing_slices_and_gantry_tilt_are_reported(tmp_path) -> None:
    make_series(tmp_path / "gap", 8, skip=(3, 4))
    with pytest.warns(VolcamWarning, match=r"gap of 15\.00 mm between slices 2 and 3 \(~2 missing\)"):
        volcam.load(tmp_path / "gap")

    make_series(tmp_path / "tilt", 6, shear=1.0)  # 1 mm in y per 5 mm in z: 11.3°
    with pytest.warns(VolcamWarning, match=r"gantry tilt of 11\.3°"):
        ct = volcam.load(tmp_path / "tilt")
    # The affine keeps the true positions: the last slice's origin is where its header says.
    last = LPS @ ct.affine.numpy() @ np.array([0, 0, 5, 1.0])
    first = pydicom.dcmread(pydicom_file("CT_small.dcm")).ImagePositionPatient
    assert last[:3] == pytest.approx([float(first[0]), float(first[1]) + 5.0, float(first[2]) + 25.0])


def test_a_folder_of_many_series_names_them_without_patient_identifiers(tmp_path) -> None:
    make_series(tmp_path / "a", 2)
    make_series(tmp_path / "b", 2, description="second")
    with pytest.raises(SeriesError) as caught:
        volcam.load(tmp_path)
    assert not any(identifier in str(caught.value) for identifier in CT_SMALL_IDENTIFIERS)


def test_series_picked_by_description_or_number_from_the_dicomdir_tree() -> None:
    ct = volcam.load(dicomdir_tests(), series="SmartScore - Gated 0.5 sec")
    assert ct.shape == (1, 16, 16, 5)
    with pytest.raises(SeriesError, match="no series 'nothing like it'"):
        volcam.load(dicomdir_tests(), series="nothing like it")


def test_mixed_orientations_in_one_series_are_not_a_volume() -> None:
    with pytest.raises(SeriesError, match="7 different orientations"):
        volcam.load(dicomdir_tests() / "98892003" / "MR700")


# --- bad input: one line naming the file, never a pydicom traceback ------------------------------


def _one_line(error: Exception, path) -> str:
    message = str(error)
    assert "\n" not in message and str(path) in message and "Traceback" not in message
    return message


def test_empty_folder(tmp_path) -> None:
    with pytest.raises(FileFormatError, match="the folder is empty") as caught:
        volcam.load(tmp_path)
    _one_line(caught.value, tmp_path)


def test_folder_without_dicom(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    shutil.copy(pydicom_file("rtplan.dcm"), tmp_path / "plan.dcm")
    with pytest.raises(FileFormatError, match=r"no DICOM image in the folder \(2 file\(s\): 1 no image, 1 not DICOM\)"):
        volcam.load(tmp_path)


def test_folder_of_nifti_files_says_to_give_the_file(tmp_path) -> None:
    shutil.copy(nibabel_data("anatomical.nii"), tmp_path / "anatomical.nii")
    with pytest.raises(FileFormatError, match=r"give the file itself \(e\.g\. anatomical\.nii\)"):
        volcam.load(tmp_path)


def test_non_dicom_dcm(tmp_path) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"this is a text file, not DICOM\n" * 10)
    with pytest.raises(FileFormatError, match="not a DICOM file") as caught:
        volcam.load(path)
    _one_line(caught.value, path)


def test_truncated_header(tmp_path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(pydicom_file("CT_small.dcm").read_bytes()[:700])
    with pytest.raises(FileFormatError) as caught:
        volcam.load(path)
    _one_line(caught.value, path)


def test_truncated_pixel_data() -> None:
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(FileFormatError, match="cannot decode the pixel data") as caught:
        volcam.load(path)
    _one_line(caught.value, path)


def test_no_pixel_data(tmp_path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "header-only.dcm"
    ds.save_as(path)
    with pytest.raises(FileFormatError, match="has no pixel data") as caught:
        volcam.load(path)
    _one_line(caught.value, path)
    with pytest.raises(FileFormatError, match="has no pixel data"):
        volcam.load(pydicom_file("rtplan.dcm"))


def test_slices_of_different_sizes(tmp_path) -> None:
    _, files = make_series(tmp_path, 4)
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.pixel_array[:64, :64].copy().tobytes()
    ds.Rows = ds.Columns = 64
    ds.save_as(files[2])
    with pytest.raises(SeriesError, match=r"different sizes \(64×64, 128×128\)") as caught:
        volcam.load(tmp_path)
    _one_line(caught.value, tmp_path)


def test_missing_path(tmp_path) -> None:
    with pytest.raises(FileFormatError, match="no such file or folder"):
        volcam.load(tmp_path / "nope.dcm")


def test_test_files_come_from_installed_packages_without_download(monkeypatch) -> None:
    import pydicom.data.data_manager as manager

    def no_network(*args, **kwargs):
        raise AssertionError("pydicom tried to download a test file")

    monkeypatch.setattr(manager, "fetch_data_files", no_network, raising=False)
    monkeypatch.setattr(manager, "data_path_with_download", no_network, raising=False)
    for name in ("eCT_Supplemental.dcm", "emri_small.dcm", "US1_UNCR.dcm", "OBXXXX1A_2frame.dcm"):
        assert pydicom_file(name).is_file()
