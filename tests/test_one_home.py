"""One home per fact: each failure that came from a fact living in two places, and the checks that keep
the copies from coming back (results, readers, suffixes, localization, versions, module paths)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import volcam
from volcam import sample_data as sd
from volcam.errors import CardError, MethodError, first_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ct():
    return volcam.load(sd.file(sd.CT_NIFTI)), volcam.load_model(sd.file(sd.CT_CARD))


# -- one result protocol ------------------------------------------------------------------------------


def test_writers_renderers_and_metrics_take_every_result(tmp_path, ct) -> None:
    """`write_nifti(model.explain(scan, ...), ...)` failed: only CamResult was told apart by hasattr."""
    from volcam.maps.result import Explanation
    from volcam.viz.render import montage

    scan, model = ct
    explained = model.explain(scan, "gradcam")
    assert isinstance(explained, Explanation) and isinstance(explained.result, Explanation)
    path = volcam.io.write_nifti(explained, tmp_path / "m.nii.gz", like=scan)
    assert np.allclose(nib.load(path).affine, scan.affine.numpy(), atol=1e-4)
    assert "gradcam" in str(nib.load(path).header["descrip"])
    montage(scan, explained, tmp_path / "m.png", hottest=4)
    energy = volcam.metrics.energy_pointing_game(explained, volcam.load(sd.file(sd.CT_MASK)))
    assert 0 < float(energy.energy[0]) <= 1
    assert explained.describe().label == "covid" and explained.decision()[0] == 1

    clip_model = volcam.load_model(sd.file(sd.LUS_CARD))
    clip = volcam.load(sd.file(sd.LUS_DICOM))
    on_clip = clip_model.explain(clip, "gradcam")
    assert isinstance(on_clip.result, Explanation) and on_clip.result.samples == 1
    assert on_clip.describe().method == "gradcam"
    volcam.io.write_nifti(on_clip, tmp_path / "clip.nii.gz", like=clip)


def test_explain_classes_checks_options_like_explain() -> None:
    """explain refused gradient_sigma_mm for CAM; explain_classes took it silently."""
    from conftest import GapNet

    net, x = GapNet(3).eval(), torch.rand(1, 1, 8, 8, 8)
    with volcam.CamEngine(net, "features") as engine:
        for call in (engine.explain, engine.explain_classes):
            with pytest.raises(MethodError, match="'cam' uses no gradients, so gradient_sigma_mm"):
                call(x, "cam", gradient_sigma_mm=2)
        with pytest.raises(MethodError, match="option"):
            engine.explain_classes(x, "gradcam", no_such_option=1)


# -- one reader of scan lists -------------------------------------------------------------------------


def test_train_lcam_reads_a_folder_as_the_cohort_does(tmp_path) -> None:
    """A folder with a mask and notes: L-CAM training stopped on notes.txt and would train on the mask."""
    from volcam.io.tables import read_cases

    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        shutil.copy(sd.file(sd.CT_NIFTI), folder / name)
    shutil.copy(sd.file(sd.CT_MASK), folder / "a_mask.nii.gz")
    (folder / "notes.txt").write_text("scanned on the old machine")
    assert [c.case_id for c in read_cases(folder)] == ["a", "b"]
    card = tmp_path / "card.json"
    data = json.loads(sd.file(sd.CT_CARD).read_text())
    data.pop("lcam")
    shutil.copy(sd.file(data["weights"]), tmp_path / data["weights"])
    card.write_text(json.dumps(data))
    run = volcam.train_lcam(card, folder, "fm", epochs=1, out=tmp_path / "m.pt", update_card=False)
    saved = torch.load(run.path, weights_only=True)
    assert saved["info"]["images"] == 2  # the two scans, not the mask


def test_a_manifest_without_a_case_column_names_cases_after_their_images(tmp_path) -> None:
    from volcam.io.tables import read_cases

    shutil.copy(sd.file(sd.CT_NIFTI), tmp_path / "ct.nii.gz")
    (tmp_path / "list.csv").write_text("path,label\nct.nii.gz,covid\n")
    (case,) = read_cases(tmp_path / "list.csv")
    assert (case.case_id, case.image.name, case.label) == ("ct", "ct.nii.gz", "covid")


# -- one table of suffixes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["x.dcm", "x.dicom", "x.IMA", "x.nii", "x.nii.gz", "x.hdr", "x.img", "x.mha", "IM0001"]
)
def test_the_folder_reader_and_load_know_the_same_suffixes(tmp_path, name) -> None:
    from volcam.io.formats import format_of, is_image_name
    from volcam.io.tables import _is_scan

    path = tmp_path / name
    path.write_bytes(b"x")
    assert is_image_name(path) and _is_scan(path)
    assert format_of(path) in ("dicom", "nifti", "itk")
    (tmp_path / "notes.txt").write_text("x")
    assert not _is_scan(tmp_path / "notes.txt")


# -- one error helper ---------------------------------------------------------------------------------


def test_first_line_of_an_exception_with_an_empty_message() -> None:
    assert first_line(IndexError()) == "IndexError"
    assert first_line(ValueError("\n\n  why \nmore")) == "why"
    assert len(first_line(ValueError("x" * 500))) == 160


def test_an_empty_weights_file_is_one_line(tmp_path) -> None:
    data = json.loads(sd.file(sd.CT_CARD).read_text())
    (tmp_path / data["weights"]).write_bytes(b"")
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="the weights file is empty"):
        volcam.load_model(tmp_path / "card.json")


# -- one version, one path per module -----------------------------------------------------------------


def test_the_version_has_one_home() -> None:
    import napari_volcam
    from volcam._version import __version__

    assert volcam.__version__ == napari_volcam.__version__ == __version__
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "volcam._version.__version__"' in text


def test_no_module_imports_an_old_path_and_old_paths_still_work() -> None:
    """Every module imports cleanly on the new layout (no DeprecationWarning from volcam's own
    code); an old path still works, warns, and is the very same module."""
    code = """
import importlib, pkgutil, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import volcam, napari_volcam
    for package in (volcam, napari_volcam):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if "._qt" in info.name or info.name.endswith(("_widget", "__main__")):
                continue  # Qt widgets: covered by the napari tests
            importlib.import_module(info.name)
moved = [str(w.message) for w in caught if "moved to volcam." in str(w.message)]
print("MOVED", moved)
with warnings.catch_warnings(record=True) as caught:
    import volcam.models, volcam.render
print("OLD", volcam.models.Model is volcam.Model, any("moved to volcam.model.model" in str(w.message) for w in caught))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("MOVED", "OLD"))]
    assert lines == ["MOVED []", "OLD True True"], done.stdout[-2000:]


def test_layers_and_cycles_hold() -> None:
    """import-linter's contracts (layers by data flow, no sibling cycles, no phantoms at run time)."""
    linter = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(linter).exists():
        pytest.skip("import-linter is not installed")
    done = subprocess.run([linter], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]


# -- one home per default, one scoring -----------------------------------------------------------------


def test_shared_defaults_are_read_from_volcam_defaults(monkeypatch) -> None:
    """The pointing-game tolerance lived in five places and the L-CAM loss weights in three: a default
    changed in volcam.defaults now changes the CLI's --help, the API and the dock."""
    import importlib
    import inspect

    from typer.testing import CliRunner

    from volcam import defaults

    monkeypatch.setattr(defaults, "TOLERANCE_MM", 7.25)
    monkeypatch.setattr(defaults, "LCAM_LOSS", defaults.LCamLossWeights(area_weight=3.5, tv_weight=0.125))
    reloaded = {}
    for name in ("volcam.workflows.specs", "volcam.cli", "volcam.workflows.cohort.run", "volcam.workflows.evaluate",
                 "volcam.workflows.scoring", "volcam.methods.learned", "volcam.workflows.lcam_training",
                 "napari_volcam._controller"):  # fmt: skip
        reloaded[name] = importlib.reload(importlib.import_module(name))
    try:
        runner = CliRunner()
        for command in ("evaluate", "cohort"):
            shown = runner.invoke(reloaded["volcam.cli"].app, [command, "--help"], env={"COLUMNS": "200"}).output
            assert "7.25" in shown, command
        shown = runner.invoke(reloaded["volcam.cli"].app, ["train-lcam", "--help"], env={"COLUMNS": "200"}).output
        assert "3.5" in shown and "0.125" in shown
        for module, function in (
            ("volcam.workflows.specs", "CohortSpec"),  # run_cohort's choices and their defaults
            ("volcam.workflows.specs", "EvaluateSpec"),  # evaluate_to_folder's
            ("volcam.workflows.scoring", "score_map"),
        ):
            assert inspect.signature(getattr(reloaded[module], function)).parameters["tolerance_mm"].default == 7.25
        parameters = inspect.signature(reloaded["volcam.methods.learned"].lcam_loss).parameters
        assert (parameters["area_weight"].default, parameters["tv_weight"].default) == (3.5, 0.125)
        loss = reloaded["volcam.workflows.specs"].LCamSpec().loss  # train_lcam's
        assert (loss.area_weight, loss.tv_weight) == (3.5, 0.125)
        assert reloaded["napari_volcam._controller"].TOLERANCE_MM == 7.25
    finally:
        monkeypatch.undo()
        for name in reloaded:
            importlib.reload(importlib.import_module(name))


def test_evaluate_and_a_cohort_score_a_map_with_the_same_columns_and_numbers(tmp_path, ct) -> None:
    """The metrics were computed twice (evaluate, cohorts) and their columns listed twice."""
    from volcam.workflows.cohort.report import METRICS
    from volcam.workflows.evaluate import COLUMNS, evaluate_to_folder
    from volcam.workflows.scoring import column_descriptions

    assert tuple(c for c in COLUMNS if c in METRICS) == METRICS == tuple(column_descriptions())
    scan, model = ct
    mask = volcam.load(sd.file(sd.CT_MASK))
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image,mask\nct,{sd.file(sd.CT_NIFTI)},{sd.file(sd.CT_MASK)}\n")
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), tmp_path / "cohort", faithfulness_steps=5, progress=False)
    (row,) = evaluate_to_folder(scan, model, mask, tmp_path / "evaluate", methods=["gradcam"], steps=5)
    for column in METRICS:
        assert table[f"gradcam.{column}"][0] == pytest.approx(row[column], rel=1e-6, abs=1e-9), column


def test_the_front_doors_turn_an_error_into_the_same_line(capsys) -> None:
    """Three formatters (the CLI, the dock, a cohort's error column) said the same thing three ways."""
    from napari_volcam._controller import error_text
    from volcam.cli import report
    from volcam.errors import InputError, error_line
    from volcam.workflows.cohort.case import error_message

    mistake = InputError("scan.nii.gz: not a\nNIfTI file")
    bug = ZeroDivisionError("division by zero\nsecond line")
    for error, line in ((mistake, "scan.nii.gz: not a NIfTI file"), (bug, "ZeroDivisionError: division by zero")):
        assert error_line(error) == line == error_text(error) == error_message(error)
    assert report(mistake) == 2 and capsys.readouterr().err.strip() == "volcam: error: scan.nii.gz: not a NIfTI file"
    assert len(error_line(InputError("x" * 500), limit=300)) == 300
