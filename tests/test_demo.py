"""``volcam demo``: the shipped models on the shipped scans, pictures out, the heat on the lesions."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from volcam.cli import app


@pytest.mark.slow
def test_demo_leaves_pictures_with_the_heat_on_the_lesions(tmp_path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "pictures:" in result.stdout
    for part, methods in (("ct", 5), ("ultrasound", 3)):
        assert len(list((tmp_path / part).glob("*.png"))) == methods
        summary = json.loads((tmp_path / part / "summary.json").read_text())
        gradcam = summary["explanations"][0]
        assert gradcam["method"] == "gradcam" and gradcam["prediction"] == "covid"
        assert gradcam["localization"]["pointing_hit"]
        assert gradcam["localization"]["energy_in_mask"] > 3 * gradcam["localization"]["energy_baseline"]
