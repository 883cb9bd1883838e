"""Job specs (volcam.workflows.specs): one home per default, allowed value and check, for the command
line, the Python API and the napari dock alike."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import pytest
from typer.testing import CliRunner

from volcam.errors import InputError, MethodError
from volcam.workflows.specs import (
    CohortSpec,
    EvaluateSpec,
    ExplainSpec,
    JobSpec,
    LCamSpec,
    default,
    help_text,
    option_name,
)

COMMANDS: dict[str, type[JobSpec]] = {
    "explain": ExplainSpec,
    "evaluate": EvaluateSpec,
    "cohort": CohortSpec,
    "train-lcam": LCamSpec,
}


def test_a_spec_reads_what_a_person_types() -> None:
    spec = ExplainSpec.of(methods=["gradcam,gradcam++", "layercam"], target="1", layer="layer2,layer3")
    assert spec.methods == ("gradcam", "gradcam++", "layercam")
    assert spec.target == 1 and spec.layer == ("layer2", "layer3")
    assert ExplainSpec.of(layer=["layer2"]).layer == "layer2" and ExplainSpec().layer is None
    assert ExplainSpec.of(target="covid").target == "covid"
    # DICOM output is asked one way: kinds; a store with none named sends the parametric map
    assert ExplainSpec.of(dicom="segmentation, overlay").dicom == ("segmentation", "overlay")
    assert ExplainSpec.of(store="http://pacs/dicom-web").dicom == ("parametric-map",)
    assert ExplainSpec().dicom == ()
    # keywords that are no choice of the job are method options where the job takes them
    assert ExplainSpec.of(gradient_sigma_mm=2, n_samples=4).method_kwargs() == {
        "n_samples": 4,
        "gradient_sigma_mm": 2.0,
    }
    assert CohortSpec.of(gradient_sigma_mm=1).options == {"gradient_sigma_mm": 1}
    assert EvaluateSpec.of(baseline="0.5").baseline == 0.5


def test_a_spec_says_which_choices_change_an_output() -> None:
    """A resumable cohort fingerprints what changes its outputs: not where or how fast the cases run."""
    here, there = CohortSpec(), CohortSpec.of(scheduler="local", workers=4, prefetch=False)
    assert here.choices(outputs_only=True) == there.choices(outputs_only=True)
    assert {"scheduler", "workers", "prefetch"} <= set(there.choices()) - set(there.choices(outputs_only=True))
    assert here.choices(outputs_only=True) != CohortSpec.of(tolerance_mm=3).choices(outputs_only=True)
    # the same spec from a reloaded copy of the module (IPython's autoreload) is taken as it is
    import importlib

    import volcam.workflows.specs as specs

    reloaded = importlib.reload(specs).CohortSpec.of(tolerance_mm=3)
    assert type(reloaded) is not CohortSpec and CohortSpec.of(reloaded).tolerance_mm == 3
    with pytest.raises(InputError, match=r"not a CohortSpec; give one, or the choices as keywords"):
        CohortSpec.of(["gradcam"])  # type: ignore[arg-type]  # the old positional methods


@pytest.mark.parametrize(
    ("spec", "choices", "error", "message"),
    [
        (ExplainSpec, {"methods": "gradcam,nosuchcam"}, MethodError, "--method: unknown CAM method 'nosuchcam'"),
        (ExplainSpec, {"methods": ""}, InputError, "--method: no method named"),
        (ExplainSpec, {"gradient_sigma_mm": float("nan")}, InputError, "--gradient-sigma-mm: nan is not a width"),
        (ExplainSpec, {"dicom": "picture"}, InputError, "--dicom: unknown DICOM kind 'picture'"),
        (EvaluateSpec, {"baseline": "grey"}, InputError, "--baseline: 'grey'; give zero, mean, blur or a number"),
        (EvaluateSpec, {"insertion_baseline": "inf"}, InputError, "--insertion-baseline: 'inf'"),
        (EvaluateSpec, {"steps": 1}, InputError, "--steps: 1; give a whole number of 2 or more"),
        (EvaluateSpec, {"tolerance_mm": -1}, InputError, "--tolerance-mm: -1 is not a distance in mm"),
        (EvaluateSpec, {"colour": "red"}, InputError, "colour: not a choice of this job"),
        (CohortSpec, {"workers": 2}, InputError, "--workers: needs --scheduler local"),
        (CohortSpec, {"workers": 0, "scheduler": "local"}, InputError, "--workers: 0; give a whole number of 1"),
        (CohortSpec, {"faithfulness_steps": -1}, InputError, "--faithfulness-steps: -1"),
        (LCamSpec, {"variant": "sm"}, InputError, "--variant: 'sm'; give fm or img"),
        (LCamSpec, {"target": "guess"}, InputError, "--target: 'guess'; give prediction or label"),
        (LCamSpec, {"validation": 0.95}, InputError, "--validation: 0.95; give a fraction from 0 to 0.9"),
        (LCamSpec, {"epochs": 0}, InputError, "--epochs: 0"),
        (LCamSpec, {"layer": "layer2,layer3"}, InputError, "--layer: L-CAM trains at one layer"),
    ],
)
def test_a_wrong_choice_is_one_line_naming_its_option(spec, choices, error, message) -> None:
    with pytest.raises(error) as raised:
        spec.of(**choices)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_a_job_is_declared_from_its_spec(command: str) -> None:
    """Name, help line and the default the help shows come from the spec; an option left out is None,
    so the spec's default applies (the CLI holds no default of its own)."""
    import typer

    from volcam.cli import app

    spec = COMMANDS[command]
    click = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    params = {p.name: p for p in click.params}
    declared = [f.name for f in fields(spec) if f.name in params]
    assert len(declared) >= 3, declared
    for name in declared:
        param = params[name]
        assert param.default is None, (command, name)
        assert option_name(spec, name) in param.opts, (command, name, param.opts)
        assert param.help.startswith(help_text(spec, name)), (command, name)
        value = default(spec, name)
        if value not in (None, (), False):
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else "on" if value is True else value
            assert param.help.endswith(f"(default: {shown})"), (command, name, param.help)
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    if command != "train-lcam":
        assert "--method,--methods" in shown and "comma-separated" in shown and "--layer" in shown, command


# A default changed in its spec (here: by a subclass put in its place before anything else imports it)
# must change the command line's --help, the Python API and the napari dock.
_CHANGED_DEFAULT = """
import dataclasses, json, sys
import volcam.workflows.specs as specs

methods = dataclasses.fields(specs.ExplainSpec)[0]
assert methods.name == "methods"

@dataclasses.dataclass(frozen=True)
class Changed(specs.ExplainSpec):
    methods: tuple = dataclasses.field(default=("hirescam",), metadata=methods.metadata)

specs.ExplainSpec = Changed

from typer.testing import CliRunner
from volcam.cli import app
from volcam import sample_data as sd
import volcam
from volcam.workflows.explain_folder import explain_to_folder
from napari_volcam._controller import DockController

shown = CliRunner().invoke(app, ["explain", "--help"], env={"COLUMNS": "200"}).output
scan, model = volcam.load(sd.file(sd.CT_NIFTI)), volcam.load_model(sd.file(sd.CT_CARD))
summary = explain_to_folder(scan, model, sys.argv[1])
print(json.dumps({
    "help": "(default: hirescam)" in shown,
    "api": [r["method"] for r in summary["explanations"]],
    "dock": DockController().method,
}))
"""


def test_a_default_changed_in_its_spec_changes_the_cli_the_api_and_the_dock(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHANGED_DEFAULT, str(tmp_path / "out")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"help": True, "api": ["hirescam"], "dock": "hirescam"}
