"""SIGKILL of the whole ``volcam cohort`` process at random points (seeds 1, 2, 3: while it starts, while a
case is read, explained or written, while the report is written), each run resuming the last, then a
resume to the end.

After every kill the output folder holds whole cases only (a killed writer's temporaries are hidden
names the next run removes); no finished case is ever done again; the last resume does exactly the
cases still missing, and none is lost.
"""

from __future__ import annotations

import subprocess
import time
from random import Random

import pytest

import volcam
from faults.common import (
    FAST,
    assert_resumed,
    assert_whole,
    cohort,
    cohort_command,
    environment,
    finished,
    stop,
    temporaries,
)
from volcam import sample_data as sd


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path) -> None:
    manifest = cohort(tmp_path / "data", 8)
    out = tmp_path / "out"
    done: dict[str, tuple[int, int, int]] = {}
    kills = []
    for seed in (1, 2, 3):
        delay = Random(seed).uniform(2.0, 14.0)  # the interpreter and torch start in a few seconds
        process = subprocess.Popen(
            cohort_command(manifest, out), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        ended = process.poll() is not None
        stop(process, sig=9)
        kills.append((seed, round(delay, 1), len(done), "ended first" if ended else "killed"))
        if not out.exists():
            continue
        assert_whole(out, manifest, settled=False)  # a kill leaves temporaries, never a half case
        now = finished(out, manifest)
        for case, identity in done.items():
            assert now.get(case) == identity, f"{case} was finished and was done again (kills: {kills})"
        done = now
    assert any(k[-1] == "killed" for k in kills), kills
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
    assert_resumed(table, done, out, manifest)
    assert not temporaries(out)
