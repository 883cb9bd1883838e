"""``volcam evaluate``: the methods × metrics table and plots for the demo CT, user errors in one line."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np

from cli_runs import run
from volcam import sample_data as sd


def test_evaluate_writes_table_and_plots(tmp_path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(
        "evaluate", sd.file(sd.CT_NIFTI), "--model", sd.file(sd.CT_CARD), "--mask", sd.file(sd.CT_MASK),
        "--methods", "gradcam", "--target", "covid", "--steps", "5", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "metrics.md" in stdout
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["gradcam"]
    for row in rows:
        assert row["target"] == "covid" and row["sanity"] in ("pass", "FAIL")
        assert 0 <= float(row["deletion_auc"]) <= 1 and 0 <= float(row["insertion_auc"]) <= 1
        assert float(row["energy_in_mask"]) >= 0 and row["pointing_hit"] in ("0", "1")
    assert rows[0]["pointing_hit"] == "1"  # the demo model's Grad-CAM finds the lesions
    assert json.loads((out / "metrics.json").read_text())[0]["method"] == "gradcam"
    table = (out / "metrics.md").read_text()
    assert table.startswith("| method |") and "`deletion_auc`" in table
    for picture in ("faithfulness.png", "sanity.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_mask_on_another_grid_is_one_line(tmp_path) -> None:
    small = tmp_path / "small_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), dtype=np.uint8), np.eye(4)), small)
    code, _, err = run(
        "evaluate", sd.file(sd.CT_NIFTI), "--model", sd.file(sd.CT_CARD), "--mask", small,
        "--methods", "gradcam", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volcam: error: ") and "grid" in lines[0], err
    assert not (tmp_path / "out" / "metrics.csv").exists()


def test_evaluate_region_and_baselines(tmp_path) -> None:
    """``--region``: the energy's random baseline is the lesions' share of the region, not of the volume."""
    image = nib.load(sd.file(sd.CT_NIFTI))
    lesions = np.asarray(nib.load(sd.file(sd.CT_MASK)).dataobj) != 0
    region = np.zeros(lesions.shape, dtype=np.uint8)
    region[:, : lesions.shape[1] // 2 + 8] = 1  # half the chest, holding some of the lesions
    assert 0 < (lesions & (region > 0)).sum() < lesions.sum()
    nib.save(nib.Nifti1Image(region, image.affine), tmp_path / "region.nii.gz")
    out = tmp_path / "out"
    code, _, err = run(
        "evaluate", sd.file(sd.CT_NIFTI), "--model", sd.file(sd.CT_CARD), "--mask", sd.file(sd.CT_MASK),
        "--methods", "gradcam", "--target", "covid", "--steps", "5", "--baseline", "mean",
        "--insertion-baseline", "0", "--region", tmp_path / "region.nii.gz", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    with open(out / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))
    share = (lesions & (region > 0)).sum() / region.sum()
    assert abs(float(row["energy_random"]) - share) < 1e-3, (row["energy_random"], share)
    assert 0 <= float(row["deletion_auc"]) <= 1 and 0 <= float(row["insertion_auc"]) <= 1


def test_evaluate_unknown_baseline_is_one_line(tmp_path) -> None:
    code, _, err = run(
        "evaluate", sd.file(sd.CT_NIFTI), "--model", sd.file(sd.CT_CARD), "--mask", sd.file(sd.CT_MASK),
        "--baseline", "noise", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 2 and "noise" in err and "zero, mean, blur" in err
    assert not (tmp_path / "out").exists()
