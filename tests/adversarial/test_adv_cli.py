"""One error path: every exception that reaches the command line is one line, never a traceback.

User mistakes are ``volcam: error: <file or option>: <reason>`` with exit 2, checked before anything
heavy loads; an internal error is one line with a "please report" hint and the traceback in a log
file, exit 1; usage errors (through the real entry point) are one line too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adversarial.checks import assert_one_line
from cli_runs import run
from volcam import sample_data as sd


def explain(tmp_path: Path, *extra) -> tuple[int, str]:
    code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "o", *extra)
    return code, err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--device", "bogus"), "device 'bogus': not a device name"),
        (("--device", "cuda:7"), "device 'cuda:7': this machine (or this PyTorch build) has no cuda device"),
        (("--layer", "fc"), "layer 'fc' gives (1, 2), which has no spatial extent"),
        (("--layer", "avgpool"), "layer 'avgpool' gives (1, 32, 1, 1, 1)"),
        (("--method", " , "), "--method: no method named"),  # one option, two names
        (("--method", "gradcam", "--method", "nosuch"), "unknown CAM method 'nosuch'"),
        (("--gradient-sigma-mm", "nan"), "--gradient-sigma-mm: nan is not a width in mm"),
        (("--target", "pneumonia"), "has no class 'pneumonia'"),
    ],
)
def test_explain_option_mistakes_are_one_line(tmp_path, extra, expected, unchanged) -> None:
    unchanged(sd.path())
    code, err = explain(tmp_path, *extra)
    assert code == 2 and expected in assert_one_line(err)
    assert not (tmp_path / "o").exists()


def test_options_are_checked_before_the_model_or_scan_loads(tmp_path) -> None:
    """A wrong option is named even when the card or the scan would fail too: nothing heavy ran."""
    missing = tmp_path / "no_card.json"
    for args, expected in (
        (("--baseline", "foo"), "--baseline: 'foo'"),
        (("--insertion-baseline", "inf"), "--insertion-baseline: 'inf'"),
        (("--methods", ","), "--method: no method named"),
        (("--device", "bogus"), "device 'bogus'"),
    ):
        code, _, err = run("evaluate", tmp_path / "no_scan.nii.gz", "--model", missing, "--mask", tmp_path / "m",
                           "--out", tmp_path / "e", *args)  # fmt: skip
        assert code == 2 and expected in assert_one_line(err)
    afile = tmp_path / "taken"
    afile.write_text("x")
    code, _, err = run("explain", tmp_path / "no_scan.nii.gz", "--model", missing, "--out", afile)
    assert code == 2 and "taken: exists and is not a folder" in assert_one_line(err)


def test_cohort_and_train_lcam_option_mistakes(tmp_path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for args, expected in (
        (
            ("cohort", scans, "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "c", "--methods", ","),
            "--method: no method named",
        ),
        (("cohort", scans, "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "c", "--device", "tpu9"), "device"),
        (("train-lcam", sd.file(sd.CT_CARD), scans, "--variant", "xl"), "--variant: 'xl'; give fm or img"),
        (("train-lcam", sd.file(sd.CT_CARD), scans, "--target", "x"), "--target: 'x'"),
    ):
        code, _, err = run(*args)
        assert code == 2 and expected in assert_one_line(err)


def test_internal_errors_are_one_line_with_a_log(tmp_path, monkeypatch) -> None:
    """A bug (here an exception with an empty message deep inside) is one line and a log file."""
    from volcam.model.model import Model

    def broken(self, *args, **kwargs):
        raise IndexError()  # the message is empty: str(e).splitlines()[0] would itself fail

    monkeypatch.setattr(Model, "explain", broken)
    monkeypatch.setenv("VOLCAM_LOG_DIR", str(tmp_path / "logs"))
    code, err = explain(tmp_path)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("volcam: internal error: IndexError: IndexError (please report it; details in ")
    log = Path(lines[0].rsplit("details in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "def broken" not in err


def test_messages_from_file_values_stay_on_one_line(tmp_path) -> None:
    import json
    import shutil

    card = json.loads(sd.file(sd.CT_CARD).read_text())
    shutil.copy(sd.file(card["weights"]), tmp_path / card["weights"])
    card["name"] = "evil\nvolcam: error: forged second line"
    card["labels"] = ["normal", "covid"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", tmp_path / "card.json", "--out", tmp_path / "o",
                       "--target", "nothing")  # fmt: skip
    assert code == 2 and "evil volcam: error: forged second line has no class" in assert_one_line(err)


@pytest.mark.slow
def test_usage_errors_through_the_entry_point_are_one_line(tmp_path) -> None:
    """What a shell user sees from `volcam` itself: click's usage errors as one line, exit 2."""
    env = {**os.environ, "COLUMNS": "80"}
    script = "import sys; from volcam.cli import app; sys.argv[0] = 'volcam'; app()"
    for args, expected in (
        (
            ["cohort", "x", "--model", "c.json", "--out", "o", "--workers", "0"],
            "--workers: 0; give a whole number of 1 or more",
        ),
        (["explain"], "Missing argument 'input'"),
        (
            ["evaluate", "x", "--model", "c", "--mask", "m", "--out", "o", "--steps", "1"],
            "--steps: 1; give a whole number of 2 or more",
        ),
        (["explain", "x", "--model", "c", "--out", "o", "--nonsense"], "No such option: --nonsense"),
    ):
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 2, done.stderr
        assert expected in assert_one_line(done.stderr)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "Usage: volcam" in done.stdout  # `volcam` alone: the help


def test_a_folder_of_several_series_is_one_line_and_series_picks_one(tmp_path) -> None:
    """The message names the command line's --series (not the API's series=), and --series works."""
    from io_fixtures import make_series

    folder = tmp_path / "study"
    make_series(folder / "a", description="first")
    make_series(folder / "b", description="second", seed=1)
    code, err = explain_input(tmp_path, folder)
    assert code == 2 and "--series" in assert_one_line(err)
    code, err = explain_input(tmp_path, folder, "--series", "second")
    assert code == 0, err


def explain_input(tmp_path: Path, scan: Path, *extra) -> tuple[int, str]:
    code, _, err = run("explain", scan, "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "o", *extra)
    return code, err
