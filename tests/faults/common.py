"""What every fault test checks: the output folder holds whole cases only, a resume does the rest and
leaves finished cases alone, and nothing is lost.

- :func:`assert_whole`: every case folder (not a hidden temporary) has its ``case.json`` and every file
  it lists, each map a readable NIfTI of finite values; with ``settled``, no temporary is left either;
- :func:`finished`: the cases recorded as done (ok or a permanent error), each with the identity of its
  ``case.json`` (inode, size, modification time): a case redone gets a new one;
- :func:`assert_resumed`: a resume computed exactly the cases that were not finished, left the finished
  ones as they were, and every case of the manifest is now ok or a permanent error, none lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

import volcam
from volcam import sample_data as sd
from volcam.io.atomic import is_temporary
from volcam.testing.cohorts import synthetic_cohort
from volcam.workflows.cohort import CASE_FILE

FAST = {"methods": ["gradcam"], "faithfulness_steps": 0, "progress": False}
CORRUPT = "case002"  # a scan that is not a NIfTI: a permanent error row, finished like an ok case
SOURCE = str(Path(volcam.__file__).parents[1])


def cohort(folder: Path, n: int, **kwargs) -> Path:
    """``n`` chest-CT phantoms with masks, case002's scan damaged; the manifest."""
    manifest = synthetic_cohort(folder, n, **kwargs)
    if n > 2:
        (folder / f"{CORRUPT}.nii.gz").write_bytes(b"not a NIfTI file")
    return manifest


def case_ids(manifest: Path) -> list[str]:
    return list(pd.read_csv(manifest)["case"])


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if is_temporary(p.name)) if out.is_dir() else []


def assert_whole(out: Path, manifest: Path, *, settled: bool = True) -> None:
    """Nothing half-written: each case folder whole and readable (and, ``settled``, no temporaries)."""
    if settled:
        assert not temporaries(out), f"temporaries left in {out}: {temporaries(out)}"
    for case in case_ids(manifest):
        folder = out / case
        if not folder.exists():
            continue
        record = json.loads((folder / CASE_FILE).read_text())  # a folder without it would be half-written
        assert record["case"] == case and record["status"] in ("ok", "error")
        assert not record.get("transient"), f"{case}: a failure that may pass was recorded as finished"
        for name in record["files"]:
            assert (folder / name).is_file(), f"{case}: {name} is listed and missing"
            if name.endswith(".nii.gz"):
                assert np.isfinite(np.asarray(nib.load(folder / name).dataobj)).all(), f"{case}/{name}"
        listed = {*record["files"], CASE_FILE}
        present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        assert present <= listed, f"{case}: files it does not list: {present - listed}"


def finished(out: Path, manifest: Path) -> dict[str, tuple[int, int, int]]:
    """Case → identity of its ``case.json`` (inode, size, mtime), for the cases recorded as done."""
    found = {}
    for case in case_ids(manifest):
        path = out / case / CASE_FILE
        if path.is_file():
            info = path.stat()
            found[case] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def assert_resumed(table: pd.DataFrame, before: dict[str, tuple[int, int, int]], out: Path, manifest: Path) -> None:
    """The resume did the unfinished cases only, left the finished ones, and lost none."""
    cases = case_ids(manifest)
    assert sorted(table.attrs["computed"]) == sorted(set(cases) - set(before)), (table.attrs["computed"], before)
    after = finished(out, manifest)
    for case, identity in before.items():
        assert after.get(case) == identity, f"{case} was finished and was done again"
    assert set(after) == set(cases), f"not finished: {set(cases) - set(after)}"
    statuses = table.set_index("case")["status"]
    lost = [c for c in cases if statuses[c] != "ok" and c != CORRUPT]
    assert not lost, f"cases lost: {lost}: {list(table.set_index('case').loc[lost, 'error'])}"
    if CORRUPT in cases:
        assert statuses[CORRUPT] == "error"
    assert_whole(out, manifest)


def cohort_command(manifest: Path, out: Path, *extra: str) -> list[str]:
    """``volcam cohort`` as a process (the demo CT model, Grad-CAM, no faithfulness curves)."""
    command = [sys.executable, "-m", "volcam", "cohort", str(manifest), "--model", str(sd.file(sd.CT_CARD))]
    return [*command, "--out", str(out), "--methods", "gradcam", "--faithfulness-steps", "0", *extra]


def environment(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (SOURCE, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """End a process this test started (by its id), waiting for it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(condition, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
