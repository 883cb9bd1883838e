"""The file readers against malicious or careless files: each is one line, never a hang or a huge allocation.

Every bad file is built in ``tmp_path`` from real data (pydicom's test files, the shipped CT series
and NIfTI, nibabel) with one thing broken. Classes: non-regular files (hangs), DICOM fields of the
wrong type, geometry that makes no sense, headers that claim huge images, RT Dose frame offsets,
and messages that fit the command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from typer.testing import CliRunner

import volcam
from adversarial.checks import assert_one_line
from io_fixtures import make_series, pydicom_file
from volcam.errors import VolcamError, VolcamWarning

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_NIFTI = ROOT / "sample_data" / "ct_covid_sample.nii.gz"
SAMPLE_DICOM = ROOT / "sample_data" / "ct_covid_sample_dicom"
runner = CliRunner()


def finishes(call: Callable[[], Any], seconds: float = 20.0, fifos: tuple[Path, ...] = ()) -> Any:
    """``call()`` run in a thread: its result, or the exception it raised; fails if it is still
    running after ``seconds`` (a reader blocked on a FIFO), and then unblocks ``fifos`` so the
    thread can end."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:  # a writer that opens and closes releases a reader blocked in open()
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds} s: it blocked")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def one_line_error(error: BaseException) -> str:
    """The message of a user-facing error: one line, a VolcamError."""
    assert isinstance(error, VolcamError), f"{type(error).__name__}: {error}"
    text = str(error)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    assert "object at 0x" not in text
    return text


def load_error(path: Path, **kwargs: Any) -> str:
    """``volcam.load(path)`` must fail at once with one line; returns it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolcamWarning)
        with pytest.raises(VolcamError) as caught:
            finishes(lambda: volcam.load(path, **kwargs))
    return one_line_error(caught.value)


def cli(*args: str) -> tuple[int, str, str]:
    from volcam.cli import app

    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


# --- 1. non-regular files: FIFOs, sockets, devices ---------------------------------------------


@pytest.mark.parametrize("name", ["scan", "scan.dcm", "scan.nii.gz", "scan.nrrd", "scan.mp4"])
def test_a_fifo_given_as_the_scan_is_refused_at_once(tmp_path, unchanged, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    unchanged(tmp_path)
    message = load_error(fifo)
    assert str(fifo) in message and "not a regular file" in message and "FIFO" in message


@pytest.mark.parametrize("name", ["scan.dcm", "scan.nii", "scan"])
def test_a_link_to_dev_zero_is_refused_at_once(tmp_path, name: str) -> None:
    link = tmp_path / name
    link.symlink_to("/dev/zero")
    message = load_error(link)
    assert str(link) in message and "not a regular file (a character device)" in message


def test_a_socket_is_refused(tmp_path) -> None:
    path = tmp_path / "s.dcm"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(os.fspath(path))
        assert "not a regular file (a socket)" in load_error(path)
    finally:
        server.close()


def test_a_link_to_a_regular_file_is_read(tmp_path) -> None:
    link = tmp_path / "ct.nii.gz"
    link.symlink_to(SAMPLE_NIFTI)
    assert volcam.load(link).shape == volcam.load(SAMPLE_NIFTI).shape


def test_a_dicom_folder_with_a_fifo_and_a_device_link_skips_them(tmp_path, unchanged) -> None:
    folder = shutil.copytree(SAMPLE_DICOM, tmp_path / "series")
    os.mkfifo(folder / "pipe")
    os.mkfifo(folder / "pipe.dcm")
    (folder / "zero.dcm").symlink_to("/dev/zero")
    unchanged(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolcamWarning)
        image = finishes(lambda: volcam.load(folder), fifos=(folder / "pipe", folder / "pipe.dcm"))
        reference = volcam.load(SAMPLE_DICOM)
    assert image.shape == reference.shape
    from volcam.io.info import describe

    _, skipped = finishes(lambda: describe(folder), fifos=(folder / "pipe", folder / "pipe.dcm"))
    assert skipped == {"not a regular file": 3}


def test_a_folder_of_fifos_only_is_one_line(tmp_path) -> None:
    os.mkfifo(tmp_path / "a.dcm")
    message = load_error(tmp_path)
    assert str(tmp_path) in message and "no regular file" in message


def test_the_cohort_folder_listing_skips_fifos_and_devices(tmp_path) -> None:
    from volcam.io.tables import read_cases

    shutil.copy(SAMPLE_NIFTI, tmp_path / "case1.nii.gz")
    os.mkfifo(tmp_path / "case2.nii.gz")
    os.mkfifo(tmp_path / "case3")
    (tmp_path / "case4.dcm").symlink_to("/dev/zero")
    (tmp_path / "case5.nii.gz").symlink_to(SAMPLE_NIFTI)
    cases = finishes(lambda: read_cases(tmp_path), fifos=(tmp_path / "case2.nii.gz", tmp_path / "case3"))
    assert [case.case_id for case in cases] == ["case1", "case5"]


def test_cli_info_on_a_fifo_is_one_line(tmp_path) -> None:
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    code, _, err = finishes(lambda: cli("info", fifo), fifos=(fifo,))
    assert code == 2
    assert "not a regular file" in assert_one_line(err)


# --- 2. DICOM fields holding a value of the wrong type -------------------------------------------


def set_raw(ds: pydicom.Dataset, keyword: str, value: str | bytes, vr: str = "DS") -> None:
    """Put ``value`` into ``ds`` as the file would hold it, unchecked (pydicom would refuse it as a value)."""
    tag = pydicom.tag.Tag(pydicom.datadict.tag_for_keyword(keyword))
    raw = value.encode() if isinstance(value, str) else value
    raw += b" " * (len(raw) % 2)
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)


def ct_slice(folder: Path, name: str = "slice.dcm", **fields: str | tuple[str, str]) -> Path:
    """A copy of the real CT_small slice with ``fields`` (keyword → raw text, or (text, VR)) written as is."""
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    for keyword, value in fields.items():
        text, vr = value if isinstance(value, tuple) else (value, "DS")
        set_raw(ds, keyword, text, vr)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("ImagePositionPatient", "abc\\1\\2", "ImagePositionPatient is 'abc\\1\\2', not 3 numbers"),
        ("ImagePositionPatient", "1\\2", "ImagePositionPatient holds 2 value(s) ('1\\2'), not 3 numbers"),
        ("ImagePositionPatient", "nan\\1\\2", "ImagePositionPatient holds NaN or infinity"),
        ("ImageOrientationPatient", "1\\0\\0\\0\\1", "ImageOrientationPatient holds 5 value(s)"),
        ("RescaleSlope", "abc", "RescaleSlope is 'abc', not a number"),
        ("Rows", ("abc", "IS"), "Rows is 'abc', not a number"),
        ("Rows", (b"\0\0", "US"), "Rows is '0', not a whole number ≥ 1"),
        ("NumberOfFrames", ("many", "IS"), "NumberOfFrames is 'many', not a number"),
    ],
)
def test_a_required_field_of_the_wrong_type_is_one_line_naming_file_and_keyword(
    tmp_path, unchanged, field: str, value, expected: str
) -> None:
    path = ct_slice(tmp_path, **{field: value})
    unchanged(tmp_path)
    message = load_error(path)
    assert message.startswith(f"{path}: ") and expected in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("PixelSpacing", "abc\\def", "PixelSpacing is 'abc\\def', not 2 numbers; ignored"),
        ("PixelSpacing", "0\\0", "PixelSpacing is '0\\0', not positive; ignored"),
        ("SpacingBetweenSlices", "x", "SpacingBetweenSlices is 'x', not a number; ignored"),
        ("GantryDetectorTilt", "steep", "GantryDetectorTilt is 'steep', not a number; ignored"),
    ],
)
def test_an_optional_field_of_the_wrong_type_is_ignored_with_a_warning(tmp_path, field: str, value, expected) -> None:
    path = ct_slice(tmp_path, **{field: value})
    with pytest.warns(VolcamWarning, match=expected.replace("\\", "\\\\").replace("(", r"\(")):
        image = volcam.load(path)
    assert image.shape == (1, 128, 128, 1)
    assert any(expected in p for p in image.meta["problems"])
    reference = volcam.load(pydicom_file("CT_small.dcm"))
    np.testing.assert_array_equal(image.numpy(), reference.numpy())  # the voxels are the file's


def test_a_clip_with_a_frame_time_that_is_text_falls_back_to_the_cine_rate(tmp_path) -> None:
    ds = pydicom.dcmread(pydicom_file("examples_ybr_color.dcm"))
    set_raw(ds, "FrameTime", "fast")
    ds.CineRate = 25
    path = tmp_path / "cine.dcm"
    ds.save_as(path)
    with pytest.warns(VolcamWarning, match="FrameTime is 'fast', not a number; ignored"):
        clip = volcam.load(path)
    assert clip.meta["frame_interval"] == pytest.approx(1 / 25)


def test_a_series_with_one_broken_slice_names_that_file(tmp_path) -> None:
    _, files = make_series(tmp_path / "series", 4)
    ds = pydicom.dcmread(files[2])
    set_raw(ds, "ImagePositionPatient", "-158\\text\\-75")
    ds.save_as(files[2])
    message = load_error(tmp_path / "series")
    assert isinstance(message, str) and f"{files[2].name}: ImagePositionPatient is '-158\\text\\-75'" in message
    from volcam.io.info import describe

    found, _ = describe(tmp_path / "series")
    assert any("ImagePositionPatient is '-158\\text\\-75'" in p for p in found[0].problems)


def test_a_description_with_a_newline_stays_on_one_line(tmp_path) -> None:
    make_series(tmp_path / "a", 2, description="axial\nTraceback (most recent call last):")
    make_series(tmp_path / "b", 2, description="other")
    message = load_error(tmp_path)
    assert "'axial Traceback (most recent call last):'" in message
    assert "series= (--series on the command line" in message
    code, out, err = cli("info", tmp_path)
    assert code == 0, err
    assert "'axial Traceback (most recent call last):'" in out


# --- 3. geometry that makes no sense -------------------------------------------------------------


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        ("0\\0\\0\\0\\1\\0", "ImageOrientationPatient has a zero row direction"),
        ("1\\0\\0\\0\\0\\0", "ImageOrientationPatient has a zero column direction"),
        ("1\\0\\0\\1\\0\\0", "ImageOrientationPatient row and column directions are parallel"),
        ("1\\0\\0\\-1\\0\\0", "ImageOrientationPatient row and column directions are parallel"),
    ],
)
def test_a_degenerate_orientation_is_one_line_and_an_info_problem(tmp_path, iop: str, expected: str) -> None:
    path = ct_slice(tmp_path / "one", ImageOrientationPatient=iop)
    message = load_error(path)
    assert message == f"{path}: {expected}"
    _, files = make_series(tmp_path / "series", 3)
    for file in files:
        ds = pydicom.dcmread(file)
        set_raw(ds, "ImageOrientationPatient", iop)
        ds.save_as(file)
    assert expected in load_error(tmp_path / "series")
    from volcam.io.info import describe

    found, _ = describe(tmp_path / "series")
    assert any(expected in p for p in found[0].problems)
    assert all(np.isfinite(found[0].spacing))


def test_a_nan_position_in_a_series_is_a_problem_not_nan_spacing(tmp_path) -> None:
    _, files = make_series(tmp_path / "series", 3)
    ds = pydicom.dcmread(files[0])
    set_raw(ds, "ImagePositionPatient", "nan\\0\\0")
    ds.save_as(files[0])
    code, out, err = cli("info", tmp_path / "series")
    assert code == 0, err
    assert "ImagePositionPatient holds NaN or infinity" in out and "problems     none" not in out
    spacing = next(line for line in out.splitlines() if line.strip().startswith("spacing"))
    assert "nan" not in spacing.lower()


def nifti_with(tmp_path: Path, name: str, change: Callable[[nib.Nifti1Header], None]) -> Path:
    """The shipped CT NIfTI with its header changed as written (nibabel does not recompute it)."""
    source = nib.load(SAMPLE_NIFTI)
    header = source.header.copy()
    change(header)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), None, header=header), path)
    return path


def test_a_nan_sform_falls_back_to_the_qform_with_a_warning(tmp_path) -> None:
    path = nifti_with(tmp_path, "sform_nan.nii.gz", lambda h: h.__setitem__("srow_x", [np.nan, 0, 0, 0]))
    assert np.isnan(nib.load(path).affine).any()  # nibabel uses the sform as it is
    with pytest.warns(VolcamWarning, match="the sform holds NaN or infinity; the qform is used instead"):
        image = volcam.load(path)
    reference = nib.load(SAMPLE_NIFTI)
    np.testing.assert_allclose(image.affine.numpy(), reference.header.get_qform(), atol=1e-5)


def test_a_zero_sform_falls_back_to_the_qform(tmp_path) -> None:
    def zero(header: nib.Nifti1Header) -> None:
        for row in ("srow_x", "srow_y", "srow_z"):
            header[row] = [0, 0, 0, 0]

    path = nifti_with(tmp_path, "sform_zero.nii.gz", zero)
    with pytest.warns(VolcamWarning, match="the sform is zero or singular"):
        image = volcam.load(path)
    assert image.meta["spacing"] == pytest.approx((0.7, 0.7, 2.5))


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("sform_only_nan", {"srow_x": [np.nan, 0, 0, 0], "qform_code": 0}, "the sform holds NaN or infinity"),
        ("qform_nan", {"sform_code": 0, "quatern_b": np.nan}, "the qform holds NaN or infinity"),
        (
            "both_singular",
            {"srow_x": [1, 0, 0, 0], "srow_y": [1, 0, 0, 0], "quatern_b": np.nan},
            "the sform is zero or singular (a zero voxel size or parallel axes); the qform holds NaN",
        ),
        ("zero_dim", {"dim": [3, 128, 0, 48, 1, 1, 1, 1]}, "the header gives a size of 128×0×48: no voxels"),
    ],
)
def test_nifti_geometry_that_places_nothing_is_one_line(tmp_path, unchanged, name, change, expected) -> None:
    def apply(header: nib.Nifti1Header) -> None:
        for key, value in change.items():
            header[key] = value

    if name == "zero_dim":
        header = nib.load(SAMPLE_NIFTI).header.copy()
        apply(header)
        path = tmp_path / f"{name}.nii"
        path.write_bytes(header.binaryblock + b"\0" * 4)
    else:
        path = nifti_with(tmp_path, f"{name}.nii.gz", apply)
    unchanged(tmp_path)
    message = load_error(path)
    assert message.startswith(f"{path}: ") and expected in message
    code, _, err = cli("info", path)
    assert code == 2 and expected in assert_one_line(err)


def mha_with(tmp_path: Path, field: bytes, value: bytes) -> Path:
    """The sample CT as a MetaImage (.mha) whose header line ``field`` is replaced by ``value``."""
    sitk = pytest.importorskip("SimpleITK")
    path = tmp_path / "ct.mha"
    sitk.WriteImage(sitk.ReadImage(os.fspath(SAMPLE_NIFTI)), os.fspath(path))
    text = path.read_bytes()
    start = text.index(field + b" = ")
    end = text.index(b"\n", start)
    path.write_bytes(text[:start] + field + b" = " + value + text[end:])
    return path


def test_an_itk_file_with_nan_spacing_is_one_line(tmp_path) -> None:
    path = mha_with(tmp_path, b"ElementSpacing", b"nan 0.7 2.5")
    message = load_error(path)  # MetaIO reads "nan" as 0 (or NaN): either is one line about the spacing
    assert message.startswith(f"{path}: the header's spacing")


# --- 4. headers that claim huge images -----------------------------------------------------------


def huge_nifti(path: Path, gz: bool) -> Path:
    """A real NIfTI header claiming 1024³ float32 (4 GiB) with a few bytes of data."""
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 64
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_a_huge_uncompressed_nifti_header_is_refused_before_allocating(tmp_path) -> None:
    path = huge_nifti(tmp_path / "huge.nii", gz=False)
    message = load_error(path)
    assert "the header claims 4.0 GiB of image data, the file holds" in message


def test_a_huge_gzip_nifti_header_is_refused_before_allocating(tmp_path) -> None:
    path = huge_nifti(tmp_path / "huge.nii.gz", gz=True)
    message = load_error(path)
    assert "the header claims 4.0 GiB of image data, more than a gzip file of" in message


def test_a_nifti_bigger_than_the_memory_available_is_refused(tmp_path, monkeypatch) -> None:
    import volcam.io.memory

    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 1 << 20)  # 1 MiB free
    message = load_error(SAMPLE_NIFTI)
    assert "would need" in message and "more than the 0.0 GiB of memory available" in message


def test_a_dicom_slice_claiming_a_huge_frame_count_is_refused_before_decoding(tmp_path, monkeypatch) -> None:
    import volcam.io.memory

    path = ct_slice(tmp_path, NumberOfFrames=("100000", "IS"))
    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 1 << 30)
    message = load_error(path)
    assert message.startswith(f"{path}: decoding the pixel data would need 6.1 GiB")


def test_a_dicom_series_larger_than_memory_is_refused_before_any_slice_is_decoded(tmp_path, monkeypatch) -> None:
    import volcam.io.dicom.reader
    import volcam.io.memory

    make_series(tmp_path / "series", 4)
    monkeypatch.setattr(volcam.io.memory, "available_bytes", lambda: 128 * 128 * 4 * 3)  # room for 3 slices

    def no_decoding(*args):
        raise AssertionError("decoded a slice before checking the whole series")

    monkeypatch.setattr(volcam.io.dicom.reader, "decode", no_decoding)
    message = load_error(tmp_path / "series")
    assert "the series (4 slices) would need" in message


def test_an_itk_header_claiming_a_huge_image_is_refused(tmp_path) -> None:
    path = mha_with(tmp_path, b"DimSize", b"100000 100000 100000")
    assert "would need" in load_error(path)


# --- 5. RT Dose frames at GridFrameOffsetVector --------------------------------------------------


def test_rt_dose_frames_are_placed_at_the_grid_frame_offsets() -> None:
    path = pydicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    dose = volcam.load(path)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    start = np.array([float(v) for v in ds.ImagePositionPatient])
    assert dose.shape == (1, int(ds.Columns), int(ds.Rows), int(ds.NumberOfFrames))
    positions = np.array(dose.meta["slice_positions_lps"])
    np.testing.assert_allclose(positions, start + offsets[:, None] * np.array([0.0, 0.0, 1.0]))
    assert dose.meta["spacing"] == pytest.approx((10.0, 10.0, 5.0))
    assert not dose.meta["problems"]


def rt_dose_with(tmp_path: Path, offsets: list[float]) -> Path:
    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    ds.GridFrameOffsetVector = offsets
    path = tmp_path / "dose.dcm"
    ds.save_as(path)
    return path


def test_rt_dose_absolute_offsets_are_z_coordinates(tmp_path) -> None:
    z0 = -761.87
    path = rt_dose_with(tmp_path, [z0 + 3.0 * k for k in range(15)][::-1])  # absolute, descending
    dose = volcam.load(path)
    positions = np.array(dose.meta["slice_positions_lps"])
    np.testing.assert_allclose(positions[:, 2], [z0 + 3.0 * k for k in range(15)])
    assert dose.meta["spacing"][2] == pytest.approx(3.0)
    reference = volcam.load(pydicom_file("rtdose.dcm"))
    np.testing.assert_array_equal(dose[0, :, :, 0].numpy(), reference[0, :, :, 14].numpy())  # frames reordered


def test_rt_dose_uneven_offsets_warn_and_a_wrong_count_is_one_line(tmp_path) -> None:
    offsets = [0.0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 90]
    with pytest.warns(VolcamWarning, match="missing slices"):
        volcam.load(rt_dose_with(tmp_path, offsets))
    message = load_error(rt_dose_with(tmp_path, [0.0, 5.0, 10.0]))
    assert "GridFrameOffsetVector has 3 value(s) for 15 frames" in message


# --- 6. messages that fit the command line -------------------------------------------------------


def test_messages_name_the_command_line_options(tmp_path) -> None:
    assert "series= picks a series in a DICOM folder (--series on the command line)" in load_error(
        SAMPLE_NIFTI, series="x"
    )
    assert "(--volume on the command line)" in load_error(pydicom_file("CT_small.dcm"), volume=1)
    four = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), four)
    assert "volume= (--volume on the command line)" in load_error(four)
    make_series(tmp_path / "s" / "a", 2, description="first")
    make_series(tmp_path / "s" / "b", 2, description="first")
    assert "pick one by its UID with series= (--series on the command line)" in load_error(
        tmp_path / "s", series="first"
    )
