"""Every failure the fuzz campaigns found, as a fixed input: each must now keep the property.

Each folder of ``tests/fuzz/regressions/`` is an input as the campaign kept it (``benchmarks/fuzz.py``
writes them so: the input's files and ``failure.json``: the target, the CLI arguments with
``{folder}``/``{sample}`` for the folder and ``sample_data/``, and what broke). Run through the same
oracle: one line or the right result, no hang, no crash, no memory past the header check, nothing
outside ``--out``. What each one was, and the fix, is in its ``failure.json`` (``found``, ``fixed``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fuzz.oracle import Oracle, Request
from fuzz.seeds import SAMPLE

REGRESSIONS = Path(__file__).with_name("regressions")
CASES = sorted(p.parent for p in REGRESSIONS.glob("*/failure.json"))


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_a_failure_once_found_keeps_the_property(case: Path, oracle: Oracle, tmp_path: Path) -> None:
    record = json.loads((case / "failure.json").read_text())
    folder = tmp_path / "input"
    shutil.copytree(case, folder, ignore=shutil.ignore_patterns("failure.json"))
    out = folder / "out"
    args = [a.replace("{folder}", str(folder)).replace("{sample}", str(SAMPLE)) for a in record["args"]]
    request = Request(record["target"], folder / record["path"], folder, args, out if args else None)
    outcome = oracle.run(request)
    assert not outcome.failed, f"{case.name} ({record.get('found', record['detail'])}): {outcome.detail}"
