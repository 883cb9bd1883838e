"""The property every fuzzed input must keep, checked from outside the process that reads it.

:class:`Oracle` keeps one child (``tests/fuzz/worker.py``) that has volcam imported and its address
space capped, sends it one request at a time and judges the answer:

- it worked, or it was refused with one line (a ``VolcamError``; the CLI's exit 2 and one
  ``volcam: error:`` line); never another exception, an internal error or a traceback;
- it answered within ``timeout`` seconds (else a hang: the child is killed and started again);
- the child is alive after it (a segfault, an abort or an exit() in a C library is a crash, also when
  the child has closed its answers and is still ending: OpenBLAS exits when it cannot allocate);
- it took no more memory than the input's result explains (:data:`BASE_MB` plus
  :data:`RESULT_FACTOR` times the result's arrays; a refusal gets :data:`BASE_MB`) and no
  allocation hit the cap (a ``MemoryError`` is a failure: the header check should have refused it);
- nothing changed beside the input but the command's ``--out`` folder, and nothing appeared in the
  child's working folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
#: Memory an input may take above the process's before, with no result (MiB): the readers' own
#: buffers, a decoder's tables, a model's activations for explain.
BASE_MB = 400.0
#: ... plus this many times the result's arrays (a read buffer, a float copy, a reorientation).
RESULT_FACTOR = 4.0
#: The child's address-space cap above what it holds once volcam is imported (MiB).
BUDGET_MB = 3072
#: Seconds a child that closed its answers (it is exiting) is given to end before it is judged.
EXIT_GRACE = 10.0


@dataclass
class Outcome:
    """How one input went: ``status`` ok / refused / failed; ``failure``: the broken property, if any."""

    status: str
    detail: str = ""
    seconds: float = 0.0
    peak_mb: float | None = None
    failure: str = ""  # exception, hang, crash, memory, outside-out

    @property
    def failed(self) -> bool:
        return bool(self.failure)


@dataclass
class Request:
    """One input to run: ``target`` (load, info, card, manifest, explain, cohort), the input ``path``,
    the CLI ``args`` for explain/cohort, the folder the input lies in (``root``, watched) and the
    ``out`` folder the command may write."""

    target: str
    path: Path
    root: Path
    args: list[str] = field(default_factory=list)
    out: Path | None = None


def tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Relative path → content hash (links by target) of everything under ``root`` but ``skip``."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None:
            dirnames[:] = [d for d in dirnames if here / d != skip]
        for name in dirnames + filenames:
            path = here / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "link:" + os.readlink(path)
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = "special"
    return found


class Oracle:
    """The child that runs inputs, restarted after a hang or a crash. Use as a context manager."""

    def __init__(self, scratch: Path, timeout: float = 30.0, budget_mb: int = BUDGET_MB) -> None:
        self.scratch = scratch
        self.timeout = timeout
        self.budget_mb = budget_mb
        self.cwd = scratch / "cwd"  # the child's working folder: nothing may appear there
        self.logs = scratch / "logs"  # VOLCAM_LOG_DIR: an internal error's log (already a failure)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> subprocess.Popen:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VOLCAM_LOG_DIR": str(self.logs), "PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1"}
        env.pop("VOLCAM_DICOMWEB_TOKEN", None)
        stderr = open(self.scratch / f"worker-{self.starts}.log", "wb")  # noqa: SIM115 (the child holds it)
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(self.budget_mb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, cwd=self.cwd, env=env, start_new_session=True,
        )  # fmt: skip
        stderr.close()
        self.starts += 1
        line = self._read(process, 180.0)
        if line is None or not json.loads(line).get("ready"):
            process.kill()
            raise RuntimeError(f"the fuzz worker did not start: see {self.scratch}/worker-{self.starts - 1}.log")
        return process

    @staticmethod
    def _read(process: subprocess.Popen, timeout: float) -> str | None:
        """One line from the child within ``timeout`` s; None on time-out or end of file."""
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        line = process.stdout.readline()
        return line.decode() if line else None

    def _no_answer(self, seconds: float) -> Outcome:
        """A hang (no answer within the time-out) or a crash (the child closed its answers first: it is
        dying, e.g. a C library's exit() or abort(), and may not have ended yet when the end of file is
        read; it is given :data:`EXIT_GRACE` seconds, not judged alive at once)."""
        assert self.process is not None
        if seconds >= self.timeout:
            self.stop()
            return Outcome("failed", f"no answer after {self.timeout:g} s", seconds, failure="hang")
        try:
            detail = f"the process died (status {self.process.wait(timeout=EXIT_GRACE)})"
        except subprocess.TimeoutExpired:
            detail = f"the process closed its answers and did not end within {EXIT_GRACE:g} s"
        self.stop()
        return Outcome("failed", detail, seconds, failure="crash")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def run(self, request: Request) -> Outcome:
        """Run one request and judge it (see the module's list)."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        before = tree(request.root, request.out)
        cwd_before = tree(self.cwd)
        payload = {"target": request.target, "path": str(request.path), "args": request.args}
        assert self.process.stdin is not None
        start = time.perf_counter()
        try:
            self.process.stdin.write((json.dumps(payload) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._read(self.process, self.timeout)
        seconds = time.perf_counter() - start
        if line is None:
            return self._no_answer(seconds)
        answer = json.loads(line)
        outcome = Outcome(answer["status"], answer["detail"], answer["seconds"], answer.get("peak_mb"))
        if outcome.status == "failed":
            memory = any(word in outcome.detail for word in ("MemoryError", "out of memory", "bad_alloc"))
            outcome.failure = "memory" if memory else "exception"
            return outcome
        if outcome.status == "refused" and "out of memory" in outcome.detail:  # the CLI's line for a MemoryError
            outcome.failure = "memory"
            return outcome
        allowed = BASE_MB + RESULT_FACTOR * answer.get("nbytes", 0) / 2**20
        if outcome.peak_mb is not None and outcome.peak_mb > allowed:
            outcome.failure = "memory"
            outcome.detail += f" (took {outcome.peak_mb:.0f} MiB, allowed {allowed:.0f} MiB)"
            return outcome
        changed = _difference(before, tree(request.root, request.out))
        appeared = _difference(cwd_before, tree(self.cwd))
        if changed or appeared:
            outcome.failure = "outside-out"
            outcome.detail += f" (changed beside the input: {sorted(changed)[:5]}, in cwd: {sorted(appeared)[:5]})"
        return outcome


def _difference(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def keep_failure(folder: Path, request: Request, outcome: Outcome, destination: Path) -> Path:
    """Copy a failing input's folder (the input and what it needs) to ``destination`` with a
    ``failure.json`` that says what was run and what broke; the copy's path."""
    digest = hashlib.sha256(outcome.detail.encode() + request.target.encode()).hexdigest()[:10]
    target = destination / f"{request.target}-{outcome.failure}-{digest}"
    if target.exists():
        return target
    kept = ("out",) if request.args else ("out", "scan.nii.gz")  # the scan an explain of a card reads
    shutil.copytree(folder, target, symlinks=True, ignore=shutil.ignore_patterns(*kept))
    sample = str(Path(__file__).resolve().parents[2] / "sample_data")
    args = [a.replace(str(folder), "{folder}").replace(sample, "{sample}") for a in request.args]
    record: dict[str, Any] = {
        "target": request.target, "path": str(request.path.relative_to(folder)), "args": args,
        "failure": outcome.failure, "detail": outcome.detail, "seconds": outcome.seconds,
    }  # fmt: skip
    (target / "failure.json").write_text(json.dumps(record, indent=1) + "\n")
    return target
