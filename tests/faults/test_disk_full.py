"""The output file system fills up part-way through a cohort (a small tmpfs mounted for the test; root
only: skipped otherwise, with the reason).

After two cases a ballast file takes every free byte but 16 KiB (a case's record would fit, its map
does not). The cases that then cannot be written are error
rows that may pass (``write: ... No space left on device``; never recorded as finished, nothing
half-written), and the report cannot be written either: one line. With room again, a resume writes
exactly the cases that were not finished and the report.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

import volcam
from faults.common import FAST, assert_resumed, assert_whole, cohort, finished, wait_until
from volcam import sample_data as sd
from volcam.errors import OutputError


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs at ``tmp_path/disk``, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int = 16 << 10) -> Path:
    """A file that takes every free byte of ``folder``'s file system but ``leave``: room for a small file
    (a case's record), none for a map."""
    ballast = folder / "ballast"
    descriptor = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        chunk = b"\0" * (1 << 12)
        with contextlib.suppress(OSError):
            while os.write(descriptor, chunk):
                pass
        os.ftruncate(descriptor, max(0, os.fstat(descriptor).st_size - leave))
    finally:
        os.close(descriptor)
    return ballast


@pytest.mark.slow
def test_a_disk_that_fills_part_way_loses_no_case(small_disk, tmp_path) -> None:
    manifest = cohort(tmp_path / "data", 6)
    out = small_disk / "out"
    filled: list[Path] = []

    def fill_after_two() -> None:
        wait_until(lambda: len(finished(out, manifest)) >= 2, 240, "two finished cases", 0.01)
        filled.append(_fill(small_disk))

    filler = threading.Thread(target=fill_after_two, daemon=True)
    filler.start()
    with pytest.raises(OutputError, match="No space left on device") as caught:
        volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, prefetch=False, **FAST)
    filler.join(30)
    assert filled and "\n" not in str(caught.value)
    assert_whole(out, manifest)
    before = finished(out, manifest)
    assert 2 <= len(before) < 6
    for case in before:  # what was recorded before the disk filled is whole; nothing recorded a full disk
        assert "No space left" not in (out / case / "case.json").read_text()

    filled[0].unlink()  # room again
    again = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, prefetch=False, **FAST)
    assert_resumed(again, before, out, manifest)
    assert (out / "results.parquet").is_file() and (out / "summary.md").is_file()
