"""The readers in napari: real DICOM (pydicom-data), the shipped DICOM series, NIfTI, ITK formats, video, bad files."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

import volcam
from io_fixtures import CT_SMALL_IDENTIFIERS, make_series, pydicom_file
from volcam import sample_data
from volcam.io.formats import READABLE_SUFFIXES
from volcam.maps.windowing import window_bounds
from volcam.viz.display import display_geometry


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def notifications():
    """Messages napari shows to the user while the test runs."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def record(event) -> None:
        seen.append(str(event.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def _open(viewer, path):
    return viewer.open(str(path), plugin="volcam")


def test_dicom_series_folder_opens_with_spacing_origin_and_lung_window(viewer):
    (layer,) = _open(viewer, sample_data.file(sample_data.CT_DICOM))
    scan = volcam.load(sample_data.file(sample_data.CT_DICOM))
    geometry = display_geometry(scan)
    assert layer.data.shape == (48, 128, 128)  # axial slices on the slider
    np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.7), rtol=1e-6)
    np.testing.assert_allclose(layer.translate, geometry.translate)
    # the LPS origin of the first displayed voxel is the DICOM ImagePositionPatient of the lowest slice
    lps = np.diag([-1, -1, 1, 1]) @ scan.affine.numpy()
    np.testing.assert_allclose(layer.translate, lps[[2, 1, 0], 3], atol=1e-4)
    assert tuple(layer.contrast_limits) == window_bounds("lung")
    info = layer.metadata["volcam"]
    assert info["modality"] == "CT" and info["geometry"]["axes"] == "zyx"
    assert "PHANTOM" not in layer.name and "PHANTOM" not in repr(info)  # the phantom's patient name


def test_real_dicom_series_without_patient_identifiers(viewer, tmp_path):
    make_series(tmp_path, 5, step=2.0, description="chest axial")
    (layer,) = _open(viewer, tmp_path)
    assert layer.data.shape[0] == 5 and layer.name == "CT chest axial"
    np.testing.assert_allclose(layer.scale[0], 2.0, rtol=1e-5)
    text = layer.name + repr(layer.metadata["volcam"])
    assert not any(identifier in text for identifier in CT_SMALL_IDENTIFIERS)


def test_ultrasound_cine_opens_as_a_clip_with_a_time_axis(viewer):
    (layer,) = _open(viewer, pydicom_file("examples_ybr_color.dcm"))
    assert layer.rgb and layer.data.shape == (30, 240, 320, 3) and layer.data.dtype == np.uint8
    assert layer.axis_labels[0] == "t" and str(layer.units[0]) == "second"
    np.testing.assert_allclose(layer.scale[0], 1 / 30, rtol=1e-3)  # frame time 33.3 ms
    assert viewer.dims.nsteps[0] == 30
    assert layer.metadata["volcam"]["geometry"]["axes"] == "tyx"


def test_enhanced_multiframe_mr_is_a_volume(viewer):
    (layer,) = _open(viewer, pydicom_file("emri_small.dcm"))
    scan = volcam.load(pydicom_file("emri_small.dcm"))
    assert layer.data.shape == display_geometry(scan).to_display(scan[0].numpy()).shape
    assert layer.metadata["volcam"]["modality"] == "MR" and not layer.rgb


def test_nifti_and_nrrd_show_the_same_as_the_dicom_series(viewer, tmp_path):
    import SimpleITK as sitk

    (dicom,) = _open(viewer, sample_data.file(sample_data.CT_DICOM))
    (nifti,) = _open(viewer, sample_data.file(sample_data.CT_NIFTI))
    sitk.WriteImage(sitk.ReadImage(str(sample_data.file(sample_data.CT_NIFTI))), str(tmp_path / "ct.nrrd"))
    (nrrd,) = _open(viewer, tmp_path / "ct.nrrd")
    for layer in (nifti, nrrd):
        np.testing.assert_array_equal(layer.data, dicom.data)
        np.testing.assert_allclose(layer.scale, dicom.scale, rtol=1e-5)
        np.testing.assert_allclose(layer.translate, dicom.translate, atol=1e-3)


def test_video_opens_as_a_clip(viewer, tmp_path):
    av = pytest.importorskip("av")
    import pydicom

    frames = pydicom.dcmread(pydicom_file("examples_ybr_color.dcm")).pixel_array[:10]
    path = tmp_path / "echo.avi"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    (layer,) = _open(viewer, path)
    assert layer.data.shape[:3] == (10, 240, 320) and layer.axis_labels[0] == "t"
    np.testing.assert_allclose(layer.scale[0], 0.04, rtol=1e-3)


@pytest.mark.parametrize("name", ["broken.dcm", "broken.nii.gz"])
def test_a_bad_file_gives_a_notification_with_the_reason(viewer, notifications, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image" * 10)
    layers = _open(viewer, path)
    assert layers == [] and len(viewer.layers) == 0
    assert any(name in message and "volcam cannot open" in message for message in notifications), notifications
    (ct,) = _open(viewer, sample_data.file(sample_data.CT_NIFTI))  # the viewer still works
    assert ct.data.shape == (48, 128, 128)


def test_get_reader_refuses_what_it_cannot_read(tmp_path):
    from napari_volcam._reader import napari_get_reader

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.zarr").mkdir()
    assert napari_get_reader(str(tmp_path / "a.png")) is None
    assert napari_get_reader(str(tmp_path / "b.zarr")) is None
    assert napari_get_reader([str(tmp_path), str(tmp_path)]) is None
    assert napari_get_reader(str(tmp_path)) is not None


def test_sample_data_gives_scans_with_their_masks(viewer):
    ct = viewer.open_sample("volcam", "demo_ct")
    us = viewer.open_sample("volcam", "demo_ultrasound")
    assert [layer.name for layer in ct] == ["demo chest CT", "demo chest CT lesions"]
    assert ct[1].data.shape == ct[0].data.shape and set(np.unique(ct[1].data)) == {0, 1, 2}
    np.testing.assert_allclose(ct[1].scale, ct[0].scale)
    assert us[0].data.shape == us[1].data.shape == (24, 128, 128)
    assert us[0].axis_labels[0] == "t"


def test_manifest_reader_patterns_are_volcams_one_table_of_suffixes():
    from importlib.resources import files

    import yaml

    from volcam.io.formats import DICOMWEB_PATTERNS, READABLE_SUFFIXES

    manifest = yaml.safe_load(files("napari_volcam").joinpath("napari.yaml").read_text())
    (reader,) = manifest["contributions"]["readers"]
    assert reader["filename_patterns"] == [f"*{suffix}" for suffix in READABLE_SUFFIXES] + list(DICOMWEB_PATTERNS)


@pytest.mark.parametrize("suffix", READABLE_SUFFIXES)
def test_get_reader_accepts_every_readable_suffix(tmp_path, suffix):
    from napari_volcam._reader import napari_get_reader

    path = tmp_path / f"scan{suffix.upper()}"
    assert napari_get_reader(str(path)) is not None
