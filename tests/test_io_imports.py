"""``import volcam`` stays light: the file libraries load only when a file needs them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pydicom", "nibabel", "SimpleITK", "matplotlib", "av", "typer")


def test_import_volcam_loads_no_file_library() -> None:
    code = f"import sys, volcam, volcam.io, volcam.viz.render; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
