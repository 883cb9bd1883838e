"""Cohort pieces: manifests, case ids, input signatures, records, the fingerprint, error rows, retries,
DICOM kinds, the lock and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import volcam
from volcam import sample_data as sd
from volcam.cli import app
from volcam.errors import FileFormatError, InputError, MethodError, OutputError
from volcam.io.tables import Case, input_signature, read_cases
from volcam.testing.cohorts import synthetic_cohort
from volcam.workflows.cohort.records import (
    CASE_FILE,
    METRICS,
    CaseRecord,
    MapRecord,
    column_descriptions,
    fingerprint,
    is_case_folder,
    read_record,
    true_label,
)
from volcam.workflows.scoring import MapScores
from volcam.workflows.specs import CohortSpec

FAST = {"methods": ["gradcam"], "faithfulness_steps": 0, "progress": False}


def test_csv_manifest_keeps_ids_and_resolves_paths(tmp_path) -> None:
    (tmp_path / "m.csv").write_text(
        "Case_ID,Image_Path,Mask,Label\n007,scans/a.nii.gz,,covid\n008,/abs/b.nii.gz,masks/b.nii.gz,0\n"
    )
    cases = read_cases(tmp_path / "m.csv")
    assert cases == [
        Case("007", tmp_path / "scans" / "a.nii.gz", None, "covid"),
        Case("008", Path("/abs/b.nii.gz"), tmp_path / "masks" / "b.nii.gz", "0"),
    ]


def test_parquet_manifest(tmp_path) -> None:
    pd.DataFrame({"case": ["a", "b"], "image": ["a.nii", "b.nii"], "label": [1, None]}).to_parquet(
        tmp_path / "m.parquet"
    )
    cases = read_cases(tmp_path / "m.parquet")
    assert [(c.case_id, c.image.name, c.mask, c.label) for c in cases] == [
        ("a", "a.nii", None, "1"),
        ("b", "b.nii", None, None),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("case,mask\na,m.nii\n", ["no image column", "case, mask"]),
        ("case,image\n../up,a.nii\n", ["row 2", "'../up'"]),
        ("case,image\n.hidden,a.nii\n", ["row 2", "cannot name a folder"]),
        ("case,image\na,a.nii\na,b.nii\n", ["'a' appears twice"]),
        ("case,image\na,\n", ["row 2", "needs an id and an image"]),
    ],
)
def test_bad_manifest_is_one_clear_error(tmp_path, text, words) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError) as error:
        read_cases(tmp_path / "m.csv")
    assert str(tmp_path / "m.csv") in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_missing_manifest(tmp_path) -> None:
    with pytest.raises(FileFormatError, match="no such manifest"):
        read_cases(tmp_path / "nothing.csv")


def test_folder_of_scans(tmp_path) -> None:
    for name in ("b.nii.gz", "b_mask.nii.gz", "a.nrrd", "notes.md", "manifest.csv", ".hidden.nii"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "c").mkdir()  # a DICOM series
    cases = read_cases(tmp_path)
    assert [(c.case_id, c.image.name, c.mask.name if c.mask else None) for c in cases] == [
        ("a", "a.nrrd", None),
        ("b", "b.nii.gz", "b_mask.nii.gz"),
        ("c", "c", None),
    ]


def test_input_signature_follows_the_files(tmp_path) -> None:
    scan = tmp_path / "a.nii"
    scan.write_bytes(b"1234")
    case = Case("a", scan)
    first = input_signature(case)
    assert input_signature(case) == first
    scan.write_bytes(b"12345")
    assert input_signature(case) != first
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"1")
    folder = Case("s", series)
    before = input_signature(folder)
    (series / "2.dcm").write_bytes(b"2")
    assert input_signature(folder) != before


def test_labels_as_indices_or_names() -> None:
    labels = ("normal", "covid")
    assert [true_label(v, labels) for v in ("1", "0", "covid", "7", None)] == ["covid", "normal", "covid", "7", None]


def _record() -> CaseRecord:
    scores = MapScores(pointing_hit=1, energy_in_mask=0.5, deletion_auc=0.25)
    return CaseRecord(
        case="a", image="/x/a.nii.gz", label="covid", status="ok", prediction="covid", target="covid", correct=True,
        probabilities={"normal": 0.25, "covid": 0.75}, maps=(MapRecord("gradcam", scores),), load_s=0.5,
        explain_s=1.0, fingerprint="f" * 20, inputs="s", files=("gradcam.nii.gz",), stored=3,
    )  # fmt: skip


def test_a_case_record_is_case_json_and_a_table_row(tmp_path) -> None:
    record = _record()
    (tmp_path / CASE_FILE).write_text(record.to_json())
    assert read_record(tmp_path) == record and is_case_folder(tmp_path, "a")
    row = record.row(["gradcam", "layercam"], ["normal", "covid"])
    assert list(row)[:12] == [
        "case", "image", "mask", "region", "label", "status", "error", "prediction", "target", "correct", "p_normal",
        "p_covid",
    ]  # fmt: skip
    assert row["p_covid"] == 0.75 and row["gradcam.pointing_hit"] == 1 and np.isnan(row["gradcam.iou_at_0.5"])
    assert np.isnan(row["layercam.pointing_hit"]) and np.isnan(row["write_s"]) and row["load_s"] == 0.5
    assert "fingerprint" not in row and "files" not in row  # what case.json keeps to resume is no column
    # Each column is described once, in the record's fields (summary.md lists them).
    described = column_descriptions()
    for column in row:
        pattern = "p_<class>" if column.startswith("p_") else "<method>.<metric>" if "." in column else column
        assert described[pattern], column
    assert set(METRICS) == {c.split(".", 1)[1] for c in row if c.startswith("gradcam.")}


def test_manifest_facts_come_from_the_manifest() -> None:
    record = CaseRecord(case="a", status="ok", prediction="covid").on(
        Case("a", Path("/s.nii"), None, "1"), ["n", "covid"]
    )
    assert (record.image, record.mask, record.label, record.correct) == ("/s.nii", "", "covid", True)
    failed = CaseRecord(case="a", status="error").on(Case("a", Path("/s.nii"), None, "covid"), ["n", "covid"])
    assert failed.correct is None
    assert CaseRecord().on(Case("b", Path("/t.nii")), ["n"]).row(["gradcam"], ["n"])["status"] == "not run"


def test_an_old_case_json_is_redone_but_its_folder_stays_ours(tmp_path) -> None:
    old = {"case": "a", "fingerprint": "f", "inputs": "s", "status": "ok", "metrics": {}, "timings": {}, "files": []}
    (tmp_path / CASE_FILE).write_text(json.dumps(old))
    assert read_record(tmp_path) is None  # format 1: not done with these settings, whatever its fingerprint
    assert is_case_folder(tmp_path, "a") and not is_case_folder(tmp_path, "b")
    (tmp_path / CASE_FILE).write_text("{not json")
    assert read_record(tmp_path) is None and not is_case_folder(tmp_path, "a")


def test_the_fingerprint_follows_the_output_choices_only() -> None:
    model = volcam.load_model(sd.file(sd.CT_CARD))
    base = fingerprint(model, CohortSpec())
    assert fingerprint(model, CohortSpec(prefetch=False, scheduler="local", workers=3)) == base
    for changed in ({"png": True}, {"dicom": "segmentation"}, {"tolerance_mm": 3}, {"gradient_sigma_mm": 2.0}):
        assert fingerprint(model, CohortSpec.of(None, **changed)) != base, changed


@pytest.fixture
def tiny(tmp_path):
    return synthetic_cohort(tmp_path / "data", 2)


@pytest.mark.slow
def test_mask_on_another_grid_is_that_case_s_error(tiny, tmp_path) -> None:
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4)), tiny.parent / "case001_mask.nii.gz")
    table = volcam.run_cohort(tiny, sd.file(sd.CT_CARD), tmp_path / "out", **FAST)
    assert list(table["status"]) == ["ok", "error"]
    assert table.loc[1, "error"].startswith("metrics: the lesion mask has shape (1, 5, 5, 5)")


@pytest.mark.slow
def test_out_of_memory_is_not_recorded_as_finished(tiny, tmp_path, monkeypatch) -> None:
    real = volcam.Model.explain
    calls = []

    def short_of_memory(self, scan, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second case
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(self, scan, *args, **kwargs)

    monkeypatch.setattr(volcam.Model, "explain", short_of_memory)
    out = tmp_path / "out"
    table = volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, **FAST)
    assert list(table["status"]) == ["ok", "error"]
    assert table.loc[1, "error"].startswith("explain: out of memory")
    assert not (out / "case001").exists()
    monkeypatch.setattr(volcam.Model, "explain", real)
    again = volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, **FAST)  # tried again, and now it fits
    assert again.attrs["computed"] == ["case001"] and list(again["status"]) == ["ok", "ok"]


@pytest.mark.slow
def test_a_changed_scan_is_done_again(tiny, tmp_path) -> None:
    out = tmp_path / "out"
    volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, **FAST)
    scan = nib.load(tiny.parent / "case000.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj)[::-1].copy(), scan.affine), tiny.parent / "case000.nii.gz")
    assert volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, **FAST).attrs["computed"] == ["case000"]


@pytest.mark.slow
def test_dicom_kinds_are_written_into_each_case_folder(tiny, tmp_path) -> None:
    import pydicom

    out = tmp_path / "out"
    spec = CohortSpec(dicom=("segmentation",), faithfulness_steps=0)
    table = volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, spec, progress=False)  # as the CLI calls it
    assert list(table["status"]) == ["ok", "ok"], list(table["error"])
    for case in ("case000", "case001"):
        record = read_record(out / case)
        assert record is not None and record.stored is None  # no store: written, not sent
        objects = sorted((out / case / "gradcam_segmentation").glob("*.dcm"))
        assert objects and [f"gradcam_segmentation/{p.name}" for p in objects] == [
            f for f in record.files if f.startswith("gradcam_segmentation/")
        ]
        assert pydicom.dcmread(objects[0], stop_before_pixels=True).Modality == "SEG"
        assert not list((out / case).glob("*parametric-map*"))
    assert "DICOM per map: segmentation" in (out / "summary.md").read_text()
    assert volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, spec, progress=False).attrs["computed"] == []
    # Another kind is another output: every case again, with both kinds' objects.
    both = volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, spec, dicom="segmentation,parametric-map", progress=False)
    assert len(both.attrs["computed"]) == 2 and (out / "case000" / "gradcam_parametric-map").is_dir()


def test_one_run_per_output_folder(tiny, tmp_path) -> None:
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".volcam-cohort.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="another volcam cohort run"):
            volcam.run_cohort(tiny, sd.file(sd.CT_CARD), out, **FAST)


def test_bad_choices_fail_before_any_case(tiny, tmp_path) -> None:
    with pytest.raises(MethodError):
        volcam.run_cohort(tiny, sd.file(sd.CT_CARD), tmp_path / "out", methods=["nosuchcam"])
    with pytest.raises(InputError, match="--workers: needs --scheduler local"):
        volcam.run_cohort(tiny, sd.file(sd.CT_CARD), tmp_path / "out", workers=2)
    with pytest.raises(InputError, match="--faithfulness-steps: -1"):
        volcam.run_cohort(tiny, sd.file(sd.CT_CARD), tmp_path / "out", CohortSpec(), faithfulness_steps=-1)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_cohort(tiny, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["cohort", str(tiny), "--model", str(sd.file(sd.CT_CARD)), "--out", str(out), "--faithfulness-steps", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "2 cases ok, 0 failed (2 done now)" in result.stdout and "summary.md" in result.stdout
    assert pd.read_parquet(out / "results.parquet")["status"].tolist() == ["ok", "ok"]
    again = runner.invoke(app, args)
    assert "2 finished cases skipped; 0 to do" in again.stdout and "(0 done now)" in again.stdout
    bad = runner.invoke(
        app, ["cohort", str(tmp_path / "none.csv"), "--model", str(sd.file(sd.CT_CARD)), "--out", str(out)]
    )
    lines = bad.stderr.strip().splitlines()
    assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith("volcam: error: ") and "none.csv" in lines[0]
