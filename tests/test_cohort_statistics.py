"""A cohort's statistics: intervals per group, pooled VxAP/MaxF1 from the records' histograms, paired
comparisons with Holm, what summary.md shows, and the histograms kept in case.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from volcam.io.tables import Case
from volcam.metrics import holm, pooled_interval, precision_recall, voxel_histograms
from volcam.workflows.cohort.records import CASE_FILE, FORMAT, CaseRecord, MapRecord, Settings, read_record
from volcam.workflows.cohort.report import results_table, write_report
from volcam.workflows.cohort.statistics import (
    Bootstrap,
    case_groups,
    metric_intervals,
    paired_comparisons,
    pooled_scores,
)
from volcam.workflows.scoring import MapScores
from volcam.workflows.specs import CohortSpec

METHODS = ("gradcam", "gradcam++")
LABELS = ("normal", "covid")


def _scores(cam: torch.Tensor, mask: torch.Tensor) -> MapScores:
    (h,) = voxel_histograms(cam, mask)
    found = precision_recall(h)
    return MapScores(
        pointing_hit=1, vxap=found.vxap, max_f1=found.max_f1, precision_at_max_f1=found.precision_at_max_f1,
        recall_at_max_f1=found.recall_at_max_f1, lesion_histogram=tuple(h.lesion.tolist()),
        background_histogram=tuple(h.background.tolist()), deletion_auc=float(cam.mean()),
    )  # fmt: skip


def _cohort(n: int = 24) -> tuple[list[Case], dict[str, CaseRecord]]:
    """Half covid (a lesion; gradcam++'s map sharper than gradcam's), half normal (no lesion); every
    fifth case predicted wrong."""
    g = torch.Generator().manual_seed(0)
    cases, records = [], {}
    for i in range(n):
        covid = i % 2 == 1
        label = LABELS[covid]
        prediction = LABELS[covid] if i % 5 else LABELS[not covid]
        maps = []
        if covid:
            mask = torch.zeros(8, 8, 8, dtype=torch.bool)
            mask[2:5, 2:5, 2 : 4 + i % 3] = True
            for sharpness, method in zip((0.3, 0.8), METHODS, strict=True):
                cam = torch.rand(8, 8, 8, generator=g) + sharpness * mask
                maps.append(MapRecord(method, _scores(cam, mask)))
        else:
            maps = [MapRecord(m, MapScores(deletion_auc=0.1 * k)) for k, m in enumerate(METHODS)]
        case = f"case{i:03d}"
        cases.append(Case(case, Path(f"/data/{case}.nii.gz"), Path(f"/data/{case}_mask.nii.gz"), label))
        records[case] = CaseRecord(
            case=case, status="ok", prediction=prediction, target=prediction,
            probabilities={prediction: 0.8, LABELS[prediction == "normal"]: 0.2}, maps=tuple(maps),
        ).on(cases[-1], LABELS)  # fmt: skip
    return cases, records


@pytest.fixture(scope="module")
def cohort():
    cases, records = _cohort()
    table = results_table(cases, records, METHODS, LABELS)
    return cases, records, table[table["status"] == "ok"]


def test_groups_are_all_each_class_and_right_or_wrong(cohort) -> None:
    _, _, ok = cohort
    groups = dict(case_groups(ok, LABELS))
    assert list(groups) == ["all", "label normal", "label covid", "correct", "wrong"]
    assert len(groups["correct"]) + len(groups["wrong"]) == 24 and len(groups["wrong"]) == 5


def test_intervals_per_group_hits_get_wilson(cohort) -> None:
    _, _, ok = cohort
    found = metric_intervals(ok, METHODS, LABELS, Bootstrap(resamples=500))
    hits = found[(found["metric"] == "pointing_hit") & (found["group"] == "all")]
    assert set(hits["interval"]) == {"wilson"} and (hits["n"] == 12).all()  # only covid cases have a mask
    assert hits["low"].iloc[0] == pytest.approx(12 / (12 + 1.959963984540054**2))
    vxap = found[(found["metric"] == "vxap") & (found["group"] == "label covid") & (found["method"] == "gradcam")]
    values = ok.loc[ok["label"] == "covid", "gradcam.vxap"]
    assert vxap["mean"].iloc[0] == pytest.approx(values.mean()) and vxap["low"].iloc[0] < values.mean()
    assert found.loc[(found["metric"] == "deletion_auc") & (found["group"] == "all"), "n"].tolist() == [24, 24]
    assert "label normal" not in set(found.loc[found["metric"] == "vxap", "group"])  # no lesion, no VxAP


def test_pooled_scores_pool_the_records_histograms(cohort) -> None:
    _, records, ok = cohort
    found = pooled_scores(ok, records, METHODS, LABELS, Bootstrap(resamples=500))
    row = found[(found["group"] == "all") & (found["method"] == "gradcam++")].iloc[0]
    histograms = [r.maps[1].scores.histograms() for r in records.values() if r.label == "covid"]
    pooled = precision_recall(sum(histograms))
    assert row["cases"] == 12 and row["vxap"] == pytest.approx(pooled.vxap) and row["recall"] == pooled.recall_at_max_f1
    expected = pooled_interval(histograms, "max_f1", resamples=500)
    assert (row["max_f1_low"], row["max_f1_high"]) == pytest.approx((expected.low, expected.high))


def test_paired_comparisons_with_holm(cohort) -> None:
    _, records, ok = cohort
    found = paired_comparisons(ok, records, METHODS, Bootstrap(resamples=1000))
    assert "energy_random" not in set(found["metric"]) and "recall_at_max_f1" not in set(found["metric"])
    assert {"vxap", "max_f1", "pooled vxap", "pooled max_f1", "deletion_auc"} <= set(found["metric"])
    assert found["p_holm"].to_numpy() == pytest.approx(holm(found["p"].to_numpy()))
    vxap = found[found["metric"] == "pooled vxap"].iloc[0]
    assert (vxap["a"], vxap["b"]) == METHODS and vxap["high"] < 0 and vxap["p"] < 0.05  # gradcam++ is sharper
    deletion = found[found["metric"] == "deletion_auc"].iloc[0]
    assert deletion["n"] == 24


def test_summary_shows_intervals_pooled_scores_and_comparisons(cohort, tmp_path) -> None:
    cases, records, _ = cohort
    settings = Settings(CohortSpec(methods=METHODS), tmp_path / "model.json", tmp_path, "f" * 20)
    model = SimpleNamespace(name="demo", labels=LABELS, card=SimpleNamespace(layer="layer4"))
    write_report(cases, records, settings, model, tmp_path / "cases.csv", computed=[], seconds=1.0)
    summary = (tmp_path / "summary.md").read_text()
    for heading in (
        "## Per method: mean [95% interval] (n)",
        "### cases the model classified wrong",
        "## VxAP and MaxF1 over the pooled voxels of the cases with lesions",
        "## Methods compared on the same cases",
    ):
        assert heading in summary, heading
    assert "| pointing_hit | 1.000 [0.758, 1.000] (12) |" in summary
    assert "| pooled vxap | gradcam − gradcam++ | 12 |" in summary


def test_case_json_keeps_the_histograms_on_one_line(tmp_path) -> None:
    _, records = _cohort(2)
    record = records["case001"]
    text = record.to_json()
    assert '"lesion_histogram": [' in text and len(text.splitlines()) < 80
    (tmp_path / CASE_FILE).write_text(text)
    back = read_record(tmp_path)
    assert back == record and back is not None
    assert np.array_equal(back.maps[0].scores.histograms().lesion, record.maps[0].scores.histograms().lesion)
    assert "gradcam.lesion_histogram" not in record.row(METHODS, LABELS)  # kept, no column
    older = json.loads(text) | {"format": FORMAT - 1}
    (tmp_path / CASE_FILE).write_text(json.dumps(older))
    assert read_record(tmp_path) is None  # recorded before VxAP: done again
