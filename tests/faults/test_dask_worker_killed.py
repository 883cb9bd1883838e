"""A cohort on a real Dask cluster (``dask scheduler`` and two ``dask worker`` processes started with
Dask's own commands on localhost) loses one worker to SIGKILL in the middle of a case.

The scheduler gives the lost case to the other worker (the killed one's nanny starts a new one), so the
run ends with every case done; the killed case's half-written temporary folder is gone by the end of
the run, and a resume finds nothing to do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import volcam
from faults.common import FAST, assert_resumed, assert_whole, cohort, finished, stop, temporaries, wait_until
from volcam import sample_data as sd

pytest.importorskip("distributed")
DASK = Path(sys.executable).with_name("dask")


def _start_cluster(folder: Path) -> tuple[list[subprocess.Popen], str]:
    """``dask scheduler`` and two ``dask worker`` (one thread each) on 127.0.0.1; (processes, address)."""
    scheduler_file = folder / "scheduler.json"
    logs = folder / "logs"
    logs.mkdir()
    processes = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            processes.append(subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT, cwd=folder))

    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
          "--scheduler-file", str(scheduler_file))  # fmt: skip
    wait_until(scheduler_file.is_file, 60, "the Dask scheduler")
    wait_until(lambda: "address" in scheduler_file.read_text(), 10, "the scheduler's address")
    address = json.loads(scheduler_file.read_text())["address"]
    for i in range(2):
        start(f"worker{i}", "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
              "--no-dashboard", "--name", f"fault-worker-{i}", "--memory-limit", "0")  # fmt: skip
    return processes, address


def _writer(out: Path) -> int | None:
    """The process id in a case's temporary folder name (``.caseNNN.volcam-<pid>-<hex>.tmp``): the worker
    writing that case now."""
    for name in temporaries(out):
        if name.startswith(".case") and name.endswith(".tmp"):
            return int(name.split(".volcam-")[1].split("-")[0])
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_case_loses_nothing_and_a_resume_has_nothing_to_do(tmp_path) -> None:
    if not DASK.is_file():
        pytest.skip(f"no dask command beside {sys.executable}")
    from distributed import Client

    manifest = cohort(tmp_path / "data", 8)
    out = tmp_path / "out"
    processes, address = _start_cluster(tmp_path)
    killed: dict[str, object] = {}
    try:
        with Client(address, timeout="30s") as client:  # closed before the run: one client per process
            client.wait_for_workers(2, timeout=120)
            workers = set(client.run(os.getpid).values())

        def kill_one() -> None:
            """After two cases, SIGKILL the worker that is writing a case (else either one)."""
            try:
                wait_until(lambda: len(finished(out, manifest)) >= 2, 240, "two finished cases", 0.01)
                wait_until(lambda: _writer(out) in workers, 30, "a case being written", 0.005)
            except AssertionError:
                pass
            pid = _writer(out)
            pid = pid if pid in workers else sorted(workers)[0]
            killed["case"] = [n for n in temporaries(out) if f"volcam-{pid}-" in n]
            killed["done before"] = len(finished(out, manifest))
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid

        killer = threading.Thread(target=kill_one, daemon=True)
        killer.start()
        table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, scheduler=address, **FAST)
        killer.join(30)
        assert "pid" in killed, "no worker was killed"
        assert killed["done before"] < 8, "the run ended before the kill"
        statuses = table.set_index("case")["status"]
        assert (statuses.drop("case002") == "ok").all(), list(table["error"])  # the killed case was done again
        assert_whole(out, manifest)  # the killed worker's temporary folder is gone too
        before = finished(out, manifest)
        again = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
        assert_resumed(again, before, out, manifest)
        assert again.attrs["computed"] == []
    finally:
        for process in reversed(processes):
            stop(process)
