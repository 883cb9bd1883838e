"""One case needs more memory than the process may have (its address space capped with ``RLIMIT_AS`` in
a child ``volcam cohort``) while the others finish.

The big case is an error row that may pass (out of memory: not recorded as finished, no folder); the
small ones are done. A resume without the cap does the big case only.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import volcam
from faults.common import FAST, assert_resumed, assert_whole, cohort, cohort_command, environment, finished
from volcam import sample_data as sd
from volcam.io.nifti import save_nifti

#: The child imports what a cohort uses, then caps its address space at what it holds plus this.
HEADROOM_MB = 700

_CAPPED = """
import resource, sys
import torch, monai, pandas, pyarrow, matplotlib, nibabel, highdicom  # what a cohort loads, before the cap
import volcam.cli, volcam.workflows.cohort.run, volcam.workflows.cohort.report, volcam.io.nifti
from volcam import sample_data
volcam.load_model(sample_data.file(sample_data.CT_CARD))
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
sys.argv = ["volcam", *sys.argv[2:]]
volcam.cli.main()
"""


@pytest.mark.slow
def test_a_case_over_the_memory_limit_is_tried_again_and_the_others_finish(tmp_path) -> None:
    manifest = cohort(tmp_path / "data", 5)
    # the big case: a 512 x 512 x 320 CT at 0.7 x 0.7 x 1 mm (160 MiB as int16, 320 MiB as float)
    big = np.full((512, 512, 320), -900, np.int16)
    big[200:300, 180:330, 100:220] = -300
    save_nifti(big, np.diag([0.7, 0.7, 1.0, 1.0]), tmp_path / "data" / "big.nii.gz")
    del big
    rows = pd.read_csv(manifest)
    rows.loc[len(rows)] = {"case": "big", "image": "big.nii.gz", "mask": "", "label": "covid"}
    rows.to_csv(manifest, index=False)
    out = tmp_path / "out"

    command = [sys.executable, "-c", _CAPPED, str(HEADROOM_MB), *cohort_command(manifest, out)[3:]]
    done = subprocess.run(command, env=environment(MALLOC_ARENA_MAX="2"), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr[-2000:]
    table = pd.read_parquet(out / "results.parquet").set_index("case")
    assert table.loc["big", "status"] == "error" and "memory" in table.loc["big", "error"], table.loc["big", "error"]
    assert not (out / "big").exists()  # not recorded as finished
    others = table.drop(index=["big", "case002"])
    assert (others["status"] == "ok").all(), list(others["error"])
    assert_whole(out, manifest)

    before = finished(out, manifest)
    again = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, **FAST)
    assert_resumed(again, before, out, manifest)
    assert again.attrs["computed"] == ["big"]
