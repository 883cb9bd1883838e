"""The fuzz campaign's child process: runs one input at a time through volcam and says how it went.

Started by :class:`fuzz.oracle.Oracle` as ``python tests/fuzz/worker.py BUDGET_MB``. It imports
volcam and its readers once, then caps its own address space at what it uses plus ``BUDGET_MB``
(``RLIMIT_AS``: an allocation past it fails at once, so one that no header check covered shows as a
``MemoryError`` instead of a swapping machine; volcam's header checks see the limit through
:func:`volcam.io.memory.available_bytes`). Requests are JSON lines on stdin; answers are JSON lines
on a private copy of stdout (C libraries that print to fd 1 cannot corrupt them).

An answer's ``status``: ``ok`` (it worked), ``refused`` (a one-line ``VolcamError``; the CLI's exit 2
with one ``volcam: error:`` line) or ``failed`` (anything else: another exception, a message of
several lines, an internal error, a CLI traceback), with ``detail`` and the peak memory the input
took above what the process held before it (``peak_mb``: ``VmHWM`` reset through
``/proc/self/clear_refs``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _one_line(error: BaseException) -> str | None:
    """Why ``error`` is not an acceptable refusal, or None when it is one (a one-line VolcamError)."""
    from volcam.errors import VolcamError

    if not isinstance(error, VolcamError):
        return f"{type(error).__name__}: {str(error)[:300]}"
    text = str(error)
    if not text.strip():
        return f"{type(error).__name__} with an empty message"
    if "\n" in text or "\r" in text:
        return f"{type(error).__name__} of several lines: {text[:300]!r}"
    return None


def _where(error: BaseException) -> str:
    """The innermost frames of ``error``'s traceback inside volcam (or anywhere), for the report."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "volcam" in f.filename] or frames
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(ours[-3:]))


def _api(target: str, path: str) -> tuple[int, str]:
    """Run an API target; (bytes of the result's arrays, a summary)."""
    import volcam
    from volcam.io.info import describe
    from volcam.io.tables import read_cases

    if target == "load":
        image = volcam.load(path)
        nbytes = int(image.numel()) * int(image.element_size())
        return nbytes, f"{tuple(image.shape)} {image.dtype}"
    if target == "info":
        found, skipped = describe(path)
        return 0, f"{len(found)} found, skipped {skipped}"
    if target == "card":
        model = volcam.load_model(path)
        return 0, f"{model.name} {model.labels}"
    if target == "manifest":
        cases = read_cases(path)
        return 0, f"{len(cases)} cases"
    raise ValueError(f"unknown target {target}")


def _cli(args: list[str]) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from volcam.cli import app

    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _judge_cli(code: int, err: str) -> str | None:
    """Why a CLI run is not acceptable, or None: exit 0 (a cohort: or its statuses for failed cases), or
    exit 2 with exactly one error line."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    # volcam's own lines but its warnings (a progress bar shares stderr)
    errors = [line for line in lines if line.startswith("volcam: ") and not line.startswith("volcam: warning: ")]
    if "Traceback" in err:
        return f"a traceback on stderr: {err[-300:]!r}"
    from volcam.cli import COHORT_ALL_FAILED, COHORT_SOME_FAILED

    if code in (0, COHORT_SOME_FAILED, COHORT_ALL_FAILED):  # a cohort's failed cases are rows, its status says so
        return None if not errors else f"exit {code} with other lines on stderr: {errors[:2]!r}"
    if code == 2 and len(errors) == 1 and errors[0].startswith("volcam: error: "):
        return None
    return f"exit {code}: {' | '.join(errors)[:400]}"


def run(request: dict[str, Any]) -> dict[str, Any]:
    target, path = request["target"], request["path"]
    answer: dict[str, Any] = {"status": "ok", "detail": "", "nbytes": 0}
    measured = _reset_peak()
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if target in ("explain", "cohort"):
                code, _, err = _cli(request["args"])
                why = _judge_cli(code, err)
                if why is not None:
                    answer.update(status="failed", detail=why)
                elif code == 2:
                    answer.update(status="refused", detail=err.strip().splitlines()[-1][:300])
            else:
                answer["nbytes"], answer["detail"] = _api(target, path)
        except BaseException as error:  # judged, never raised: the parent decides
            if isinstance(error, KeyboardInterrupt):
                raise
            why = _one_line(error)
            if why is None:
                answer.update(status="refused", detail=str(error)[:300])
            else:
                answer.update(status="failed", detail=f"{why} at {_where(error)}")
    answer["seconds"] = time.perf_counter() - start
    answer["peak_mb"] = (_status_kb("VmHWM") - before) / 1024 if measured else None
    return answer


def main() -> None:
    budget_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # C libraries' prints go nowhere; answers have their own descriptor
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), write_through=True)
    sys.path[:0] = [str(ROOT / "src")]
    import torch

    torch.set_num_threads(1)
    import av  # noqa: F401  (the readers' libraries, imported before the limit)
    import nibabel  # noqa: F401
    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401

    import volcam
    import volcam.cli
    import volcam.io.dicom.reader
    import volcam.io.info
    import volcam.io.itk
    import volcam.io.nifti
    import volcam.io.video
    from volcam import sample_data as sd

    for card in (sd.CT_CARD, "lus_covid.card.json"):  # the models the explain targets use, warm
        with contextlib.suppress(Exception):
            volcam.load_model(sd.file(card))
    if budget_mb > 0:
        limit = _status_kb("VmSize") * 1024 + budget_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    answers.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        answers.write(json.dumps(run(json.loads(line))) + "\n")


if __name__ == "__main__":
    main()
