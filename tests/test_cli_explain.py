"""``volcam explain`` and ``volcam methods``: files out in the scan's geometry, user errors in one line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cli_runs import one_line_error, run
from volcam import sample_data as sd


def test_explain_writes_map_montage_dicom_and_summary(tmp_path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(
        "explain", sd.file(sd.CT_NIFTI), "--model", sd.file(sd.CT_CARD), "--method", "gradcam",
        "--method", "gradcam++", "--gradient-sigma-mm", "3", "--dicom", "parametric-map", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "prediction: covid" in stdout
    summary = json.loads((out / "summary.json").read_text())
    first = summary["explanations"][0]
    assert first["prediction"] == "covid" and set(first["probabilities"]) == {"normal", "covid"}
    assert first["method"] == "gradcam" and first["layer"] and first["timings_s"]["explain"] > 0
    assert [e["method"] for e in summary["explanations"]] == ["gradcam", "gradcam++"]
    scan = nib.load(sd.file(sd.CT_NIFTI))
    cam = nib.load(out / "gradcam.nii.gz")
    assert cam.shape == scan.shape and np.allclose(cam.affine, scan.affine, atol=1e-5)
    assert (out / "gradcampp.png").stat().st_size > 10_000
    # --dicom: the parametric map, one multi-frame instance with a frame per slice
    written = sorted((out / "gradcam_parametric-map").iterdir())
    assert [p.name for p in written] == ["0001.dcm"] and first["files"]["dicom"] == {
        "parametric-map": str(out / "gradcam_parametric-map")
    }
    assert int(pydicom.dcmread(written[0], stop_before_pixels=True).NumberOfFrames) == scan.shape[2]


def test_explain_a_clip_and_a_dicom_series(tmp_path) -> None:
    code, _, err = run("explain", sd.file(sd.LUS_DICOM), "--model", sd.file(sd.LUS_CARD), "--out", tmp_path / "us")
    assert code == 0, err
    assert nib.load(tmp_path / "us" / "gradcam.nii.gz").shape == (24, 128, 128)
    code, _, err = run(
        "explain", sd.file(sd.CT_DICOM), "--model", sd.file(sd.CT_CARD), "--method", "cam", "--out", tmp_path / "ct"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "ct" / "summary.json").read_text())["explanations"][0]["layer"] == ["layer4"]


def test_methods_lists_every_method() -> None:
    code, out, _ = run("methods")
    assert code == 0 and "gradcam" in out and "scorecam" in out and "occlusion" in out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"input": "missing.nii.gz"}, "missing.nii.gz: no such file or folder"),
        ({"method": "gradcam3"}, "unknown CAM method 'gradcam3'; volcam has cam, gradcam"),
        ({"layer": "layer9"}, "no layer 'layer9'; its layers: conv1, layer1, layer2, layer3, layer4 "),
        ({"model": "card-mismatch"}, "does not match the weights ct_covid.pt"),
        ({"model": "missing-card.json"}, "missing-card.json: no such model card"),
        ({"input": "clip"}, "explains volumes (C, X, Y, Z); this input is a clip"),
        ({"target": "pneumonia"}, "pneumonia"),
    ],
)
def test_user_errors_are_one_line(tmp_path, change, expected) -> None:
    scan, card = sd.file(sd.CT_NIFTI), sd.file(sd.CT_CARD)
    if change.get("input") == "clip":
        scan = sd.file(sd.LUS_DICOM)
    elif "input" in change:
        scan = tmp_path / change["input"]
    if change.get("model") == "card-mismatch":
        data = json.loads(card.read_text())
        data["network"]["args"]["block_inplanes"] = [8, 8, 8, 8]
        data["weights"] = str(sd.file(data["weights"]))
        card = tmp_path / "card.json"
        card.write_text(json.dumps(data))
    elif "model" in change:
        card = tmp_path / change["model"]
    args = ["explain", scan, "--model", card, "--out", tmp_path / "out"]
    for option in ("method", "layer", "target"):
        if option in change:
            args += [f"--{option}", change[option]]
    line = one_line_error(*run(*args)[::2])
    assert expected in line
    assert not (tmp_path / "out" / "summary.json").exists()
