"""Writers: DICOM objects read back by pydicom, atomic writes, unwritable paths, windowing.

The DICOM objects' validity (dciodvfy), highdicom read-back and provenance: ``test_dicom_objects.py``.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

import volcam
from io_fixtures import CT_SMALL_IDENTIFIERS, as_stored_in_parametric_map, make_series, nibabel_data
from volcam.errors import InputError, OutputError, VolcamWarning
from volcam.io import WINDOWS, apply_window, window_transform, write_dicom, write_nifti
from volcam.io.dicom.instances import dicom_instances

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def series(tmp_path):
    """A 6-slice CT series from real CT_small slices, shuffled names, a gap after slice 2."""
    uid, files = make_series(tmp_path / "ct", 7, skip=(3,))
    with pytest.warns(VolcamWarning, match="missing slices"):
        image = volcam.load(tmp_path / "ct")
    return image, uid, files


def blob(image) -> torch.Tensor:
    """A map on the image grid: a bright ball in the patient's right-anterior part, zero elsewhere."""
    shape = image.shape[1:]
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    centre = torch.tensor([0.3 * shape[0], 0.3 * shape[1], shape[2] / 2]).view(3, 1, 1, 1)
    scale = torch.tensor([shape[0] / 6, shape[1] / 6, max(1.0, shape[2] / 3)]).view(3, 1, 1, 1)
    return torch.exp(-(((grid - centre) / scale) ** 2).sum(0))


def test_overlay_keeps_study_frame_of_reference_and_each_slice_geometry(tmp_path, series) -> None:
    image, uid, files = series
    cam = blob(image)
    out = write_dicom(cam, tmp_path / "derived", like=image, kind="overlay")
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{k:04d}.dcm" for k in range(1, 7)] == [p.name for p in dicom_instances(out)]
    derived = [pydicom.dcmread(p) for p in written]
    sources = [pydicom.dcmread(f) for f in files]

    series_uids = {ds.SeriesInstanceUID for ds in derived}
    assert len(series_uids) == 1 and uid not in series_uids
    sop_uids = [ds.SOPInstanceUID for ds in derived]
    assert len(set(sop_uids)) == 6 and not set(sop_uids) & {ds.SOPInstanceUID for ds in sources}
    for ds, source in zip(derived, sources, strict=True):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        # The source slice's own position, also across the gap (which a regular grid cannot hold).
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(
            [float(v) for v in source.ImagePositionPatient]
        )
        assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx(
            [float(v) for v in source.ImageOrientationPatient]
        )
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([float(v) for v in source.PixelSpacing])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ds.SeriesDescription.startswith("volcam")
    assert [ds.InstanceNumber for ds in derived] == list(range(1, 7))
    rgb = derived[3].pixel_array  # (rows, columns, 3)
    assert rgb.shape == (128, 128, 3) and derived[3].PhotometricInterpretation == "RGB"
    hot = cam[:, :, 3].T.numpy() > 0.8
    red, blue = rgb[..., 0].astype(int), rgb[..., 2].astype(int)
    assert (red - blue)[hot].mean() > 60  # jet's red where the map is high
    cold = cam[:, :, 3].T.numpy() < 0.01
    assert np.abs(red - blue)[cold].max() == 0  # the untouched grey image elsewhere


def test_parametric_map_frames_sit_on_the_source_slices_across_a_gap(tmp_path, series) -> None:
    image, uid, files = series
    cam = blob(image)
    out = write_dicom(cam, tmp_path / "derived", like=image)  # the parametric map is the default
    (written,) = dicom_instances(out)
    ds = pydicom.dcmread(written)
    sources = {source.SOPInstanceUID: source for source in (pydicom.dcmread(f) for f in files)}
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and int(ds.NumberOfFrames) == 6
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    referenced = []
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source = sources[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        referenced.append(source.SOPInstanceUID)
        # each frame at its source slice's own position, also past the gap
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == pytest.approx(
            [float(v) for v in source.ImagePositionPatient], abs=1e-3
        )
    assert sorted(referenced) == sorted(sources)
    with pytest.warns(VolcamWarning, match="missing slices"):  # the source's gap is kept
        back = volcam.load(out)  # float32 values, read as they were computed
    np.testing.assert_array_equal(back[0].numpy(), as_stored_in_parametric_map(cam))
    assert back.meta["study_uid"] == image.meta["study_uid"]


def assert_same_voxels(a, a_values: np.ndarray, b, b_values: np.ndarray) -> None:
    """Every voxel of ``a`` is a voxel of ``b`` at the same patient point, with the same value.

    The two grids may number their voxels differently (a DICOM reader orders slices along the
    normal, whatever order they were written in): ``inv(B) · A`` must then be a signed
    permutation with an integer offset, and the values must agree through it.
    """
    index_map = np.linalg.inv(b.affine.numpy()) @ a.affine.numpy()
    assert np.allclose(index_map, np.round(index_map), atol=1e-3), index_map
    index_map = np.round(index_map).astype(int)
    grid = np.indices(a_values.shape).reshape(3, -1)
    mapped = index_map[:3, :3] @ grid + index_map[:3, 3:]
    assert (mapped >= 0).all() and (mapped < np.array(b_values.shape)[:, None]).all()
    np.testing.assert_allclose(b_values[tuple(mapped)], a_values[tuple(grid)], atol=6e-4)


def test_derived_series_from_an_oblique_nifti_reloads_at_the_same_patient_points(tmp_path) -> None:
    image = volcam.load(nibabel_data("example4d.nii.gz"), volume=0)
    cam = blob(image)
    out = write_dicom(cam, tmp_path / "derived", like=image, description="test map")
    back = volcam.load(out)
    assert back.meta["series_description"] == "test map"
    # This NIfTI's slices run against the DICOM normal, so the reader numbers them the other way.
    assert_same_voxels(image, as_stored_in_parametric_map(cam), back, back[0].numpy())


def test_derived_series_carries_no_identifier_in_names_but_keeps_the_patient_module(tmp_path, series) -> None:
    image, _, files = series
    out = write_dicom(blob(image), tmp_path / "derived", like=image)
    names = " ".join(p.name for p in out.rglob("*"))
    assert not any(identifier in names for identifier in CT_SMALL_IDENTIFIERS)
    first = pydicom.dcmread(next(out.iterdir()))
    assert first.PatientID == pydicom.dcmread(files[0]).PatientID  # so a PACS files it under the patient


def test_map_off_the_image_grid_is_refused(tmp_path, series) -> None:
    image, _, _ = series
    with pytest.raises(InputError, match="not on the image grid"):
        write_dicom(torch.rand(64, 64, 6), tmp_path / "x", like=image)
    with pytest.raises(InputError, match="not on the image grid"):
        write_nifti(torch.rand(64, 64, 6), tmp_path / "x.nii.gz", like=image)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.nii.gz").exists()


def test_unwritable_output_path_is_one_line_and_leaves_nothing(tmp_path, series) -> None:
    image, _, _ = series
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    for target in (blocker / "map.nii.gz", blocker / "series"):
        with pytest.raises(OutputError) as caught:
            if target.suffix:
                write_nifti(blob(image), target, like=image)
            else:
                write_dicom(blob(image), target, like=image)
        assert str(target) in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == ["a-file", "ct"]


def test_failed_writes_leave_nothing_half_written(tmp_path, series, monkeypatch) -> None:
    image, _, _ = series
    calls = {"n": 0}
    real_write = pydicom.dcmwrite

    def fail_on_third(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmwrite", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dicom(blob(image), tmp_path / "derived", like=image, kind="overlay")

    from volcam.io import nifti

    real_voxel_bytes = nifti._voxel_bytes
    blocks = {"n": 0}

    def disk_fills_after_the_first_block(block):  # the header and one block written, then the disk is full
        blocks["n"] += 1
        if blocks["n"] > 1:
            raise OSError(28, "No space left on device")
        return real_voxel_bytes(block)

    monkeypatch.setattr(nifti, "_BLOCK_BYTES", 1024)  # the small CT's map in many blocks
    monkeypatch.setattr(nifti, "_voxel_bytes", disk_fills_after_the_first_block)
    for name in ("map.nii", "map.nii.gz"):
        blocks["n"] = 0
        with pytest.raises(OutputError, match="No space left on device"):
            write_nifti(blob(image), tmp_path / name, like=image)
        assert blocks["n"] > 1
    assert sorted(os.listdir(tmp_path)) == ["ct"]


def test_existing_series_folder_is_kept_unless_overwrite(tmp_path, series) -> None:
    image, _, _ = series
    out = write_dicom(blob(image), tmp_path / "derived", like=image)
    with pytest.raises(OutputError, match="already exists"):
        write_dicom(blob(image), out, like=image)
    write_dicom(blob(image), out, like=image, kind="overlay", overwrite=True)
    assert len(list(out.iterdir())) == 6
    assert pydicom.dcmread(next(out.iterdir())).PhotometricInterpretation == "RGB"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_nifti_of_a_cam_result_takes_the_result_and_the_source_affine(tmp_path) -> None:
    from torch import nn

    image = volcam.load(nibabel_data("anatomical.nii"))
    net = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    result = volcam.explain(net.eval(), image[None], "gradcam", layer="1")
    out = write_nifti(result, tmp_path / "cam.nii.gz", like=image)
    written = nib.load(out)
    np.testing.assert_array_equal(written.affine, nib.load(nibabel_data("anatomical.nii")).affine)
    assert written.shape == image.shape[1:]
    assert b"gradcam" in written.header["descrip"].tobytes()


def test_window_presets_in_hounsfield_units() -> None:
    assert WINDOWS["lung"] == (1500.0, -600.0)
    assert set(WINDOWS) >= {"lung", "mediastinum", "bone", "brain"}
    hu = np.array([-1350.0, -600.0, 150.0, 2000.0])
    np.testing.assert_allclose(apply_window(hu, "lung"), [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(apply_window(torch.tensor([0.0, 40.0, 80.0]), (80, 40)).numpy(), [0.0, 0.5, 1.0])
    transform = window_transform("brain")
    np.testing.assert_allclose(np.asarray(transform(np.array([0.0, 40.0, 100.0]))), [0.0, 0.5, 1.0])
    with pytest.raises(InputError, match="unknown window 'liver'"):
        apply_window(hu, "liver")
