"""volcam's DICOM Parametric Map and Segmentation as OHIF shows them, in a real browser.

For a CT (the shipped one, and the same phantom written with its slice normal pointing feet-ward), the
test runs ``volcam explain --dicom parametric-map,segmentation --store <PACS>``, serves OHIF's
pinned build and the PACS's DICOMweb from one localhost origin (``ohif_site.py``), and has headless
Chromium open the study (``ohif_drive.mjs``: double-clicks the thumbnails like a user). It then compares
the viewer's own state with volcam's files and the lesion mask:

- every DICOMweb request succeeded and the CT volume holds the files' voxels, slice for slice;
- the map's per-slice maxima sit at the file's frame positions, so its hottest slice is the file's
  hottest frame, on a lesion slice (OHIF copies the frames in file order onto the CT volume, which it
  sorts along the slice normal: frames in the other order show the map on the mirrored slices);
- the segmentation loads without OHIF's colour warning, its labelmap holds exactly the SEG file's
  voxels at their places on the CT, and they lie on the lesions.

Screenshots of both go to the test's folder, and to ``$VOLCAM_VIEWER_SCREENSHOTS`` when set. The harness
(OHIF build, playwright-core, Chromium, Orthanc) comes from ``tests/viewer/setup.sh`` and ``.ci/run``;
without it the test skips, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cli_runs import run
from ohif_site import OhifSite
from pacs import Pacs
from volcam import sample_data as sd
from volcam.io.image import LPS_TO_RAS

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
OHIF_DIST = HERE / ".cache" / "ohif" / "package" / "dist"  # tests/viewer/setup.sh puts the pinned build there
DRIVER = HERE / "ohif_drive.mjs"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS_VARIABLE = "VOLCAM_VIEWER_SCREENSHOTS"
BROWSER_S = 150  # the browser's whole visit; about 15 s on 2 cores
DECIMALS = 2  # positions are compared in units of 0.01 mm


def unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine without the harness; fail under CI, which must never skip this."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"viewer test harness missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def missing_harness() -> str | None:
    """Why the browser side cannot run here, or None."""
    if not (OHIF_DIST / "index.html").is_file():
        return f"no OHIF build in {OHIF_DIST.relative_to(REPOSITORY)} (run: bash tests/viewer/setup.sh)"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "no playwright-core in tests/viewer/node_modules (run: bash tests/viewer/setup.sh)"
    if shutil.which("node") is None:
        return "no node on PATH"
    if not CHROMIUM.is_file():
        return f"no {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
def viewer_pacs(request: pytest.FixtureRequest) -> Pacs:
    """``pacs`` (Orthanc with its credentials in the environment), the harness checked first."""
    why = missing_harness()
    if why is not None:
        unavailable(why)
    try:
        return request.getfixturevalue("pacs")
    except pytest.skip.Exception as skipped:  # no Orthanc: a skip locally, a failure under CI
        unavailable(str(skipped.msg))


# -- the CTs ------------------------------------------------------------------------------------------


def sample_ct_seed() -> int:
    """The seed the shipped CT was drawn from (``sample_data/train_demo_models.py``, its one home)."""
    script = REPOSITORY / "sample_data" / "train_demo_models.py"
    spec = importlib.util.spec_from_file_location("train_demo_models", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.SAMPLE_CT_SEED)


def upload_shipped_ct(pacs: Pacs, folder: Path) -> str:
    """The shipped CT series under new UIDs, in a study of its own (the shipped study keeps one series)."""
    study, _ = pacs.copy_of_ct(folder)
    return study


def upload_flipped_ct(pacs: Pacs, folder: Path) -> str:
    """The shipped CT's phantom written with its column direction pointing anterior (ImageOrientationPatient
    [1,0,0, 0,-1,0]: the image flipped along y, and the affine's y axis with it), so the slice normal
    (row × column) points to the feet: along it the slices ascend from head to feet. The same anatomy in
    patient space, new UIDs, a study of its own."""
    from volcam.testing.phantoms import chest_ct, write_ct_dicom

    phantom = chest_ct(sample_ct_seed(), covid=True)
    shipped_mask = np.asarray(nib.Nifti1Image.from_filename(sd.file(sd.CT_MASK)).dataobj)
    assert np.array_equal(phantom.mask, shipped_mask), "not the shipped CT's phantom: its seed changed?"
    affine = phantom.affine.copy()
    affine[:3, 3] += affine[:3, 1] * (phantom.image.shape[1] - 1)  # the last row becomes the first
    affine[:3, 1] *= -1
    flipped = dataclasses.replace(
        phantom,
        image=np.ascontiguousarray(phantom.image[:, ::-1]),
        mask=np.ascontiguousarray(phantom.mask[:, ::-1]),
        lungs=np.ascontiguousarray(phantom.lungs[:, ::-1]),
        affine=affine,
    )
    write_ct_dicom(flipped, folder, key=("volcam-viewer-test flipped-z", str(folder)))  # UIDs new in each run
    files = sorted(folder.glob("*.dcm"))
    iop = [float(v) for v in pydicom.dcmread(files[0], stop_before_pixels=True).ImageOrientationPatient]
    assert np.allclose(iop, [1, 0, 0, 0, -1, 0]), iop
    pacs.upload(files)
    return pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


CTS = {"shipped": upload_shipped_ct, "flipped-z": upload_flipped_ct}


# -- geometry --------------------------------------------------------------------------------------------


def slice_normal(orientation: Iterable[float]) -> np.ndarray:
    """The unit normal (row × column direction) of a DICOM ImageOrientationPatient."""
    row, column = np.asarray(list(orientation), float).reshape(2, 3)
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def along(normal: np.ndarray, position: Iterable[float]) -> float:
    """A position's coordinate along the slice normal, in mm, rounded for use as a key."""
    return round(float(normal @ np.asarray(list(position), float)), DECIMALS)


Vector = Iterable[float]


def pixel_points(position: Vector, row: Vector, column: Vector, spacing: Vector, rc: np.ndarray) -> np.ndarray:
    """World (LPS mm) points of pixels (row index, column index) of a plane: ImagePositionPatient, its row
    and column directions, and PixelSpacing (between rows, between columns)."""
    rc = np.asarray(rc, float).reshape(-1, 2)
    origin, row_dir, column_dir = (np.asarray(list(v), float) for v in (position, row, column))
    between_rows, between_columns = spacing
    return origin + np.outer(rc[:, 1] * between_columns, row_dir) + np.outer(rc[:, 0] * between_rows, column_dir)


def point_set(points: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(p) for p in np.round(points, DECIMALS) + 0.0}  # + 0.0: no -0.0 beside 0.0


def lesion_points() -> np.ndarray:
    """The lesion mask's voxels (nonzero) as world LPS points: the same patient space for both CTs."""
    image = nib.Nifti1Image.from_filename(sd.file(sd.CT_MASK))
    ijk = np.argwhere(np.asarray(image.dataobj) > 0)
    ras = image.affine @ np.c_[ijk, np.ones(len(ijk))].T
    return (LPS_TO_RAS @ ras).T[:, :3]


def summary(pixels: np.ndarray) -> tuple[int, int, int]:
    """A slice's sum, minimum and maximum."""
    return int(pixels.sum(dtype=np.int64)), int(pixels.min()), int(pixels.max())


def only_file(folder: Path) -> pydicom.Dataset:
    """The one DICOM file volcam wrote in ``folder``."""
    (file,) = folder.glob("*.dcm")
    return pydicom.dcmread(file)


def frames(ds: pydicom.Dataset) -> tuple[np.ndarray, list[list[float]], tuple[float, float], np.ndarray]:
    """A multi-frame object's ImageOrientationPatient, per-frame ImagePositionPatient, PixelSpacing and
    stored pixel values (frames, rows, columns)."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    spacing = tuple(float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    per_frame = ds.PerFrameFunctionalGroupsSequence
    positions = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in per_frame]
    pixels = ds.pixel_array.reshape(len(positions), ds.Rows, ds.Columns)
    return orientation, positions, (spacing[0], spacing[1]), pixels


# -- the browser ---------------------------------------------------------------------------------------


def visit(site: OhifSite, study: str, folder: Path) -> dict[str, Any]:
    """Run ``ohif_drive.mjs`` on the study; its report. Node and Chromium run in a process group of their
    own, ended whatever happens."""
    shots = folder / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    written = folder / "report.json"
    request = {
        "url": site.url, "study": study, "profile": str(folder / "chromium-profile"), "screenshots": str(shots),
        "report": str(written),
    }  # fmt: skip
    node = subprocess.Popen(
        ["node", str(DRIVER)], cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, err = node.communicate(json.dumps(request), timeout=BROWSER_S)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        _, err = node.communicate()
        pytest.fail(f"the browser's visit took over {BROWSER_S} s; stderr: {err[-2000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)  # a Chromium helper left behind
    if not written.is_file():
        pytest.fail(f"ohif_drive.mjs exited with {node.returncode} and no report; stderr: {err[-2000:]}")
    report = json.loads(written.read_text())
    if report.get("error"):
        tail = "\n".join(report["console"][-25:])
        pytest.fail(f"in OHIF: {report['error']}\n-- the page's last console lines:\n{tail}", pytrace=False)
    return report


def keep_screenshots(report: dict[str, Any], case: str) -> None:
    """Also put the screenshots in $VOLCAM_VIEWER_SCREENSHOTS, when set, as <case>-<view>.png."""
    target = os.environ.get(SCREENSHOTS_VARIABLE)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for name, file in report["screenshots"].items():
            shutil.copyfile(file, Path(target) / f"{case}-{name}.png")


# -- what the viewer must show ----------------------------------------------------------------------------


def check_ct(volume: dict[str, Any], ct_files: Sequence[pydicom.Dataset], normal: np.ndarray) -> None:
    """OHIF's CT volume is loaded and holds the files' voxels, slice for slice (matched by position)."""
    assert volume["loaded"] and volume["dimensions"] == [128, 128, 48]
    assert np.allclose(volume["direction"][6:], normal), "the volume's slice axis is not the series' normal"
    # RescaleSlope 1, RescaleIntercept 0: the stored values are HU
    expected = {along(normal, f.ImagePositionPatient): summary(f.pixel_array) for f in ct_files}
    shown = {along(normal, s["position"]): (s["sum"], s["min"], s["max"]) for s in volume["slices"]}
    assert shown.keys() == expected.keys()
    differing = sorted(z for z in expected if shown[z] != expected[z])
    assert not differing, f"OHIF's CT slices differ from the files at {differing[:5]} mm along the normal"


def check_parametric_map(volume: dict[str, Any], pm: pydicom.Dataset, normal: np.ndarray, spacing: float) -> None:
    """OHIF's map volume has the file's frames where the file puts them (OHIF shows the stored values ×100),
    so its hottest slice is the file's hottest frame, and that is a lesion slice."""
    orientation, positions, _, pixels = frames(pm)
    assert np.allclose(slice_normal(orientation), normal)
    in_file = {along(normal, p): 100 * float(frame.max()) for p, frame in zip(positions, pixels, strict=True)}
    shown = {along(normal, s["position"]): s["max"] for s in volume["slices"]}
    file_hot, shown_hot = max(in_file, key=in_file.__getitem__), max(shown, key=shown.__getitem__)
    lesion_slices = sorted({along(normal, p) for p in lesion_points()})
    where = (
        f"along the slice normal {normal.round(3).tolist()}: OHIF's hottest slice at {shown_hot} mm, the file's "
        f"hottest frame at {file_hot} mm, lesion slices {lesion_slices[0]}..{lesion_slices[-1]} mm"
    )
    assert abs(shown_hot - file_hot) <= spacing, where
    assert min(abs(shown_hot - z) for z in lesion_slices) < spacing / 2, where
    assert shown.keys() == in_file.keys()
    moved = [z for z in in_file if not np.isclose(shown[z], in_file[z], rtol=1e-5, atol=1e-3)]
    assert not moved, f"{len(moved)} slices show another frame's values, e.g. at {moved[:3]} mm; {where}"


def check_segmentation(report: dict[str, Any], seg: pydicom.Dataset) -> None:
    """The SEG loads without OHIF's colour warning; its labelmap holds exactly the SEG file's voxels at their
    places on the CT, and they lie on the lesions."""
    said = [line for line in report["console"] if "RecommendedDisplayCIELabValue" in line]
    said += [n["message"] for n in report["notifications"] if "RecommendedDisplayCIELabValue" in n["message"]]
    assert not said, said
    assert not [n for n in report["notifications"] if n["type"] == "error"], report["notifications"]
    orientation, positions, spacing, pixels = frames(seg)
    in_file = point_set(
        np.concatenate([
            pixel_points(p, orientation[:3], orientation[3:], spacing, np.argwhere(frame))
            for p, frame in zip(positions, pixels, strict=True)
        ])
    )  # fmt: skip
    images = report["labelmap"]["images"]
    shown = point_set(
        np.concatenate([
            pixel_points(
                i["position"], i["rowCosines"], i["columnCosines"], (i["rowPixelSpacing"], i["columnPixelSpacing"]),
                np.asarray([v[:2] for v in i["voxels"]]).reshape(-1, 2),
            )
            for i in images
        ])
    )  # fmt: skip
    assert {v[2] for i in images for v in i["voxels"]} == {1}  # one segment
    assert in_file, "the SEG file marks no voxel"
    assert shown == in_file, (
        f"OHIF's labelmap: {len(shown)} voxels, {len(shown & in_file)} of them where the SEG file's {len(in_file)} are"
    )
    lesion = lesion_points()
    on_lesions = len(shown & point_set(lesion)) / len(shown)
    lesion_share = len(lesion) / (128 * 128 * 48)
    # a segment on the lesions: far more of it there than the lesions' share of the scan (about 1 %)
    assert on_lesions > 10 * lesion_share, f"{on_lesions:.1%} of the segment on lesions, {lesion_share:.1%} of the CT"


# -- the test --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CTS))
def test_ohif_shows_the_map_and_segmentation_on_the_lesions(case: str, viewer_pacs: Pacs, tmp_path: Path) -> None:
    pacs = viewer_pacs
    ct_folder, out = tmp_path / "ct", tmp_path / "out"
    study = CTS[case](pacs, ct_folder)
    code, _, err = run(
        "explain", ct_folder, "--model", sd.file(sd.CT_CARD), "--out", out,
        "--dicom", "parametric-map,segmentation", "--store", pacs.url,
    )  # fmt: skip
    assert code == 0, err
    with OhifSite(OHIF_DIST, pacs.rest, pacs.auth) as site:
        report = visit(site, study, tmp_path)
        failed = site.failures()
    keep_screenshots(report, case)
    assert not failed, f"Orthanc answered errors to OHIF's DICOMweb requests: {failed[:5]}"
    ct_files = [pydicom.dcmread(f) for f in sorted(ct_folder.glob("*.dcm"))]
    normal, spacing = slice_normal(ct_files[0].ImageOrientationPatient), float(ct_files[0].SpacingBetweenSlices)
    check_ct(report["ct"], ct_files, normal)
    check_parametric_map(report["pmap"], only_file(out / "gradcam_parametric-map"), normal, spacing)
    check_segmentation(report, only_file(out / "gradcam_segmentation"))
