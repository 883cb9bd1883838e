"""Classes of input that escaped the one error path or gave wrong values (issue 27), each closed by a mechanism.

Every test names the example that was found and checks its class with other members of it, on real
files: nibabel-written NIfTI and Analyze images with real affines, SimpleITK-written MetaImage and NRRD,
pydicom's own CT slice (``CT_small.dcm``) made into series, the shipped demo models, a real Orthanc.

- voxel types a reader cannot hold: one line naming the file and the type (RGB reads as channels);
- two-file formats missing their other file: one line naming it, before any reader opens one;
- JSON nested deeper than the parser goes (cards, bundles, metrics, records, DICOMweb answers);
- card labels that do not name the network's outputs: refused when the model is built;
- a cohort that fails anywhere: a row with every column, and an exit status that says so;
- values outside a modality's plausible range (CT in HU): a problem for ``info``, a warning on loading;
- identifying values of a scan in a message or a log line: removed by the one error path;
- DICOMweb credentials: only to the hosts named for them, never in clear text to another machine.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

import volcam
from cli_runs import one_line_error, run
from io_fixtures import make_series, pydicom_file
from volcam import sample_data as sd
from volcam.errors import CardError, FileFormatError, InputError, VolcamWarning, error_line, scrub

AFFINE = np.array([[-0.8, 0, 0, 120.0], [0, 0.8, 0, -95.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def _card(tmp_path: Path, name: str = "ct_covid.card.json", **changes) -> Path:
    """The shipped CT card with ``changes``, its files by absolute path, written into ``tmp_path``."""
    data = json.loads(sd.file(name).read_text())
    data["weights"] = str(sd.file(data["weights"]))
    data.pop("lcam", None)
    data.pop("metrics", None)
    data.update(changes)
    path = tmp_path / f"changed.{name}"
    path.write_text(json.dumps(data))
    return path


# -- voxel types a reader cannot hold ---------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "named"), [(np.complex64, "complex64"), (np.complex128, "complex128")])
def test_nifti_of_complex_voxels_is_one_line_naming_the_datatype(tmp_path, dtype, named) -> None:
    path = tmp_path / "k_space.nii.gz"
    nib.save(nib.Nifti1Image((np.ones((6, 5, 4)) + 1j).astype(dtype), AFFINE), path)
    with pytest.raises(FileFormatError, match=f"k_space.nii.gz: voxels of NIfTI datatype {named}"):
        volcam.load(path)
    assert "datatype complex" in one_line_error(*run("info", path)[::2])


def test_nifti2_4d_complex_is_refused_before_a_volume_is_read(tmp_path) -> None:
    path = tmp_path / "series.nii"
    nib.save(nib.Nifti2Image(np.ones((6, 5, 4, 3), np.complex64), AFFINE), path)
    with pytest.raises(FileFormatError, match="voxels of NIfTI datatype complex64"):
        volcam.load(path, volume=1)


def test_nrrd_of_complex_voxels_is_one_line(tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    path = tmp_path / "complex.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray((np.ones((4, 5, 6)) + 2j).astype(np.complex64)), str(path))
    with pytest.raises(FileFormatError, match=r"complex\.nrrd: voxels of type complex of 32-bit float"):
        volcam.load(path)


def _rgb(fields: str, shape: tuple[int, ...] = (6, 5, 4)) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = np.zeros(shape, dtype=[(name, "u1") for name in fields])
    for name in fields:
        data[name] = rng.integers(0, 256, shape)
    return data


@pytest.mark.parametrize("fields", ["RGB", "RGBA"])
def test_rgb_nifti_reads_as_colour_channels(tmp_path, fields) -> None:
    """The example: a NIfTI of RGB24 voxels was ``internal error: TypeError``; now 3 (or 4) uint8 channels."""
    rgb = _rgb(fields)
    path = tmp_path / "colour.nii.gz"
    nib.save(nib.Nifti1Image(rgb, AFFINE), path)
    image = volcam.load(path)
    assert image.shape == (len(fields), 6, 5, 4) and image.dtype == torch.uint8
    for channel, name in enumerate(fields):
        assert np.array_equal(image[channel].numpy(), rgb[name])
    assert np.allclose(image.affine.numpy(), AFFINE) and image.meta["original_channel_dim"] == -1
    code, out, err = run("info", path)
    assert code == 0 and "problems     none" in out and not err


def test_rgb_volume_of_a_4d_nifti(tmp_path) -> None:
    rgb = _rgb("RGB", (6, 5, 4, 2))
    path = tmp_path / "colour4d.nii"
    nib.save(nib.Nifti1Image(rgb, AFFINE), path)
    image = volcam.load(path, volume=1)
    assert image.shape == (3, 6, 5, 4) and np.array_equal(image[2].numpy(), rgb["B"][..., 1])


# -- two-file formats -------------------------------------------------------------------------------------


def _pair(folder: Path, kind, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nib.save(kind(np.arange(120, dtype=np.int16).reshape(6, 5, 4), AFFINE), path)
    return path


@pytest.mark.parametrize(
    ("kind", "name", "removed", "role"),
    [
        (nib.Nifti1Pair, "pair.hdr", "pair.img", "image data"),  # the example
        (nib.Nifti1Pair, "pair.img", "pair.hdr", "header"),
        (nib.Nifti2Pair, "PAIR.HDR", "PAIR.IMG", "image data"),
        (nib.AnalyzeImage, "analyze.hdr", "analyze.img", "image data"),
        (nib.Nifti1Pair, "pair.hdr.gz", "pair.img.gz", "image data"),
    ],
)
def test_a_hdr_img_pair_missing_its_other_file_is_one_line(tmp_path, kind, name, removed, role) -> None:
    given = _pair(tmp_path, kind, name)
    (tmp_path / removed).unlink()
    with pytest.raises(FileFormatError, match=f"{given.name}: {removed}, the {role} this file needs beside it"):
        volcam.load(given)
    assert f"{removed}, the {role}" in one_line_error(*run("info", given)[::2])


def test_an_intact_pair_still_loads(tmp_path) -> None:
    image = volcam.load(_pair(tmp_path, nib.Nifti1Pair, "pair.hdr"))
    assert image.shape == (1, 6, 5, 4) and int(image.max()) == 119


@pytest.mark.parametrize(("header", "data"), [("scan.mhd", "scan.raw"), ("scan.nhdr", "scan.raw")])
def test_a_detached_itk_header_missing_its_data_file_is_one_line(tmp_path, header, data) -> None:
    sitk = pytest.importorskip("SimpleITK")
    path = tmp_path / header
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path))
    assert (tmp_path / data).is_file() and volcam.load(path).shape == (1, 6, 5, 4)
    (tmp_path / data).unlink()
    code, _, err = run("info", path)
    assert f"{header}: {data}, the image data this file needs beside it, is missing" in one_line_error(code, err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_companion_that_is_a_fifo_is_refused_without_opening_it(tmp_path) -> None:
    given = _pair(tmp_path, nib.Nifti1Pair, "pair.hdr")
    (tmp_path / "pair.img").unlink()
    os.mkfifo(tmp_path / "pair.img")  # opening it would block until someone writes
    with pytest.raises(FileFormatError, match=r"pair.img, the image data this file needs beside it, is a FIFO"):
        volcam.load(given)


# -- JSON nested deeper than a parser goes ----------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_card_nested_thousands_of_levels_deep_is_one_line(tmp_path) -> None:
    """The example: a model card nested a few thousand levels deep was a ``RecursionError``."""
    card = tmp_path / "deep.card.json"
    card.write_text('{"network": {"monai": "ResNet", "args": {"x": ' + _nested(3000) + '}}, "labels": ["a", "b"]}')
    with pytest.raises(CardError, match=r"deep\.card\.json: not a model card: nested more than 100 levels deep"):
        volcam.load_model(card)
    code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", tmp_path / "out")
    assert "nested more than 100 levels deep" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_every_json_volcam_reads_bounds_its_depth(tmp_path) -> None:
    from volcam.io.atomic import MARKER, made_by_volcam
    from volcam.io.jsondata import MAX_DEPTH, parse_json
    from volcam.workflows.cohort.records import CASE_FILE, read_record

    assert parse_json(_nested(MAX_DEPTH), "x") == parse_json(_nested(MAX_DEPTH), "x")  # the limit itself is fine
    for depth in (MAX_DEPTH + 1, 5000, 200_000):  # past the limit, and past Python's own recursion limit
        with pytest.raises(FileFormatError, match="nested more than"):
            parse_json(_nested(depth), "x")
    # a bundle's config, a card's metrics file
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text('{"network_def": ' + _nested(4000) + "}")
    with pytest.raises(CardError, match=r"inference\.json: not a bundle config: nested"):
        volcam.load_model(bundle)
    (tmp_path / "metrics.json").write_text(_nested(4000))
    with pytest.raises(CardError, match=r"metrics\.json: not a metrics file: nested"):
        volcam.load_model(_card(tmp_path, metrics="metrics.json"))
    # what a resumed output folder holds: read as "not done", never an exception
    case = tmp_path / "case"
    case.mkdir()
    (case / CASE_FILE).write_text('{"format": 3, "maps": ' + _nested(50_000) + "}")
    assert read_record(case) is None
    (case / MARKER).write_text(_nested(50_000))
    assert made_by_volcam(case) is False


class _Answering(BaseHTTPRequestHandler):
    """Answers every request with ``body`` and records the Authorization header it was sent."""

    body = b"[]"
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answering():
    """A server on this machine that answers every request with ``_Answering.body``; its URL."""

    class Handler(_Answering):
        seen: ClassVar[list[str | None]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, Handler, f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def test_a_dicomweb_answer_nested_too_deeply_is_one_line(answering, monkeypatch) -> None:
    _, handler, url = answering
    for name in ("VOLCAM_DICOMWEB_TOKEN", "VOLCAM_DICOMWEB_USER"):
        monkeypatch.delenv(name, raising=False)
    handler.body = _nested(200_000).encode()
    with pytest.raises(FileFormatError, match="nested too deeply"):
        volcam.load(f"{url}/studies/1.2.3")


# -- card labels against the network's outputs ------------------------------------------------------------


@pytest.mark.parametrize("labels", [["normal"], ["normal", "covid", "other"]])
def test_labels_that_do_not_name_the_outputs_are_refused_when_the_model_is_built(tmp_path, labels) -> None:
    """The example: one label for a two-class network was an ``IndexError`` inside the first explanation."""
    card = _card(tmp_path, labels=labels)
    with pytest.raises(CardError, match=f"the card names {len(labels)} labels .*; the network gives 2 outputs"):
        volcam.load_model(card)
    code, _, err = run("explain", sd.file(sd.CT_NIFTI), "--model", card, "--out", tmp_path / "out")
    assert "the network gives 2 outputs" in one_line_error(code, err)


def test_a_transformer_card_with_wrong_labels_is_refused_when_built(tmp_path) -> None:
    """ViT returns (logits, hidden states) and its embedding cannot be traced: its head is found anyway."""
    from volcam.model.build import declared_outputs, network_of

    network, card = network_of(sd.file(sd.CT_VIT_CARD))
    assert declared_outputs(network, card) == 2
    with pytest.raises(CardError, match="names 3 labels"):
        volcam.load_model(_card(tmp_path, sd.CT_VIT_CARD, labels=["a", "b", "c"]))


def test_a_network_whose_outputs_cannot_be_told_is_checked_at_its_first_forward(tmp_path, monkeypatch) -> None:
    """When the build cannot tell (untraceable, no fixed input size), the first forward is the check: a
    CardError before any label is looked up, never an IndexError."""
    monkeypatch.setattr("volcam.model.model.declared_outputs", lambda network, card: None)
    model = volcam.load_model(_card(tmp_path, labels=["normal"]))
    with pytest.raises(CardError, match="names 1 labels"):
        model.explain(volcam.load(sd.file(sd.CT_NIFTI)), "gradcam")


# -- a cohort that fails anywhere -------------------------------------------------------------------------


def test_an_empty_manifest_is_one_line(tmp_path) -> None:
    """The example (``KeyError: 'correct'``): a manifest of a header row and no rows."""
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,image,label\n")
    code, _, err = run("cohort", manifest, "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "out")
    assert "lists no case" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_the_results_table_has_every_column_whatever_the_rows() -> None:
    from volcam.workflows.cohort.records import CaseRecord
    from volcam.workflows.cohort.report import results_table

    columns = list(CaseRecord().row(["gradcam"], ["normal", "covid"]))
    table = results_table([], {}, ["gradcam"], ["normal", "covid"])
    assert len(table) == 0 and {"case", "status", "error", "correct", "p_normal", "p_covid"} <= set(table.columns)
    assert set(table.columns) <= set(columns)


def test_a_cohort_where_every_case_fails_has_error_rows_and_a_distinct_exit_status(tmp_path) -> None:
    """A header-only NIfTI, a pair missing its .img, a complex NIfTI: every case fails at load."""
    header_only = tmp_path / "header_only.nii"
    header_only.write_bytes(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), AFFINE).header.binaryblock + b"\0" * 4)
    pair = _pair(tmp_path, nib.Nifti1Pair, "pair.hdr")
    (tmp_path / "pair.img").unlink()
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.complex64), AFFINE), tmp_path / "complex.nii")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image,label\na,{header_only},covid\nb,{pair},normal\nc,complex.nii,1\n")
    out = tmp_path / "out"
    code, stdout, _ = run("cohort", manifest, "--model", sd.file(sd.CT_CARD), "--out", out, "--methods", "gradcam")
    from volcam.cli import COHORT_ALL_FAILED

    assert code == COHORT_ALL_FAILED and "0 cases ok, 3 failed" in stdout
    table = pd.read_csv(out / "results.csv")
    assert table["status"].tolist() == ["error"] * 3 and table["correct"].isna().all()
    assert all(e.startswith("load: ") for e in table["error"])
    assert "truncated" in table["error"][0] and "pair.img" in table["error"][1] and "complex64" in table["error"][2]
    assert "## Failed cases" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_a_cohort_with_some_failed_cases_exits_with_its_own_status(tmp_path) -> None:
    from volcam.cli import COHORT_SOME_FAILED

    manifest = tmp_path / "cases.csv"
    pair = _pair(tmp_path, nib.Nifti1Pair, "pair.hdr")
    (tmp_path / "pair.img").unlink()
    manifest.write_text(f"case,image\nok,{sd.file(sd.CT_NIFTI)}\nbroken,{pair}\n")
    args = ("cohort", manifest, "--model", sd.file(sd.CT_CARD), "--out", tmp_path / "out", "--methods", "gradcam")
    code, stdout, _ = run(*args, "--faithfulness-steps", "0")
    assert code == COHORT_SOME_FAILED and "1 cases ok, 1 failed" in stdout
    assert run(*args, "--faithfulness-steps", "0")[0] == COHORT_SOME_FAILED  # resumed: the same answer


def test_the_exit_statuses_are_in_the_help_and_the_readme() -> None:
    from volcam.cli import COHORT_ALL_FAILED, COHORT_SOME_FAILED

    code, out, _ = run("cohort", "--help")
    said = " ".join(out.split())
    assert code == 0 and f"{COHORT_SOME_FAILED} when some failed" in said and f"{COHORT_ALL_FAILED} when every" in said
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"`{COHORT_SOME_FAILED}`" in readme and f"`{COHORT_ALL_FAILED}`" in readme


# -- values outside a modality's plausible range ----------------------------------------------------------


def _ct_series(folder: Path, *, wrapped: bool) -> Path:
    """Three slices of pydicom's CT, in HU with RescaleIntercept 0; ``wrapped``: stored signed but marked
    unsigned (PixelRepresentation 0), as a converter that lost the sign would write them."""
    _, files = make_series(folder, 3)
    for file in files:
        ds = pydicom.dcmread(file)
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        ds.RescaleIntercept = 0
        ds.PixelData = hu.astype(np.int16).tobytes()
        ds.PixelRepresentation = 0 if wrapped else 1
        ds.save_as(file, enforce_file_format=True)
    return folder


def test_a_ct_read_65536_too_high_is_a_problem_for_info_and_a_warning_on_loading(tmp_path) -> None:
    """The example: an unsigned 16-bit series whose pixels were meant to be signed read silently."""
    wrapped = _ct_series(tmp_path / "wrapped", wrapped=True)
    with pytest.warns(VolcamWarning, match=r"lie outside .* HU .*: these are not CT values in HU"):
        image = volcam.load(wrapped)
    assert int(image.max()) > 60_000 and any("not CT values" in p for p in image.meta["problems"])
    code, out, _ = run("info", wrapped)
    problems = next(line for line in out.splitlines() if line.strip().startswith("problems"))
    assert code == 0 and "not CT values in HU" in problems and "judged from the middle slice" in problems
    assert "65536 too high" in problems
    # the same series stored right: no problem, no warning
    right = _ct_series(tmp_path / "right", wrapped=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VolcamWarning)
        assert int(volcam.load(right).min()) < 0
    assert "problems     none" in run("info", right)[1]


def test_a_nifti_given_to_a_ct_model_is_judged_by_the_cards_modality(tmp_path) -> None:
    image = nib.load(sd.file(sd.CT_NIFTI))
    hu = np.asarray(image.dataobj).astype(np.int32)
    wrapped = tmp_path / "wrapped.nii.gz"
    nib.save(nib.Nifti1Image((hu & 0xFFFF).astype(np.uint16), image.affine), wrapped)
    model = volcam.load_model(sd.file(sd.CT_CARD))
    scan = volcam.load(wrapped)  # a NIfTI says no modality: nothing to judge by yet
    assert scan.meta["problems"] == []
    with pytest.warns(VolcamWarning, match=r"not CT values in HU.*\(ct_covid takes CT values\)"):
        model.check_scan(scan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VolcamWarning)
        model.check_scan(scan)  # judged once per scan
        model.check_scan(volcam.load(sd.file(sd.CT_NIFTI)))  # HU as they should be


def test_plausible_values_leave_padding_and_implants_alone() -> None:
    from volcam.io.ranges import RANGES, range_problem

    rng = np.random.default_rng(1)
    ct = rng.integers(-1024, 1800, (40, 40, 12)).astype(np.int16)
    padded = ct.copy()
    padded[:, :8] = -32768  # padding outside the field of view
    implant = ct.copy()
    implant[:2, :2, :2] = 30_000  # a few voxels of an extended-scale implant
    for fine in (ct, padded, implant, ct.astype(np.float32) - 2000):
        assert range_problem(fine, "CT") is None
    assert range_problem(ct.astype(np.int32) + 40_000, "CT") is not None
    assert range_problem(ct.astype(np.int32) + 40_000, "MR") is None  # no absolute scale to judge by
    assert set(RANGES) == {"CT"}


# -- identifying values in messages and log lines ---------------------------------------------------------

NAME = "Zzyzx^Quentin"  # odd values nobody else's test data holds
BIRTH = "Zzyzx-date"


def _malformed_patient(folder: Path) -> Path:
    """pydicom's CT as a series whose patient fields are malformed: a name where the sex belongs, a
    birth date that is no date (highdicom refuses both, quoting the value)."""
    _, files = make_series(folder, 3)
    for file in files:
        ds = pydicom.dcmread(file)
        ds.PatientName = NAME
        ds.PatientSex = NAME
        ds.PatientBirthDate = BIRTH
        ds.InstitutionName = "Zzyzx Memorial Hospital"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns, quoting them
            ds.save_as(file, enforce_file_format=True)
    return folder


def _absent(text: str) -> bool:
    lowered = text.lower()
    return all(part.lower() not in lowered for part in ("Zzyzx", "Quentin", BIRTH, "Memorial"))


def test_a_writer_failure_quoting_the_patient_is_scrubbed(tmp_path) -> None:
    """The example: the Parametric Map writer's refusal quoted the patient's name."""
    from volcam.io.write import write_dicom

    scan = volcam.load(_malformed_patient(tmp_path / "series"))
    with pytest.raises(InputError) as caught:
        write_dicom(torch.rand(scan.shape[1:]), tmp_path / "pm", scan, kind="parametric-map")
    assert not _absent(str(caught.value))  # highdicom's words quote it ...
    line = error_line(caught.value)
    assert "cannot build the DICOM parametric-map" in line and "[removed]" in line and _absent(line)  # ... ours not
    assert not (tmp_path / "pm").exists()


def test_the_cli_log_file_and_logging_never_hold_an_identifier(tmp_path, monkeypatch, capsys, caplog) -> None:
    from volcam.cli import report

    volcam.load(_malformed_patient(tmp_path / "series"))  # its values are now known to the scrubber
    monkeypatch.setenv("VOLCAM_LOG_DIR", str(tmp_path / "logs"))
    try:
        raise TypeError(f"cannot encode {NAME!r} born {BIRTH} (zzyzx quentin)")
    except TypeError as error:
        assert report(error) == 1
    err = capsys.readouterr().err
    logs = list((tmp_path / "logs").iterdir())
    assert "internal error: TypeError" in err and _absent(err)
    assert len(logs) == 1 and "TypeError" in logs[0].read_text() and _absent(logs[0].read_text())
    caplog.clear()  # what pydicom logged while the test wrote the series, before volcam read it
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.library").warning("patient %s at %s", NAME.replace("^", " "), "Zzyzx Memorial Hospital")
    assert caplog.records and all(_absent(r.getMessage()) for r in caplog.records)
    assert scrub("QUENTIN ZZYZX and zzyzx^quentin") == "[removed] [removed] and [removed]"
    assert scrub("a Quentinish Zzyzxian word") == "a Quentinish Zzyzxian word"  # whole values only


@pytest.mark.slow
def test_explain_and_a_cohort_failing_on_such_a_series_name_no_patient(tmp_path) -> None:
    series = _malformed_patient(tmp_path / "series")
    args = ("--model", sd.file(sd.CT_CARD), "--methods", "gradcam", "--dicom", "parametric-map")
    code, out, err = run("explain", series, "--out", tmp_path / "explained", *args)
    assert "cannot build the DICOM parametric-map" in one_line_error(code, err) and _absent(out + err)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\nodd,{series}\n")
    code, out, err = run("cohort", manifest, "--out", tmp_path / "cohort", *args, "--faithfulness-steps", "0")
    table = pd.read_csv(tmp_path / "cohort" / "results.csv")
    assert table["status"].tolist() == ["error"] and "write: " in table["error"][0]
    assert _absent(table["error"][0]) and _absent(out + err)
    for written in (tmp_path / "cohort").rglob("*"):
        if written.is_file() and written.suffix in (".csv", ".md", ".json"):
            assert _absent(written.read_text()), written


def test_identifying_values_are_read_from_the_scan_not_a_list_of_known_ones() -> None:
    from volcam.io.dicom.headers import identifying_values

    ds = pydicom.dcmread(pydicom_file("MR-SIEMENS-DICOM-WithOverlays.dcm"), stop_before_pixels=True)
    found = {str(v) for v in identifying_values(ds)}
    assert {str(ds.PatientName), ds.PatientID, ds.InstitutionName, str(ds.OperatorsName)} <= found
    mine = copy.deepcopy(ds)
    mine.RequestingPhysician = "Xylophone^Odd"  # any person name the file holds, wherever
    assert "Xylophone^Odd" in {str(v) for v in identifying_values(mine)}


NESTED_ID, NESTED_NAME, DEEP_NAME = "Qwvx-4471-Zed", "Vrzybl^Octavia", "Mxqorrow^Peregrine"


def _nested_identifiers(path: Path) -> Path:
    """pydicom's CT_small.dcm with identifying values only inside sequences: another patient ID
    (OtherPatientIDsSequence), a person name in ReferencedPatientSequence, and one two levels down
    (a physician in RequestAttributesSequence inside it), plus a private element stored as PN."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    other = Dataset()
    other.PatientID = NESTED_ID
    ds.OtherPatientIDsSequence = Sequence([other])
    request, referenced = Dataset(), Dataset()
    request.ScheduledPerformingPhysicianName = DEEP_NAME
    referenced.PatientName = NESTED_NAME
    referenced.RequestAttributesSequence = Sequence([request])
    referenced.add_new(0x00991010, "LO", "volcam test")  # private creator
    referenced.add_new(0x00991011, "PN", "Private^Pnvalue")
    ds.ReferencedPatientSequence = Sequence([referenced])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _nested_absent(text: str) -> bool:
    lowered = text.lower()
    return all(p.lower() not in lowered for p in (NESTED_ID, "Vrzybl", "Octavia", "Mxqorrow", "Peregrine", "Pnvalue"))


def test_identifying_values_inside_sequences_are_registered_and_scrubbed(tmp_path, caplog) -> None:
    """The class: values nested in DICOM sequences (another patient ID, a name in a referenced patient,
    a physician two sequences down, any PN element) reached messages and log lines unscrubbed."""
    from volcam.io.dicom.headers import identifying_values

    path = _nested_identifiers(tmp_path / "ct.dcm")
    found = {str(v) for v in identifying_values(pydicom.dcmread(path, stop_before_pixels=True))}
    assert {NESTED_ID, NESTED_NAME, DEEP_NAME, "Private^Pnvalue"} <= found
    volcam.load(path)  # reading it registers them
    quoted = InputError(f"{path.name}: {NESTED_ID} / {NESTED_NAME} / Octavia Vrzybl / {DEEP_NAME!r} / Pnvalue")
    line = error_line(quoted)
    assert _nested_absent(line) and line.count("[removed]") >= 5 and path.name in line
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.library").warning("ordered by %s for %s", "Peregrine Mxqorrow", NESTED_ID)
    assert caplog.records and all(_nested_absent(r.getMessage()) for r in caplog.records)


def test_a_cohort_out_of_memory_row_is_scrubbed(tmp_path, monkeypatch) -> None:
    """The class: a case running out of memory became an error row whose message was not scrubbed; every
    row's error now passes the one scrubbing path when the record is made, whoever worded it."""
    path = _nested_identifiers(tmp_path / "scans" / "ct.dcm")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\nodd,{path}\n")

    def short_of_memory(self, scan, *args, **kwargs):
        raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory for {NESTED_NAME} ({NESTED_ID})")

    monkeypatch.setattr(volcam.Model, "explain", short_of_memory)
    out = tmp_path / "cohort"
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, methods=["gradcam"], faithfulness_steps=0,
                              progress=False)  # fmt: skip
    assert table["status"].tolist() == ["error"] and table["error"][0].startswith("explain: out of memory (")
    assert "[removed]" in table["error"][0] and _nested_absent(table["error"][0])
    for written in out.rglob("*"):
        if written.is_file() and written.suffix in (".csv", ".md", ".json"):
            assert _nested_absent(written.read_text()), written


def test_a_case_record_scrubs_its_error_whoever_wrote_it() -> None:
    from volcam.errors import register_identifiers
    from volcam.workflows.cohort.records import CaseRecord

    register_identifiers([NESTED_NAME])
    record = CaseRecord(case="c", status="error", error=f"worker: died reading {NESTED_NAME}\nand Octavia")
    assert record.error == "worker: died reading [removed] and [removed]"
    assert _nested_absent(record.to_json()) and _nested_absent(str(record.row([], [])))


# -- DICOMweb credentials ---------------------------------------------------------------------------------

TOKEN, USER, PASSWORD, HOSTS = (f"VOLCAM_DICOMWEB_{n}" for n in ("TOKEN", "USER", "PASSWORD", "HOSTS"))


@pytest.mark.parametrize(
    ("url", "environ", "refused"),
    [
        ("https://pacs.example.org/dicom-web", {TOKEN: "t", HOSTS: "pacs.example.org"}, None),
        ("https://pacs.example.org:8443/dicom-web", {TOKEN: "t", HOSTS: "pacs.example.org"}, None),
        ("https://pacs.example.org:8443/dicom-web", {TOKEN: "t", HOSTS: "pacs.example.org:443"}, "does not name"),
        ("https://their.server.net/dicom-web", {TOKEN: "t", HOSTS: "pacs.example.org"}, "does not name"),
        ("https://pacs.example.org/dicom-web", {TOKEN: "t"}, "does not name"),
        ("http://pacs.example.org/dicom-web", {TOKEN: "t", HOSTS: "pacs.example.org"}, "clear text"),
        ("http://127.0.0.1:8042/dicom-web", {USER: "u", PASSWORD: "p", HOSTS: "127.0.0.1:8042"}, None),
        ("http://localhost:8042/dicom-web", {USER: "u", PASSWORD: "p", HOSTS: "localhost"}, None),
        ("http://[::1]:8042/dicom-web", {TOKEN: "t", HOSTS: "[::1]:8042"}, None),
        ("http://their.server.net/dicom-web", {}, None),  # no credentials: nothing to refuse
        ("http://their.server.net/dicom-web", {HOSTS: "their.server.net"}, None),
    ],
)
def test_the_credential_host_policy(url, environ, refused) -> None:
    from volcam.io.dicom.web import credential_refusal

    found = credential_refusal(url, environ)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found and "\n" not in found
        assert "t" not in found.split() and "p" not in found.split()


def test_credentials_never_reach_a_host_not_named_for_them(answering, pacs, monkeypatch) -> None:
    """A manifest from someone else names their server: the user's PACS password never goes there."""
    _, handler, theirs = answering
    port = theirs.split(":")[2].split("/")[0]
    monkeypatch.setenv(HOSTS, pacs.url.split("/")[2])  # the user's PACS, with its port
    with pytest.raises(InputError, match=rf"127.0.0.1:{port}.*{HOSTS} does not name 127.0.0.1:{port}") as caught:
        volcam.load(f"{theirs}/studies/1.2.3")
    assert pacs.password not in str(caught.value) and handler.seen == []  # refused before any request
    assert volcam.load(pacs.series_url()).shape[0] == 1  # the named host still gets them
    from volcam.io.tables import Case
    from volcam.workflows.cohort.case import load_case

    loaded = load_case(Case("theirs", f"{theirs}/studies/1.2.3"))
    assert isinstance(loaded.error, InputError) and handler.seen == []
    monkeypatch.setenv(HOSTS, f"127.0.0.1:{port}")  # named for them now: sent, as basic authentication
    with pytest.raises(FileFormatError):
        volcam.load(f"{theirs}/studies/1.2.3")
    assert handler.seen and all(seen and seen.startswith("Basic ") for seen in handler.seen)


def test_without_credentials_any_host_is_asked_and_nothing_is_sent(answering, monkeypatch) -> None:
    _, handler, theirs = answering
    for name in (TOKEN, USER, PASSWORD, HOSTS):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(FileFormatError):
        volcam.load(f"{theirs}/studies/1.2.3")
    assert handler.seen and handler.seen[0] is None


def test_the_policy_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert HOSTS in readme


@pytest.mark.parametrize(
    "step", [None, [], "Orientation", 3, {"args": {}}, {"name": None}, {"name": "Spacing", "args": [1]}]
)
def test_a_card_step_of_the_wrong_form_is_one_line(tmp_path, step) -> None:
    """Found by the fuzz campaign's card properties: a preprocessing step that is not an object with a
    name (null, a list, a string) escaped as a TypeError."""
    import json

    card = json.loads(sd.file(sd.CT_CARD).read_text())
    card["preprocessing"] = [step]
    card["weights"] = str(sd.file(card["weights"]))
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    with pytest.raises(volcam.VolcamError) as raised:
        volcam.load_model(path)
    assert "preprocessing.0" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"axcodes": "RAS", "labels": "Spacing"},
            r'labels is "Spacing"; Orientation takes Sequence\[tuple\[str, str\]\]',
        ),
        ({"axcodes": "RAS", "labels": [["L", "R"], ["P", "A"], False]}, r"labels is .*; Orientation takes"),
        ({"axcodes": "RAS", "labels": [["L", {"": None}], ["P", "A"], ["I", "S"]]}, r"labels is .*; Orientation takes"),
        ({"axcodes": ["R", "A", "S"]}, r"axcodes is .*; Orientation takes str \| None there"),
    ],
)
def test_a_card_step_argument_of_the_wrong_type_is_one_line(tmp_path, args, expected) -> None:
    """Found by benchmarks/fuzz.py --seed 31: Orientation labels that are no pairs of axis names built and
    failed when the scan was prepared (an internal error: Duplicate labels, unhashable type ...)."""
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    card["preprocessing"][0] = {"name": "Orientation", "args": args}
    card["weights"] = str(sd.file(card["weights"]))
    card.pop("lcam", None)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=rf"card\.json: preprocessing\.0\.args\.{expected}") as raised:
        volcam.load_model(path)
    assert "\n" not in str(raised.value)


def test_a_step_failing_while_run_lazily_is_one_line(tmp_path) -> None:
    """Found by benchmarks/fuzz.py --seed 31: axcodes 'clip' (a string, but no axes) failed in the step run
    lazily for the separable resampling, which no guard covered (an internal error)."""
    path = _card(tmp_path, preprocessing=[
        {"name": "Orientation", "args": {"axcodes": "clip"}}, {"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0]}},
    ])  # fmt: skip
    model = volcam.load_model(path)
    scan = volcam.load(sd.file("ct_covid_sample.nii.gz"))
    for prepare in (lambda: model.explain(scan, "gradcam"), lambda: model.preprocessing.grid(scan)):
        with pytest.raises(InputError, match=r"preprocessing step 0 \(Orientation\) failed on a scan .*axis codes"):
            prepare()


def test_a_manifest_path_holding_a_nul_is_one_line(tmp_path) -> None:
    """Found by benchmarks/fuzz.py --seed 31: a NUL byte in an image cell ended volcam cohort in an internal
    error (ValueError: embedded null byte) from the output-folder check."""
    manifest = tmp_path / "cases.csv"
    manifest.write_bytes(b"case,image\nodd,scans/s0.nii\x03\x00\x00gz\n")
    with pytest.raises(InputError, match=r"cases\.csv: case 'odd': its image path holds a NUL character"):
        volcam.run_cohort(manifest, sd.file(sd.CT_CARD), tmp_path / "out", methods=["gradcam"], progress=False)
    assert not (tmp_path / "out").exists()
