"""DICOM objects of a map (parametric map, segmentation, overlay): valid, placed, read back, traceable.

Every object volcam writes passes the standard's IOD validator ``dciodvfy`` (dicom3tools) with no
error, on the shipped CT series and on real CTs from pydicom and pydicom-data; highdicom reads each
back with its frames where the source slices are (also when the scan was flipped or reoriented
before the map was made), the source's frame of reference, references to the source instances, the
values as written and the provenance (volcam version, model card and hash, method, layer, class).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Flip, Orientation, Spacing
from typer.testing import CliRunner

import volcam
from io_fixtures import CT_SMALL_IDENTIFIERS, as_stored_in_parametric_map, pydicom_file
from volcam import sample_data as sd
from volcam._version import __version__
from volcam.cli import app
from volcam.errors import InputError
from volcam.io.dicom.instances import dicom_instances
from volcam.io.write import write_dicom

KINDS = ["parametric-map", "segmentation", "overlay"]
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools)")
# Patient and study attributes that identify someone: an object may hold one only as its source did.
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "InstitutionName",
    "StudyDescription",
)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """The ``Error`` and ``Warning`` lines dciodvfy reports for one file."""
    assert DCIODVFY is not None
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def blob(image: torch.Tensor) -> torch.Tensor:
    """A map ``(X, Y, Z)`` on ``image``'s grid: a smooth ball off-centre, 0 to 1, no symmetry."""
    shape = image.shape[1:]
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    centre = torch.tensor([0.3, -0.2, 0.1]).view(3, 1, 1, 1)
    return torch.exp(-(((grid - centre) / 0.5) ** 2).sum(0)).float()


@pytest.fixture(scope="module")
def ct() -> torch.Tensor:
    return volcam.load(sd.file(sd.CT_DICOM))


@pytest.fixture(scope="module")
def explained(ct):
    """The shipped CT series explained by the shipped card (Grad-CAM, with an option to record)."""
    model = volcam.load_model(sd.file(sd.CT_CARD))
    return model.explain(ct, "gradcam", gradient_sigma_mm=2.0)


def source_slices(scan: torch.Tensor) -> dict[str, tuple[int, pydicom.Dataset]]:
    """SOPInstanceUID → (slice index on the scan's loaded grid, header) of each source file."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.meta["source_files"]]
    return {ds.SOPInstanceUID: (k, ds) for k, ds in enumerate(headers)}


def frame_sources(ds: pydicom.Dataset) -> list[str]:
    """The source SOPInstanceUID each frame of a multi-frame object refers to."""
    return [
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for item in ds.PerFrameFunctionalGroupsSequence
    ]


def frame_position(ds: pydicom.Dataset, index: int) -> np.ndarray:
    return np.array(ds.PerFrameFunctionalGroupsSequence[index].PlanePositionSequence[0].ImagePositionPatient, float)


def assert_frames_on_source_slices(ds: pydicom.Dataset, scan: torch.Tensor, every: bool = True) -> list[int]:
    """Every frame at its referenced source slice's position (1e-3 mm) on the source's frame of
    reference, each source slice referred to once (``every``: each one; a segmentation leaves empty
    frames out); returns each frame's slice index on ``scan``."""
    sources = source_slices(scan)
    assert ds.FrameOfReferenceUID == scan.meta["frame_of_reference_uid"]
    assert ds.StudyInstanceUID == scan.meta["study_uid"]
    (series,) = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == scan.meta["series_uid"]
    assert {ref.ReferencedSOPInstanceUID for ref in series.ReferencedInstanceSequence} == set(sources)
    slices = []
    for index, uid in enumerate(frame_sources(ds)):
        k, source = sources[uid]
        np.testing.assert_allclose(frame_position(ds, index), np.array(source.ImagePositionPatient, float), atol=1e-3)
        slices.append(k)
    assert sorted(slices) == list(range(len(sources))) if every else len(set(slices)) == len(slices) > 0
    return slices


def write(cam, folder: Path, scan, **options) -> list[Path]:
    return dicom_instances(write_dicom(cam, folder, scan, **options))


# -- validity ------------------------------------------------------------------------------------------


@needs_dciodvfy
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_passes_dciodvfy_on_the_shipped_ct(tmp_path, ct, explained, kind) -> None:
    files = write(explained, tmp_path / kind, ct, kind=kind)
    assert len(files) == (ct.shape[3] if kind == "overlay" else 1)
    for path in files:
        errors, _ = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"


@needs_dciodvfy
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # pydicom: a CT slice with a full patient module
        "eCT_Supplemental.dcm",  # pydicom-data: an enhanced (multi-frame) CT
        "693_UNCR.dcm",  # pydicom-data: a CT with no frame of reference, "identity removed" without a method
    ],
)
def test_every_kind_passes_dciodvfy_on_real_cts(tmp_path, name, kind) -> None:
    try:
        source = pydicom_file(name)
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", volcam.VolcamWarning)
        scan = volcam.load(source)
    for path in write(blob(scan), tmp_path / kind, scan, kind=kind, threshold=0.3 if kind != "overlay" else None):
        errors, _ = dciodvfy(path)
        assert errors == [], f"{name} {kind}: {errors}"


@needs_dciodvfy
@pytest.mark.parametrize("kind", KINDS)
def test_a_scan_that_was_not_dicom_gets_a_new_study_and_refers_to_nothing(tmp_path, kind) -> None:
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    cam = blob(scan)
    files = write(cam, tmp_path / kind, scan, kind=kind)
    datasets = [pydicom.dcmread(p) for p in files]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert {str(ds.PatientName) for ds in datasets} == {""} and {ds.PatientID for ds in datasets} == {""}
    for ds, path in zip(datasets, files, strict=True):
        assert "SourceImageSequence" not in ds and "ReferencedSeriesSequence" not in ds
        assert all(len(item.DerivationImageSequence) == 0 for item in ds.get("PerFrameFunctionalGroupsSequence", []))
        assert dciodvfy(path)[0] == []
    if kind == "parametric-map":  # the frames where the NIfTI's affine puts its slices, values as they were
        volume = hd.pm.ParametricMap.from_dataset(datasets[0]).get_volume()
        assert_same_values_at_scan_voxels(volume, scan, as_stored_in_parametric_map(cam))


# -- geometry and values ---------------------------------------------------------------------------------


def assert_same_values_at_scan_voxels(volume: hd.Volume, scan: torch.Tensor, cam: np.ndarray, atol=0.0) -> None:
    """The object's value at every scan voxel's patient point (highdicom's volume affine, LPS) is the map's."""
    index = np.indices(cam.shape).reshape(3, -1)
    world = (LPS @ scan.affine.numpy())[:3] @ np.vstack([index, np.ones(index.shape[1])])
    inside = np.linalg.inv(volume.affine)[:3] @ np.vstack([world, np.ones(world.shape[1])])
    voxel = np.round(inside).astype(int)
    np.testing.assert_allclose(inside, voxel, atol=1e-3)  # the same grid
    values = volume.array[tuple(voxel)]
    np.testing.assert_allclose(values.reshape(-1), cam.reshape(-1), atol=atol)


def test_parametric_map_reads_back_with_highdicom_on_the_source_slices(tmp_path, ct, explained) -> None:
    (path,) = write(explained, tmp_path / "pm", ct)  # the parametric map is the default
    ds = pydicom.dcmread(path)
    pm = hd.pm.ParametricMap.from_dataset(ds)
    slices = assert_frames_on_source_slices(ds, ct)
    cam = as_stored_in_parametric_map(explained.map[0])
    assert_same_values_at_scan_voxels(pm.get_volume(), ct, cam)  # float32 as computed: exact
    frames = ds.pixel_array  # frame by frame too (highdicom 0.28 reads float frames only as a volume)
    for index, k in enumerate(slices):
        np.testing.assert_array_equal(frames[index], cam[:, :, k].T)
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert (
        "gradcam" in mapping.LUTExplanation and "covid" in mapping.LUTExplanation and "layer" in mapping.LUTExplanation
    )
    assert (mapping.DoubleFloatRealWorldValueFirstValueMapped, mapping.DoubleFloatRealWorldValueLastValueMapped) == (
        0,
        1,
    )
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == "Class activation"


def test_the_parametric_map_stores_low_values_as_zero_and_says_so(tmp_path, ct, explained) -> None:
    # OHIF reads no window or LUT from a parametric map and tints the CT wherever a value is positive:
    # values at or below the threshold (0.1 by default) are stored as 0, the rest exactly as computed.
    cam = explained.map[0].numpy()
    assert ((cam > 0) & (cam <= 0.1)).mean() > 0.5  # most of this map is faint, positive evidence
    for threshold, expected in (
        (None, as_stored_in_parametric_map(cam)),
        (0.0, cam),
        (0.3, np.where(cam > 0.3, cam, 0)),
    ):
        options = {} if threshold is None else {"threshold": threshold}
        (path,) = write(explained, tmp_path / f"pm-{threshold}", ct, **options)
        ds = pydicom.dcmread(path)
        volume = hd.pm.ParametricMap.from_dataset(ds).get_volume()
        assert_same_values_at_scan_voxels(volume, ct, expected)
        said = "stored as 0" in ds.DerivationDescription
        assert said == (threshold != 0.0), ds.DerivationDescription
        assert f"at or below {0.1 if threshold is None else threshold:g}" in ds.DerivationDescription or not said
    with pytest.raises(InputError, match=r"threshold=1.5: .*\[0, 1\)"):
        write(explained, tmp_path / "bad", ct, threshold=1.5)
    assert not (tmp_path / "bad").exists()


def test_every_object_says_how_it_was_made(tmp_path, ct, explained) -> None:
    card_hash = hashlib.sha256(Path(sd.file(sd.CT_CARD)).read_bytes()).hexdigest()
    for kind in KINDS:
        ds = pydicom.dcmread(write(explained, tmp_path / kind, ct, kind=kind)[0])
        assert ds.Manufacturer == "volcam" and f"volcam {__version__}" in ds.SoftwareVersions
        assert f"model ct_covid sha256:{card_hash[:16]}" in ds.SoftwareVersions
        assert ds.SeriesDescription.startswith("volcam gradcam") and "'covid'" in ds.SeriesDescription
        derivation = ds.DerivationDescription
        for said in (card_hash, "layer layer2", "target covid", "option gradient_sigma_mm 2", __version__):
            assert said in derivation, (kind, said)
        if kind != "overlay":
            assert ds.ContentCreatorName == "volcam^" and "gradcam" in ds.ContentDescription
    seg = hd.seg.segread(tmp_path / "segmentation" / "0001.dcm")
    parameters = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert f"model_card_sha256={card_hash}" in parameters and "threshold=0.5" in parameters


@pytest.mark.parametrize(
    "transform",
    [
        Flip(spatial_axis=2),
        Flip(spatial_axis=0),
        Orientation(axcodes="SAL", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ],
    ids=["slices-reversed", "columns-reversed", "reoriented-SAL"],
)
def test_a_flipped_scan_keeps_every_frame_on_its_source_slice(tmp_path, ct, transform) -> None:
    cam = blob(ct)
    from monai.data import MetaTensor

    moved_scan = transform(ct)
    moved_map = transform(MetaTensor(cam[None], meta=dict(ct.meta)))  # the scan's affine and metadata
    assert not torch.equal(moved_map.as_tensor(), cam[None])  # the map's voxels did move
    for kind in ("parametric-map", "segmentation"):
        (path,) = write(moved_map, tmp_path / kind, moved_scan, kind=kind)
        ds = pydicom.dcmread(path)
        slices = assert_frames_on_source_slices(ds, ct, every=kind == "parametric-map")
        if kind == "parametric-map":
            stored = as_stored_in_parametric_map(cam)
            for index, k in enumerate(slices):
                np.testing.assert_array_equal(ds.pixel_array[index], stored[:, :, k].T)
            assert_same_values_at_scan_voxels(hd.pm.ParametricMap.from_dataset(ds).get_volume(), ct, stored)


@pytest.mark.parametrize("fractional", [False, True], ids=["binary", "fractional"])
def test_segmentation_reads_back_with_highdicom_by_source_instance(tmp_path, ct, explained, fractional) -> None:
    (path,) = write(explained, tmp_path / "seg", ct, kind="segmentation", fractional=fractional, threshold=0.4)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == ("FRACTIONAL" if fractional else "BINARY")
    assert seg.FrameOfReferenceUID == ct.meta["frame_of_reference_uid"]
    sources = source_slices(ct)
    uids = sorted(sources, key=lambda uid: sources[uid][0])  # in the scan's slice order
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=False)[..., 0]  # (slices, rows, columns)
    cam = explained.map[0].numpy().transpose(2, 1, 0)
    if fractional:
        np.testing.assert_allclose(pixels, cam, atol=0.5 / 255 + 1e-6)  # stored in steps of 1/255
    else:
        np.testing.assert_array_equal(pixels.astype(bool), cam > 0.4)
        assert 0 < pixels.mean() < 0.5
    for index, uid in enumerate(frame_sources(seg)):  # the frames kept (empty ones are left out) are placed right
        np.testing.assert_allclose(frame_position(seg, index), np.array(sources[uid][1].ImagePositionPatient, float))


@pytest.mark.parametrize("fractional", [False, True], ids=["binary", "fractional"])
def test_the_segment_recommends_the_overlays_colour_for_its_values(tmp_path, ct, explained, fractional) -> None:
    # OHIF warns "RecommendedDisplayCIELabValue not found" and picks a colour of its own without it.
    from volcam.maps.colour import colour_at

    (path,) = write(explained, tmp_path / "seg", ct, kind="segmentation", fractional=fractional, threshold=0.6)
    (segment,) = hd.seg.segread(path).SegmentSequence
    colour = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
    expected = colour_at(0.75 if fractional else 0.8)  # the middle of the values the segment holds
    assert np.abs(np.array(colour, dtype=int) - expected).max() <= 1
    assert expected[0] > 200 and expected[2] < 50  # the warm end of the colormap, not a default grey


def test_overlay_reads_back_with_highdicom_one_image_per_source_slice(tmp_path, ct, explained) -> None:
    files = write(explained, tmp_path / "overlay", ct, kind="overlay")
    sources = source_slices(ct)
    by_slice = sorted(sources.values(), key=lambda found: found[0])
    for k, path in enumerate(files):
        image = hd.imread(path)
        source = by_slice[k][1]
        assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        np.testing.assert_allclose(
            np.array(image.ImagePositionPatient, float), np.array(source.ImagePositionPatient, float), atol=1e-3
        )
        assert image.FrameOfReferenceUID == ct.meta["frame_of_reference_uid"] and image.PatientOrientation == ["L", "P"]
        assert image.get_frame(1).shape == (128, 128, 3)


def test_a_resampled_map_is_placed_by_its_affine_on_the_source_frame_of_reference(tmp_path, ct) -> None:
    resampled = Spacing(pixdim=(1.4, 1.4, 2.5))(ct)
    cam = blob(resampled)
    (path,) = write(cam, tmp_path / "pm", resampled)
    ds = pydicom.dcmread(path)
    assert ds.FrameOfReferenceUID == ct.meta["frame_of_reference_uid"] and (ds.Rows, ds.Columns) == (64, 64)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.meta["series_uid"]
    volume = hd.pm.ParametricMap.from_dataset(ds).get_volume()
    assert_same_values_at_scan_voxels(volume, resampled, as_stored_in_parametric_map(cam))


# -- refusals, identifiers, the command line -------------------------------------------------------------


def test_a_clip_is_refused_in_one_line_and_nothing_is_written(tmp_path) -> None:
    clip = volcam.load(sd.file(sd.LUS_DICOM))
    for kind in KINDS:
        with pytest.raises(InputError) as caught:
            write_dicom(torch.zeros(clip.shape[1:]), tmp_path / kind, clip, kind=kind)
        assert "clip" in str(caught.value) and "NIfTI" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError, match="kind='picture'; use one of"):
        write_dicom(torch.zeros(3, 3, 3), tmp_path / "x", clip, kind="picture")
    assert list(tmp_path.iterdir()) == []


def test_no_identifier_the_source_did_not_hold(tmp_path) -> None:
    for source_path in (pydicom_file("CT_small.dcm"), sorted(Path(sd.file(sd.CT_DICOM)).iterdir())[0].parent):
        scan = volcam.load(source_path)
        source = pydicom.dcmread(scan.meta["source_files"][0], stop_before_pixels=True)
        for kind in KINDS:
            folder = tmp_path / source_path.name / kind
            files = write(blob(scan), folder, scan, kind=kind)
            names = " ".join(p.name for p in folder.rglob("*"))
            assert not any(identifier in names for identifier in CT_SMALL_IDENTIFIERS)
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            for keyword in IDENTIFYING:
                if keyword in ds and str(ds.data_element(keyword).value or ""):
                    assert keyword in source and str(ds[keyword].value) == str(source[keyword].value), keyword


def test_volcam_explain_writes_the_chosen_kinds(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["explain", str(sd.file(sd.CT_DICOM)), "--model", str(sd.file(sd.CT_CARD)), "--dicom",
         "segmentation,overlay", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [p.name for p in dicom_instances(out / "gradcam_segmentation")] == ["0001.dcm"]
    assert len(dicom_instances(out / "gradcam_overlay")) == volcam.load(sd.file(sd.CT_DICOM)).shape[3]
    assert not (out / "gradcam_parametric-map").exists()
    bad = runner.invoke(app, ["explain", str(sd.file(sd.CT_DICOM)), "--model", str(sd.file(sd.CT_CARD)),
                              "--dicom", "picture", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code != 0 and "picture" in bad.output and not (tmp_path / "bad").exists()


def test_dicom_instances_of_what_is_not_an_output(tmp_path) -> None:
    with pytest.raises(InputError, match="no such DICOM output folder"):
        dicom_instances(tmp_path / "missing")


def test_napari_offers_the_three_kinds_as_writers(tmp_path, ct) -> None:
    npe2 = pytest.importorskip("npe2")
    from napari_volcam import _writer
    from napari_volcam._layers import EXPLANATION_KEY, INFO_KEY, SCAN_KEY

    manifest = npe2.PluginManifest.from_file(Path(_writer.__file__).with_name("napari.yaml"))
    commands = {command.id: command.python_name for command in manifest.contributions.commands}
    writers = {
        w.display_name: commands[w.command] for w in manifest.contributions.writers if ".dcm" in w.filename_extensions
    }
    assert len(writers) == 3
    # a map as the dock shows it: on the network's grid, written at the scan's full resolution
    with volcam.ScanSession(volcam.load_model(sd.file(sd.CT_CARD)), ct) as session:
        explanation = session.explain("gradcam", on="network")
    attributes = {
        "metadata": {INFO_KEY: {"geometry": {}, "grid": "network"}, SCAN_KEY: ct, EXPLANATION_KEY: explanation}
    }
    made = set()
    for number, (name, python_name) in enumerate(writers.items()):
        function = getattr(_writer, python_name.split(":")[1])
        written = function(str(tmp_path / f"map{number}.dcm"), None, attributes)
        assert written and all(Path(p).parent == tmp_path / f"map{number}" for p in written), name
        ds = pydicom.dcmread(written[0], stop_before_pixels=True)
        assert ds.FrameOfReferenceUID == ct.meta["frame_of_reference_uid"] and "gradcam" in ds.SeriesDescription
        made.add(ds.SOPClassUID.name)
    assert made == {"Parametric Map Storage", "Segmentation Storage", "Secondary Capture Image Storage"}
