"""``import volcam`` stays light: the file libraries load only when a file needs them."""

from __future__ import annotations

import ast
import subprocess
import sys

HEAVY = ("pydicom", "nibabel", "SimpleITK", "matplotlib", "av", "typer")


def test_import_volcam_loads_no_file_library() -> None:
    code = f"import sys, volcam, volcam.io, volcam.viz.render; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def loaded_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running ``code``."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys; print('MODULES', sorted({{m.split('.')[0] for m in sys.modules}}))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    return set(ast.literal_eval(line.removeprefix("MODULES ")))


def test_the_front_doors_pay_only_for_what_their_command_uses() -> None:
    # `volcam --help` (2.0 s when `import volcam` imported torch through volcam.metrics) and `volcam info`
    # on a DICOM series (headers only) need neither torch nor MONAI; the names load on first use.
    from volcam import sample_data as sd

    assert not loaded_after("import volcam, volcam.cli, volcam.io") & {"torch", "monai", "numpy"}
    series = str(sd.file(sd.CT_DICOM))
    info = "\n".join(
        [
            "from volcam.cli import app",
            "try:",
            f"    app(['info', {series!r}])",
            "except SystemExit as end:",
            "    assert not end.code",
        ]
    )
    assert not loaded_after(info) & {"torch", "monai"}
    assert {"torch", "monai"} <= loaded_after(f"import volcam\nvolcam.load({series!r})")  # a scan is a MetaTensor
    assert "torch" in loaded_after("import volcam\nvolcam.methods()")


def test_a_lazy_name_is_the_function_whatever_was_imported_first() -> None:
    # volcam.io.load is a function and a submodule: importing the submodule first (volcam info does) must
    # not leave volcam.load or volcam.io.load the module.
    code = "import volcam.io.info, volcam, volcam.io\nprint(callable(volcam.load), callable(volcam.io.load))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
