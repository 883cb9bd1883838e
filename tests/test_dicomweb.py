"""DICOMweb against a real PACS (Orthanc, started by ``tests/pacs.py``): load, info, explain → store, cohorts, napari.

Every failure the issue names (an unreachable server, a wrong study UID, a 401, a server that dies in
the middle of a transfer, an address that is not DICOMweb) must be one line and leave nothing
written: no output folder, no retrieved file, nothing new in the PACS.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

import volcam
from cli_runs import one_line_error, run
from pacs import DyingServer, Pacs, free_port
from volcam import sample_data as sd
from volcam.io.dicom.web import PASSWORD_VARIABLE, TOKEN_VARIABLE, USER_VARIABLE, parse_address

CT_FOLDER = Path(sd.file(sd.CT_DICOM))
PATIENT = "PHANTOM"  # the shipped CT's PatientName and PatientID: never in a message or a file name
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


def retrieved_files(pid: int | None = None) -> set[Path]:
    """The files process ``pid`` (this one by default) keeps of retrieved series: only its own, since
    other test workers retrieve series at the same time."""
    root = Path(tempfile.gettempdir()) / f"volcam-dicomweb-{os.getuid()}"
    owner = os.getpid() if pid is None else pid
    return {p for p in root.glob(f".retrieved.volcam-{owner}-*/**/*") if p.is_file()} if root.is_dir() else set()


def source_uids(folder: Path) -> tuple[str, str, str, set[str]]:
    """(study, series, frame of reference, SOP instance UIDs) of a DICOM series folder."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm"))]
    first = headers[0]
    return (
        first.StudyInstanceUID,
        first.SeriesInstanceUID,
        first.FrameOfReferenceUID,
        {h.SOPInstanceUID for h in headers},
    )


def wado(pacs: Pacs, study: str, series: str) -> list[pydicom.Dataset]:
    """A series' instances from the PACS with dicomweb-client (WADO-RS), as a viewer would fetch them."""
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.auth = pacs.auth
    return list(DICOMwebClient(pacs.url, session=session).iter_series(study, series))


# -- load ---------------------------------------------------------------------------------------------


def test_study_and_series_addresses_load_what_the_folder_loads(pacs) -> None:
    folder = volcam.load(CT_FOLDER)
    before = retrieved_files()
    for url in (pacs.study_url(), pacs.series_url()):
        scan = volcam.load(url)
        assert scan.dtype == folder.dtype and scan.shape == folder.shape == (1, 128, 128, 48)
        np.testing.assert_array_equal(scan.numpy(), folder.numpy())
        np.testing.assert_allclose(scan.affine.numpy(), folder.affine.numpy(), atol=1e-9)
        for key in ("study_uid", "series_uid", "frame_of_reference_uid", "modality", "spacing", "problems"):
            assert scan.meta[key] == folder.meta[key], key
        assert scan.meta["filename_or_obj"] == pacs.series_url()
        # the writers reference the source instances through these: real files, in slice order
        sources = [Path(f) for f in scan.meta["source_files"]]
        assert [pydicom.dcmread(f).SOPInstanceUID for f in sources] == [
            pydicom.dcmread(f).SOPInstanceUID for f in folder.meta["source_files"]
        ]
    # kept in a private folder whose names hold no UID and no patient identifier
    for path in retrieved_files() - before:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for part in path.relative_to(tempfile.gettempdir()).parts:
            assert pacs.study not in part and pacs.series not in part and PATIENT not in part


def test_retrieved_files_go_when_the_process_ends_and_a_killed_ones_with_the_next(pacs) -> None:
    import subprocess
    import sys

    root = Path(tempfile.gettempdir()) / f"volcam-dicomweb-{os.getuid()}"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])  # its process id no longer runs
    finished.wait()
    stale = root / f".retrieved.volcam-{finished.pid}-0123abcd.tmp"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "00001.dcm").write_bytes(b"left by a killed process")
    code = "import sys, volcam; scan = volcam.load(sys.argv[1]); print(len(scan.meta['source_files']))"
    child = subprocess.Popen(
        [sys.executable, "-c", code, pacs.series_url()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0 and out.strip() == "48", err
    assert not stale.exists() and not retrieved_files(child.pid)


def test_a_study_of_two_series_is_one_error_naming_both_and_series_picks_one(pacs) -> None:
    with pytest.raises(volcam.SeriesError) as caught:
        volcam.load(pacs.study_url(pacs.pair_study))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(pacs.study_url(pacs.pair_study))
    assert "2 series in the study" in message and "/series/<SeriesInstanceUID>" in message
    assert all(uid in message for uid in pacs.pair_series) and "'first copy'" in message
    assert PATIENT not in message
    second = volcam.load(pacs.study_url(pacs.pair_study), series="second copy")
    assert second.meta["series_uid"] == pacs.pair_series[1]
    np.testing.assert_array_equal(second.numpy(), volcam.load(CT_FOLDER).numpy())


def test_volcam_info_on_addresses_says_what_it_says_of_the_folder(pacs) -> None:
    code, folder, err = run("info", CT_FOLDER)
    assert code == 0, err
    code, series, err = run("info", pacs.series_url())
    assert code == 0, err
    assert series == folder and "128 × 128 × 48" in series and PATIENT not in series
    code, pair, err = run("info", pacs.study_url(pacs.pair_study))
    assert code == 0, err
    assert pair.splitlines()[0] == f"{pacs.study_url(pacs.pair_study)}: 2 series"
    assert all(uid in pair for uid in pacs.pair_series) and pair.count("problems     none") == 2


def test_parse_address_keeps_the_root_and_refuses_what_is_not_one() -> None:
    address = parse_address("HTTP://pacs:8042/dicom-web/studies/1.2.3/series/4.5/")
    assert (address.root, address.study, address.series) == ("http://pacs:8042/dicom-web", "1.2.3", "4.5")
    assert parse_address("https://h/wado/studies/1.2", study=True).series is None
    assert parse_address("http://h:1/dicom-web", study=False).root == "http://h:1/dicom-web"
    for bad, words in (
        ("http://h/dicom-web", "not a DICOMweb study or series address"),
        ("http://h/dicom-web/studies/1.2/instances/3", "not a DICOMweb study or series address"),
        ("http://h/dicom-web/studies/PHANTOM", "is not a DICOM UID"),
        ("http://h/dicom-web/studies/1.2?PatientID=x", "no query"),
        ("http://user:hunter2@h/dicom-web/studies/1.2", USER_VARIABLE),
    ):
        with pytest.raises(volcam.InputError) as caught:
            parse_address(bad)
        assert words in str(caught.value) and "hunter2" not in str(caught.value)


# -- the failures the issue names: one line, nothing written --------------------------------------------


def _explain_fails(url: str, out: Path, *extra) -> str:
    before = retrieved_files()
    code, _, err = run("explain", url, "--model", sd.file(sd.CT_CARD), "--out", out, *extra)
    line = one_line_error(code, err)
    assert not out.exists() and retrieved_files() == before  # nothing written, nothing kept
    return line


def test_unreachable_server(pacs, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web/studies/{pacs.study}"
    line = _explain_fails(url, tmp_path / "out")
    assert "cannot reach the DICOMweb server http://127.0.0.1:" in line and "Connection refused" in line
    # a store that cannot be reached fails before the series is retrieved (nothing kept in this process)
    nowhere = f"http://127.0.0.1:{free_port()}/dicom-web"
    line = _explain_fails(pacs.series_url(), tmp_path / "out", "--store", nowhere)
    assert line == f"volcam: error: {nowhere}: cannot reach the DICOMweb server {nowhere[:-10]} (Connection refused)"


def test_wrong_study_and_series_uid(pacs, tmp_path) -> None:
    line = _explain_fails(pacs.study_url("1.2.3.4.5"), tmp_path / "out")
    assert line.endswith(f"{pacs.study_url('1.2.3.4.5')}: no such study on the server")
    line = _explain_fails(pacs.series_url(series="1.2.3.4.5"), tmp_path / "out")
    assert "no series '1.2.3.4.5' in the study; there are: " + pacs.series in line


def test_a_401_names_the_variables_and_never_their_values(pacs, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(USER_VARIABLE)
    monkeypatch.delenv(PASSWORD_VARIABLE)
    line = _explain_fails(pacs.series_url(), tmp_path / "out")
    assert f"asks for credentials (HTTP 401); set {TOKEN_VARIABLE}" in line
    monkeypatch.setenv(USER_VARIABLE, pacs.user)
    monkeypatch.setenv(PASSWORD_VARIABLE, "wrong-password-1234")
    line = _explain_fails(pacs.series_url(), tmp_path / "out")
    assert f"refused the credentials from {USER_VARIABLE}/{PASSWORD_VARIABLE} (HTTP 401)" in line
    assert "wrong-password-1234" not in line
    monkeypatch.setenv(TOKEN_VARIABLE, "secret-token-5678")
    line = _explain_fails(pacs.series_url(), tmp_path / "out")
    assert f"refused the credentials from {TOKEN_VARIABLE} (HTTP 401)" in line and "secret-token-5678" not in line
    # storing: the same line, before anything is explained
    line = _explain_fails(str(CT_FOLDER), tmp_path / "out", "--store", pacs.url)
    assert f"{pacs.url}: the server refused the credentials from {TOKEN_VARIABLE} (HTTP 401)" in line


def test_a_server_that_dies_in_the_middle_of_a_transfer(pacs, tmp_path) -> None:
    with DyingServer(pacs, limit=300_000) as dying:
        url = f"{dying.url}/studies/{pacs.study}/series/{pacs.series}"
        line = _explain_fails(url, tmp_path / "out")
        assert dying.died.is_set()
    assert "the transfer broke off after " in line and " of 48 instances" in line and "nothing was kept" in line


def test_a_server_that_dies_while_the_results_are_stored(pacs, tmp_path) -> None:
    study, _ = pacs.copy_of_ct(tmp_path / "copy")
    with DyingServer(pacs, limit=2_000) as dying:
        line = _explain_fails(str(tmp_path / "copy"), tmp_path / "out", "--store", dying.url)
        assert dying.died.is_set()
    assert f"{dying.url}: " in line and "broke off" in line
    assert len(pacs.series_of(study)) == 1  # nothing arrived in the PACS


def test_an_address_that_is_not_dicomweb(pacs, tmp_path) -> None:
    # Orthanc's own REST API answers /studies, but not in DICOMweb
    line = _explain_fails(f"{pacs.rest}/studies/{pacs.study}", tmp_path / "out")
    assert f"not a DICOMweb service at {pacs.rest} (HTTP 404)" in line
    # a plain web server
    (tmp_path / "site").mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=tmp_path / "site"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        web = f"http://127.0.0.1:{server.server_address[1]}"
        line = _explain_fails(f"{web}/dicom-web/studies/{pacs.study}", tmp_path / "out")
        assert f"not a DICOMweb service at {web}/dicom-web" in line
        line = _explain_fails(str(CT_FOLDER), tmp_path / "out", "--store", web)
        assert f"{web}: not a DICOMweb service" in line
    finally:
        server.shutdown()
        server.server_close()


# -- explain → store → read back -------------------------------------------------------------------------


def test_explain_stores_the_parametric_map_and_segmentation_on_the_source_study(pacs, tmp_path) -> None:
    study, series, frame_of_reference, instances = source_uids(CT_FOLDER)
    copy_study, copy_series = pacs.copy_of_ct(tmp_path / "copy")  # the shipped study keeps one series
    _, _, _, copy_instances = source_uids(tmp_path / "copy")
    out = tmp_path / "out"
    code, stdout, err = run(
        "explain", pacs.series_url(copy_study, copy_series), "--model", sd.file(sd.CT_CARD), "--out", out,
        "--dicom", "parametric-map,segmentation", "--store", pacs.study_url(copy_study),
    )  # fmt: skip
    assert code == 0, err
    assert f"stored 2 DICOM instance(s) in {pacs.url}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stored"] == {"url": pacs.url, "instances": 2}
    listed = {item["0020000E"]["Value"][0]: item for item in pacs.series_of(copy_study)}
    assert len(listed) == 3 and copy_series in listed
    found = {}
    for uid in set(listed) - {copy_series}:
        (instance,) = wado(pacs, copy_study, uid)
        found[instance.SOPClassUID] = instance
    assert set(found) == {PARAMETRIC_MAP, SEGMENTATION}
    for kind, instance in (("parametric-map", found[PARAMETRIC_MAP]), ("segmentation", found[SEGMENTATION])):
        assert instance.StudyInstanceUID == copy_study  # filed with the source study
        assert instance.FrameOfReferenceUID == frame_of_reference  # the copy keeps the CT's frame of reference
        (referenced,) = instance.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == copy_series
        assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} <= copy_instances
        assert not {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} & instances
        local = pydicom.dcmread(next((out / f"gradcam_{kind}").glob("*.dcm")))
        assert instance.SOPInstanceUID == local.SOPInstanceUID and instance.SeriesInstanceUID == local.SeriesInstanceUID
        for pixels in ("PixelData", "FloatPixelData"):
            assert instance.get(pixels) == local.get(pixels)
    assert series not in listed and study != copy_study


# -- cohorts ----------------------------------------------------------------------------------------------


FAST = {"faithfulness_steps": 0, "prefetch": False, "progress": False}


def test_a_cohort_with_an_address_row_gives_the_folder_rows_results_and_stores_them(pacs, tmp_path) -> None:
    study, series = pacs.copy_of_ct(tmp_path / "remote")
    local_study, _ = pacs.copy_of_ct(tmp_path / "local")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\nremote,{pacs.series_url(study, series)}\nlocal,local\n")
    before = retrieved_files()
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), tmp_path / "out", store=pacs.url, **FAST)
    rows = table.set_index("case")
    assert list(rows["status"]) == ["ok", "ok"], list(rows["error"])
    assert rows.loc["remote", "prediction"] == rows.loc["local", "prediction"]
    for column in [c for c in rows.columns if c.startswith("p_")]:
        assert rows.loc["remote", column] == pytest.approx(rows.loc["local", column], abs=1e-6)
    assert retrieved_files() == before  # the retrieved series went when its case was done
    for case, uid in (("remote", study), ("local", local_study)):
        record = json.loads((tmp_path / "out" / case / "case.json").read_text())
        assert record["stored"] == 1 and "gradcam_parametric-map/0001.dcm" in record["files"]
        assert len(pacs.series_of(uid)) == 2
    # a manifest row with an address and no case id is one line naming the row
    (tmp_path / "bad.csv").write_text(f"image\n{pacs.series_url()}\n")
    with pytest.raises(volcam.InputError, match=r"bad\.csv, row 2: a DICOMweb address needs a case id"):
        volcam.run_cohort(tmp_path / "bad.csv", sd.file(sd.CT_CARD), tmp_path / "bad", **FAST)


def test_cohort_store_to_a_server_that_dies_is_a_case_error_tried_again(pacs, tmp_path) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\nct,{CT_FOLDER}\n")
    with DyingServer(pacs, limit=2_000) as dying:
        table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), tmp_path / "out", store=dying.url, **FAST)
    (row,) = table.to_dict("records")
    assert row["status"] == "error" and row["error"].startswith(f"store: {dying.url}: ") and "broke off" in row["error"]
    assert not (tmp_path / "out" / "ct").exists()  # not finished: the next run tries again
    assert len(pacs.series_of(pacs.study)) == 1


def test_volcam_cohort_store_option_checks_the_server_first(tmp_path) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\nct,{CT_FOLDER}\n")
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    code, _, err = run("cohort", manifest, "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "out", "--store", url)
    assert "cannot reach the DICOMweb server" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


# -- napari --------------------------------------------------------------------------------------------------


def test_napari_opens_an_address_like_the_folder(pacs, make_napari_viewer) -> None:
    pytest.importorskip("napari")
    from napari_volcam._reader import napari_get_reader

    assert napari_get_reader(pacs.series_url()) is not None
    assert napari_get_reader("http://example.org/index.html") is None
    viewer = make_napari_viewer()
    (remote,) = viewer.open(pacs.series_url(), plugin="volcam")
    (local,) = viewer.open(str(CT_FOLDER), plugin="volcam")
    np.testing.assert_array_equal(remote.data, local.data)
    np.testing.assert_allclose(remote.scale, local.scale)
    np.testing.assert_allclose(remote.translate, local.translate)
    assert PATIENT not in remote.name


def test_the_dock_controller_retrieves_with_a_status_line_per_instance(pacs) -> None:
    pytest.importorskip("napari")
    from napari_volcam._controller import DockController

    steps = DockController().open_url(pacs.series_url())
    statuses = []
    while True:
        try:
            statuses.append(next(steps))
        except StopIteration as done:
            data, kwargs, kind = done.value
            break
    assert statuses[0] == "retrieving from the PACS: 0 of 48 instance(s) …"
    assert statuses[-1] == "retrieving from the PACS: 48 of 48 instance(s) …" and len(statuses) == 49
    assert kind == "image" and data.shape == (48, 128, 128) and PATIENT not in kwargs["name"]


@pytest.mark.slow
def test_the_docks_url_field_opens_a_series_in_a_worker_with_progress(pacs, make_napari_viewer, qtbot) -> None:
    pytest.importorskip("pytestqt")
    from napari_volcam._qt import ExplainWidget

    viewer = make_napari_viewer()
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="volcam", area="right")
    panel = widget.explain_panel
    panel.url.setText(pacs.series_url())
    worker = panel.open_url()
    assert worker is not None and not panel.open_button.isEnabled()  # running, in a worker thread
    assert worker.pbar.desc.startswith("volcam: PACS")  # napari's progress bar counts the instances
    qtbot.waitUntil(lambda: panel.url_worker is None, timeout=120_000)
    assert panel.open_button.isEnabled()
    (layer,) = viewer.layers
    np.testing.assert_array_equal(layer.data, viewer.open(str(CT_FOLDER), plugin="volcam")[0].data)
    assert panel.image.currentText() == layer.name  # ready to explain
    # a failure is the status line and a notification, and the field stays usable
    panel.url.setText(pacs.study_url("1.2.3.4.5"))
    panel.open_url()
    qtbot.waitUntil(lambda: panel.url_worker is None, timeout=120_000)
    assert "no such study on the server" in widget.controller.last_error and len(viewer.layers) == 2
