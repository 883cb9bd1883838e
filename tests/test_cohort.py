"""Cohorts: a 20-case synthetic cohort with two corrupt files, resuming, Dask, and a run killed mid-way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import volcam
from volcam import sample_data as sd
from volcam.testing.cohorts import synthetic_cohort
from volcam.workflows.cohort import CASE_FILE

CORRUPT = {"case004": "garbage", "case011": "truncated"}
FAST = {"methods": ["gradcam"], "faithfulness_steps": 0, "progress": False}


def _corrupt(folder: Path) -> None:
    (folder / "case004.nii.gz").write_bytes(b"this is not a NIfTI file at all")
    whole = (folder / "case011.nii.gz").read_bytes()
    (folder / "case011.nii.gz").write_bytes(whole[: len(whole) // 3])


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """20 phantoms (normal/COVID alternately) with masks and labels; two scans damaged."""
    path = synthetic_cohort(tmp_path_factory.mktemp("cohort") / "data", 20)
    _corrupt(path.parent)
    return path


@pytest.fixture(scope="module")
def first_run(manifest, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("first") / "out"
    return out, volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)


def _files(out: Path) -> dict[str, int]:
    """Every file under the case folders → its modification time (ns)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("case*/*")}


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in table.columns if c.endswith("_s")])


@pytest.mark.slow
def test_twenty_cases_two_corrupt(first_run, manifest) -> None:
    out, table = first_run
    assert len(table) == 20 and list(table["case"]) == [f"case{i:03d}" for i in range(20)]
    assert (table["status"] == "ok").sum() == 18
    failed = table[table["status"] != "ok"].set_index("case")
    assert set(failed.index) == set(CORRUPT)
    for case in CORRUPT:
        message = failed.loc[case, "error"]
        assert message.startswith("load: ") and f"{case}.nii.gz" in message, message  # names the file
        assert "\n" not in message
    assert sorted(table.attrs["computed"]) == sorted(table["case"])
    ok = table[table["status"] == "ok"]
    assert ok["prediction"].isin(["normal", "covid"]).all()
    assert np.allclose(ok["p_normal"] + ok["p_covid"], 1.0, atol=1e-5)
    assert ok["correct"].mean() > 0.8  # the demo model tells the phantoms apart
    covid = ok[ok["label"] == "covid"]
    assert covid["gradcam.pointing_hit"].notna().all() and covid["gradcam.pointing_hit"].mean() > 0.5
    assert ok.loc[ok["label"] == "normal", "gradcam.pointing_hit"].isna().all()  # empty masks: no localization
    # The map is on the scan's own grid, with its affine; the table on disk is the one returned.
    scan = nib.load(manifest.parent / "case001.nii.gz")
    cam = nib.load(out / "case001" / "gradcam.nii.gz")
    assert cam.shape == scan.shape and np.allclose(cam.affine, scan.affine, atol=1e-4)
    assert cam.get_fdata().min() >= 0 and cam.get_fdata().max() <= 1
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), table)
    assert list(pd.read_csv(out / "results.csv")["case"]) == list(table["case"])
    summary = (out / "summary.md").read_text()
    assert "20 (18 ok, 2 failed)" in summary and "accuracy" in summary and "AUC (covid vs normal)" in summary
    assert "case004" in summary and "case011" in summary
    assert (out / "distributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "case004" / CASE_FILE).read_text())["status"] == "error"


@pytest.mark.slow
def test_rerun_does_no_work_and_redoes_a_deleted_case(first_run, manifest, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    before = _files(out)
    again = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
    assert again.attrs["computed"] == [] and len(again.attrs["skipped"]) == 20
    assert _files(out) == before  # nothing rewritten, the corrupt cases not retried either
    pd.testing.assert_frame_equal(again, first_run[1])
    shutil.rmtree(out / "case007")
    (out / "case012" / "gradcam.nii.gz").unlink()  # one file of a case missing: that case too
    redone = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
    assert sorted(redone.attrs["computed"]) == ["case007", "case012"]
    pd.testing.assert_frame_equal(_comparable(redone), _comparable(first_run[1]))
    # Other settings (here a second method) make a new fingerprint: every case again.
    changed = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **{**FAST, "methods": ["gradcam", "layercam"]})
    assert len(changed.attrs["computed"]) == 20 and "layercam.pointing_hit" in changed


@pytest.mark.slow
def test_local_cluster_gives_the_same_results(first_run, manifest, tmp_path) -> None:
    out = tmp_path / "dask"
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, scheduler="local", workers=2, **FAST)
    reference = _comparable(first_run[1])
    here = _comparable(table)
    # Sums of float32 maps over other thread counts (2 here, 1 per worker) may differ in the last bits.
    pd.testing.assert_frame_equal(here, reference, rtol=0, atol=1e-7)
    for case in table.loc[table["status"] == "ok", "case"]:
        a = nib.load(first_run[0] / case / "gradcam.nii.gz")
        b = nib.load(out / case / "gradcam.nii.gz")
        assert np.array_equal(a.affine, b.affine)
        assert np.array_equal(a.get_fdata(), b.get_fdata()), case  # the maps themselves: bit for bit
    # A rerun in-process finds the cluster's cases finished: the fingerprint does not depend on where they ran.
    again = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
    assert again.attrs["computed"] == []
    start = time.perf_counter()
    nothing = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, scheduler="local", workers=2, **FAST)
    assert nothing.attrs["computed"] == [] and nothing.attrs["cases_seconds"] < 1  # no cluster started for it
    assert time.perf_counter() - start < 60


def _finished(out: Path) -> int:
    return sum(1 for p in out.glob("case*/" + CASE_FILE))


def _start(manifest: Path, out: Path) -> subprocess.Popen:
    source = str(Path(volcam.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "volcam", "cohort", str(manifest), "--model", str(sd.file(sd.CT_CARD))]
    command += ["--out", str(out), "--methods", "gradcam", "--faithfulness-steps", "0"]
    # Ctrl-C as at a terminal, however the suite was started: a shell starting it in the background
    # (`.ci/run &`) hands its children SIGINT ignored, and Python then never installs its handler
    ctrl_c = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c
    )


def _wait_for(process: subprocess.Popen, out: Path, cases: int) -> None:
    deadline = time.monotonic() + 240
    while _finished(out) < cases:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.1)


def _repeated(manifest: Path, copies: int) -> tuple[Path, list[str], set[str]]:
    """The manifest's rows ``copies`` times over under new case ids (the same scans): a run long enough
    that a signal sent after its first cases lands mid-run on a fast machine too (20 small phantoms take
    about 1.5 s). Returns the manifest, its case ids and those whose scan is damaged."""
    header, *rows = manifest.read_text().splitlines()
    cases, damaged, lines = [], set(), [header]
    for i in range(copies * len(rows)):
        original, rest = rows[i % len(rows)].split(",", 1)
        cases.append(f"case{i:03d}")
        damaged |= {cases[-1]} if original in CORRUPT else set()
        lines.append(f"{cases[-1]},{rest}")
    long = manifest.with_name(f"manifest_x{copies}.csv")
    long.write_text("\n".join(lines) + "\n")
    return long, cases, damaged


@pytest.mark.slow
def test_interrupted_and_killed_runs_resume_with_no_corrupt_file(manifest, tmp_path) -> None:
    out = tmp_path / "out"
    manifest, cases, damaged = _repeated(manifest, 3)
    # Ctrl-C: exits 130 with one line, every case folder whole, no temporaries.
    process = _start(manifest, out)
    _wait_for(process, out, 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(".") and ".tmp" in p.name]
    # A kill gives no chance to clean up; whatever it leaves must not count as done.
    process = _start(manifest, out)
    _wait_for(process, out, _finished(out) + 2)
    process.kill()
    process.wait(timeout=60)
    done_before = {p.parent.name for p in out.glob("case*/" + CASE_FILE)}
    assert len(done_before) < len(cases)
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
    assert set(table.attrs["computed"]) == set(cases) - done_before
    assert (table["status"] == "ok").sum() == len(cases) - len(damaged)
    assert set(table.loc[table["status"] != "ok", "case"]) == damaged
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.name.endswith(".old")]
    for case in table.loc[table["status"] == "ok", "case"]:  # every map whole and readable
        assert np.isfinite(nib.load(out / case / "gradcam.nii.gz").get_fdata()).all()
        assert json.loads((out / case / CASE_FILE).read_text())["status"] == "ok"
