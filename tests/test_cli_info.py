"""``volcam info``: what a path holds, problems included, patient identifiers never; errors in one line."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from io_fixtures import CT_SMALL_IDENTIFIERS, dicomdir_tests, make_series, nibabel_data, pydicom_file
from volcam.cli import app

runner = CliRunner()


def info(path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["info", str(path)])
    return result.exit_code, result.stdout, result.stderr


def test_folder_with_two_series_a_gap_and_a_stray_file(tmp_path) -> None:
    uid, _ = make_series(tmp_path / "a", 6, skip=(2,), description="axial 5 mm")
    other, _ = make_series(tmp_path / "b", 3, shear=1.0, description="tilted")
    (tmp_path / "README.txt").write_text("not an image")
    code, out, err = info(tmp_path)
    assert code == 0, err
    assert "2 series (skipped: 1 not DICOM)" in out
    assert f"{uid} 'axial 5 mm'" in out and f"{other} 'tilted'" in out
    assert "128 × 128 × 5" in out and "0.6615 × 0.6615 × 5 mm" in out
    assert "axial, voxel axes point LPS" in out
    assert "missing slices: gap of 10.00 mm between slices 1 and 2" in out
    assert "gantry tilt of 11.3°" in out
    for identifier in CT_SMALL_IDENTIFIERS:
        assert identifier not in out + err


def test_real_dicomdir_tree_lists_every_series_and_what_is_wrong() -> None:
    code, out, _ = info(dicomdir_tests())
    assert code == 0
    assert "13 series" in out and "DICOMDIR" not in out.splitlines()[1]
    assert "'SmartScore - Gated 0.5 sec'" in out and "problems     none" in out
    assert "cannot load as one volume: slices have 7 different orientations" in out
    assert "missing slices: gap of 202.50 mm" in out


def test_cine_file_shows_frames_and_frame_time() -> None:
    code, out, _ = info(pydicom_file("examples_ybr_color.dcm"))
    assert code == 0
    assert "frames       30 × 240 × 320 (frames × rows × columns)" in out
    assert "frame time   33.33 ms" in out and "pixel size   0.5105 × 0.5105 mm" in out
    assert "modality     US" in out


def test_single_ct_slice_prints_no_patient_identifier() -> None:
    code, out, err = info(pydicom_file("CT_small.dcm"))
    assert code == 0
    assert "modality     CT" in out and "128 × 128 × 1" in out
    for identifier in CT_SMALL_IDENTIFIERS:
        assert identifier not in out + err


def test_4d_nifti_is_described_with_the_problem() -> None:
    code, out, _ = info(nibabel_data("example4d.nii.gz"))
    assert code == 0
    assert "128 × 96 × 24" in out and "a 4D NIfTI (128×96×24×2)" in out


@pytest.mark.parametrize("case", ["empty", "missing", "not-dicom"])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, case: str) -> None:
    path = {"empty": tmp_path, "missing": tmp_path / "nope", "not-dicom": tmp_path / "x.dcm"}[case]
    if case == "not-dicom":
        path.write_text("hello")
    code, out, err = info(path)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volcam: error: ") and str(path) in lines[0]


@pytest.mark.slow
def test_installed_console_script(tmp_path) -> None:
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "slice.dcm")
    script = shutil.which("volcam") or pytest.skip("the volcam console script is not installed")
    done = subprocess.run([script, "info", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "modality     CT" in done.stdout
    module = subprocess.run([sys.executable, "-m", "volcam.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and "info" in module.stdout


def test_a_second_copy_with_another_series_uid_makes_no_empty_series(tmp_path) -> None:
    """A copy of a slice (same SOPInstanceUID) whose SeriesInstanceUID differs is passed over as a
    duplicate: it made a series with no header (an IndexError in info); now a series comes into
    being with its first header."""
    import pydicom

    uid, files = make_series(tmp_path / "series", 3)
    copy = pydicom.dcmread(files[0])
    copy.SeriesInstanceUID = "1.2.3.4"
    copy.save_as(tmp_path / "series" / "zz-copy.dcm")  # read after the original (files are sorted)
    code, out, err = info(tmp_path / "series")
    assert code == 0, err
    assert "1 series (skipped: 1 duplicate)" in out and uid in out and "1.2.3.4" not in out
    assert "128 × 128 × 3" in out and "problems     none" in out


def test_a_series_without_a_header_is_described_with_the_problem(tmp_path) -> None:
    """Every series a folder or a server gives has a header; one made without is a problem, not an IndexError."""
    from volcam.io.dicom.series import Series
    from volcam.io.info import _dicom_series

    found = _dicom_series(Series(uid="1.2.3", description="empty", modality="CT", number=None), tmp_path)
    assert found.source == str(tmp_path) and found.shape == ()
    assert found.problems == ["cannot load: no readable image header in the series"]
