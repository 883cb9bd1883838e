"""Outputs never destroy inputs, appear whole or not at all, and write through symlinks.

Every test hashes the trees it must not touch (``unchanged``) and checks what appears under the
output: nothing half-written, no temporaries left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import volcam
from adversarial.checks import assert_one_line
from cli_runs import run
from volcam import sample_data as sd
from volcam.errors import CardError, OutputError


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """A folder holding the shipped CT (DICOM series) and the NIfTI copy: the user's inputs."""
    folder = tmp_path / "scans"
    shutil.copytree(sd.file(sd.CT_DICOM), folder / "ct_dicom")
    shutil.copy(sd.file(sd.CT_NIFTI), folder / "ct.nii.gz")
    return folder


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """The demo CT card and its weights, without L-CAM modules, in their own folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    data = json.loads(sd.file(sd.CT_CARD).read_text())
    data.pop("lcam")
    shutil.copy(sd.file(data["weights"]), folder / data["weights"])
    (folder / "card.json").write_text(json.dumps(data))
    return folder / "card.json"


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".volcam-" in p.name and p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize("where", ["the input folder", "inside the input", "holding the input"])
def test_explain_never_writes_over_its_input(tmp_path, scans, card, where, unchanged) -> None:
    out = {
        "the input folder": scans / "ct_dicom",
        "inside the input": scans / "ct_dicom" / "maps",
        "holding the input": scans,
    }[where]
    unchanged(scans, card.parent)
    code, _, err = run("explain", scans / "ct_dicom", "--model", card, "--out", out)
    line = assert_one_line(err)
    assert code == 2 and "volcam never writes over its inputs" in line


def test_explain_never_replaces_a_users_folder_or_file(tmp_path, card, unchanged) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    afile = tmp_path / "report.pdf"
    afile.write_bytes(b"%PDF-1.4")
    unchanged(mine, afile, card.parent)
    for out, expected in ((mine, "holds files volcam did not write"), (afile, "exists and is not a folder")):
        code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out)
        assert code == 2 and expected in assert_one_line(err)


def test_explain_replaces_its_own_earlier_folder_whole(tmp_path, card) -> None:
    out = tmp_path / "out"
    assert run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out, "--method", "gradcam++")[0] == 0
    assert run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out)[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [".volcam.json", "gradcam.nii.gz", "gradcam.png", "summary.json"]  # nothing stale mixed in
    assert leftovers(tmp_path) == []


def test_a_failing_second_method_leaves_nothing(tmp_path, card, unchanged) -> None:
    """The card has no L-CAM module: lcam-fm fails after gradcam was written; no file may remain."""
    out = tmp_path / "out"
    unchanged(card.parent)
    code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out, "--method", "gradcam",
                       "--method", "lcam-fm")  # fmt: skip
    assert code == 2 and "no trained L-CAM-Fm module" in assert_one_line(err)
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_earlier_result_survives_a_failed_rerun(tmp_path, card) -> None:
    out = tmp_path / "out"
    assert run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, _ = run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out, "--method", "lcam-img")
    assert code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_interrupted_run_leaves_the_previous_state(tmp_path, card, monkeypatch) -> None:
    """Ctrl-C in the middle (here: while the second method runs) removes what was written so far."""
    from volcam.model.model import Model

    calls = []
    original = Model.explain

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Model, "explain", interrupted)
    out = tmp_path / "out"
    code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out, "--method", "gradcam",
                       "--method", "gradcam++")  # fmt: skip
    assert code == 130 and "interrupted" in err
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_sigterm_during_explain_leaves_nothing(tmp_path, card) -> None:
    """A real process killed with SIGTERM while it writes: no output, no temporaries."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "volcam.cli", "explain", str(sd.file(sd.CT_NIFTI)), "--model", str(card),
               "--out", str(out), "--method", "gradcam", "--method", "smoothgradcam++"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the transaction has started: a temporary folder beside out
    assert process.poll() is None, "explain finished before it could be interrupted"
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("volcam: interrupted")
    assert not out.exists() and leftovers(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, card) -> None:
    out = tmp_path / "out"
    dead = 2**22 + 7  # above pid_max's default: no such process
    stale = tmp_path / f".out.volcam-{dead}-deadbeef.tmp"
    stale.mkdir()
    (stale / "gradcam.nii.gz").write_bytes(b"half")
    assert run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", out)[0] == 0
    assert not stale.exists() and leftovers(tmp_path) == []


def test_api_writers_refuse_their_source(tmp_path, scans, unchanged) -> None:
    scan = volcam.load(scans / "ct.nii.gz")
    series = volcam.load(scans / "ct_dicom")
    unchanged(scans)
    with pytest.raises(OutputError, match="the output is the input"):
        volcam.io.write_nifti(scan[:1].clone(), scans / "ct.nii.gz", like=scan)
    with pytest.raises(OutputError, match="the output is the input"):
        volcam.io.write_dicom(series[:1].clone() * 0, scans / "ct_dicom", series, overwrite=True)
    with pytest.raises(OutputError, match="the output lies inside the input"):
        volcam.io.write_dicom(series[:1].clone() * 0, scans / "ct_dicom" / "derived", series)


def test_write_dicom_replaces_only_a_series_it_wrote(tmp_path, unchanged) -> None:
    from volcam.io.dicom.instances import dicom_instances

    series = volcam.load(sd.file(sd.CT_DICOM))
    mine = tmp_path / "copy_of_my_series"
    shutil.copytree(sd.file(sd.CT_DICOM), mine)
    unchanged(mine)
    with pytest.raises(OutputError, match="holds files volcam did not write"):
        volcam.io.write_dicom(series[:1] * 0, mine, series, overwrite=True)
    derived = volcam.io.write_dicom(series[:1] * 0, tmp_path / "derived", series)
    volcam.io.write_dicom(series[:1] * 0, derived, series, kind="overlay", overwrite=True)  # its own: replaced
    assert len(dicom_instances(derived)) == series.shape[3]


def test_symlinked_output_file_is_written_through(tmp_path) -> None:
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    real = tmp_path / "real" / "map.nii.gz"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "map.nii.gz"
    link.symlink_to(real)
    volcam.io.write_nifti(scan[:1] * 0, link, like=scan)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes()[:2] == b"\x1f\x8b"  # the target now holds the gzip'd NIfTI


# -- cohort ------------------------------------------------------------------------------------------


def test_cohort_into_its_input_folder_is_refused(tmp_path, scans, card, unchanged) -> None:
    unchanged(scans, card.parent)
    for out in (scans, scans / "results"):
        code, _, err = run("cohort", scans, "--model", card, "--out", out)
        assert code == 2 and "volcam never writes over its inputs" in assert_one_line(err)


def test_cohort_never_replaces_a_folder_it_did_not_make(tmp_path, card, unchanged) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sd.file(sd.CT_NIFTI), scans / "ct.nii.gz")
    out = tmp_path / "out"
    assert run("cohort", scans, "--model", card, "--out", out, "--faithfulness-steps", "0")[0] == 0
    case = next(p for p in out.iterdir() if p.is_dir())
    shutil.rmtree(case)
    case.mkdir()  # the user's own folder, named like the case
    (case / "my_notes.txt").write_text("keep me")
    unchanged(case, scans, card.parent)
    code, _, err = run("cohort", scans, "--model", card, "--out", out, "--faithfulness-steps", "0")
    assert code == 2 and "was not written by volcam for case" in assert_one_line(err)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("...")
    unchanged(foreign)
    code, _, err = run("cohort", scans, "--model", card, "--out", foreign)
    assert code == 2 and "holds files a cohort run did not write" in assert_one_line(err)


def test_cohort_case_ids_cannot_escape_the_output(tmp_path, card, unchanged) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\n../escaped,{sd.file(sd.CT_NIFTI)}\n")
    unchanged(tmp_path / "cases.csv")
    code, _, err = run("cohort", manifest, "--model", card, "--out", tmp_path / "out")
    assert code == 2 and "cannot name a folder" in assert_one_line(err)
    assert not (tmp_path / "escaped").exists()


# -- train-lcam -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_lcam_writes_through_a_linked_card(tmp_path, card) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for k in range(4):
        shutil.copy(sd.file(sd.CT_NIFTI), images / f"ct{k}.nii.gz")
    link = tmp_path / "linked.card.json"
    link.symlink_to(card)
    code, _, err = run("train-lcam", link, images, "--epochs", "1", "--batch-size", "2")
    assert code == 0, err
    assert link.is_symlink() and Path(os.readlink(link)) == card
    recorded = json.loads(card.read_text())["lcam"]["fm"]
    assert (card.parent / recorded["weights"]).is_file()  # relative to the real card


def test_train_lcam_never_writes_over_an_input(tmp_path, card, unchanged) -> None:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sd.file(sd.CT_NIFTI), images / "ct.nii.gz")
    unchanged(images, card.parent)
    for out in (card, card.parent / "ct_covid.pt", images / "lcam.pt"):
        with pytest.raises(OutputError, match="volcam never writes over its inputs"):
            volcam.train_lcam(card, images, "fm", epochs=1, out=out)


def test_untrusted_model_never_runs_in_a_cohort(tmp_path, unchanged) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    marker = tmp_path / "PWNED"
    definition = {"_target_": "os.system", "command": f"touch {marker}"}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": definition}))
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sd.file(sd.CT_NIFTI), scans / "ct.nii.gz")
    with pytest.raises(CardError, match="is not a network in monai"):
        volcam.run_cohort(scans, bundle, tmp_path / "out", progress=False)
    assert not marker.exists()
