"""Derived DICOM in the order viewers stack it, for every source layout volcam reads.

OHIF copies a parametric map's frames into the source volume in file order, and dcmqi (3D Slicer)
stacks them in file order; both sort the source's slices ascending along the normal
``row × column``. A map whose frames ran the other way showed its hot spots on the mirrored slices.
Here every derived object (parametric map, segmentation, the overlay series' instance numbers) is
checked to run ascending along its own normal, frame ``k + 1`` past frame ``k``, with its position
dimension index counting the planes in that order, each frame referring to the source slice (or
source frame) at its position and holding the map's values of that slice: for series stacked either
way along the normal, with the normal itself reversed, with a gap, with a tilted gantry, for an
enhanced multi-frame source stored against the normal, for NIfTI sources, and for maps on a flipped,
reoriented or resampled grid.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Flip, Orientation, Spacing
from pydicom.uid import generate_uid

import volcam
from io_fixtures import as_stored_in_parametric_map, make_series
from volcam.errors import VolcamWarning
from volcam.io.dicom.instances import dicom_instances
from volcam.io.image import LPS_TO_RAS
from volcam.io.write import write_dicom
from volcam.testing.phantoms import chest_ct, write_ct_dicom

KINDS = ("parametric-map", "segmentation", "overlay")
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
SHAPE = (41, 37, 10)  # small phantoms; a binary segmentation's frames are then not whole bytes


def blob(scan: torch.Tensor) -> torch.Tensor:
    """A map ``(X, Y, Z)`` on ``scan``'s grid: a smooth off-centre ball, 0 to 1, no symmetry, so a
    frame on the wrong slice (or mirrored in its plane) holds other values."""
    axes = [torch.linspace(-1.0, 1.0, n) for n in scan.shape[1:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    centre = torch.tensor([0.3, -0.2, 0.37]).view(3, 1, 1, 1)
    return torch.exp(-(((grid - centre) / 0.6) ** 2).sum(0)).float()


def load(path: Path) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolcamWarning)  # gaps and tilts are reported; here they are wanted
        return volcam.load(path)


def normal_of(orientation) -> np.ndarray:
    orientation = np.asarray(orientation, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def headers_by_uid(scan: torch.Tensor) -> dict[str, pydicom.Dataset]:
    return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in scan.meta["source_files"])}


def source_position(sources: dict[str, pydicom.Dataset], reference: pydicom.Dataset) -> np.ndarray:
    """Where the source slice (or source frame) a derived frame refers to lies, LPS mm."""
    source = sources[reference.ReferencedSOPInstanceUID]
    if "ReferencedFrameNumber" in reference:
        item = source.PerFrameFunctionalGroupsSequence[int(reference.ReferencedFrameNumber) - 1]
        return np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    return np.array(source.ImagePositionPatient, dtype=float)


def map_slice_at(cam: torch.Tensor, scan: torch.Tensor, position: np.ndarray) -> np.ndarray:
    """The map's slice ``(rows, columns)`` = ``(y, x)`` at a frame's position on ``scan``'s grid: the
    source slice the reader found there (also past a gap, which a regular grid cannot hold), else the
    slice the affine puts there."""
    if "slice_positions_lps" in scan.meta:
        distances = np.linalg.norm(np.asarray(scan.meta["slice_positions_lps"]) - position, axis=1)
        k = int(np.argmin(distances))
        assert distances[k] < 1e-3, "no slice of the scan lies at the frame's position"
    else:
        index = np.linalg.inv(LPS_TO_RAS @ scan.affine.numpy()) @ np.append(position, 1.0)
        k = round(float(index[2]))
        np.testing.assert_allclose(index[:3], [0.0, 0.0, k], atol=1e-3)  # the frame is slice k, from its corner
    return cam[:, :, k].T.numpy()


Expected = tuple[torch.Tensor, torch.Tensor]  # a map and the scan whose grid it is on


def assert_multiframe_in_viewer_order(
    ds: pydicom.Dataset, scan: torch.Tensor, expected: Expected, referenced: bool = True
) -> None:
    """Frames ascending along the normal, the position index 1, 2, ... in that order, each frame's
    source slice at its position (``referenced``), and the ``expected`` map's values of the slice at
    its position (a segmentation: where they exceed 0.5)."""
    items = ds.PerFrameFunctionalGroupsSequence
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    positions = np.array([item.PlanePositionSequence[0].ImagePositionPatient for item in items], dtype=float)
    along = positions @ normal_of(orientation)
    assert np.all(np.diff(along) > 0.1), f"frames not ascending along the normal: {along}"
    pointers = [int(item.DimensionIndexPointer) for item in ds.DimensionIndexSequence]
    column = pointers.index(0x00200032)
    planes = [np.atleast_1d(item.FrameContentSequence[0].DimensionIndexValues)[column] for item in items]
    segmentation = ds.SOPClassUID == SEGMENTATION
    if segmentation:  # empty planes are left out
        assert planes == sorted(set(planes)) and planes[0] >= 1
    else:
        assert planes == list(range(1, len(items) + 1))
    if referenced:
        sources = headers_by_uid(scan)
        for item, position in zip(items, positions, strict=True):
            (reference,) = item.DerivationImageSequence[0].SourceImageSequence
            np.testing.assert_allclose(source_position(sources, reference), position, atol=1e-3)
    frames = ds.pixel_array.reshape(len(items), ds.Rows, ds.Columns)
    for k, position in enumerate(positions):
        values = map_slice_at(*expected, position)
        if segmentation:
            np.testing.assert_array_equal(frames[k], values > 0.5)
        else:
            np.testing.assert_allclose(frames[k], as_stored_in_parametric_map(values), atol=1e-6)


def assert_overlay_in_viewer_order(files: list[Path], scan: torch.Tensor, referenced: bool = True) -> None:
    """Instance numbers ascending along the normal, each image referring to the source slice at its position."""
    images = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: int(ds.InstanceNumber))
    assert [int(ds.InstanceNumber) for ds in images] == list(range(1, len(images) + 1))
    normal = normal_of(images[0].ImageOrientationPatient)
    along = [np.array(ds.ImagePositionPatient, dtype=float) @ normal for ds in images]
    assert np.all(np.diff(along) > 0.1), f"instance numbers not ascending along the normal: {along}"
    if referenced:
        sources = headers_by_uid(scan)
        for ds in images:
            (reference,) = ds.SourceImageSequence
            np.testing.assert_allclose(
                source_position(sources, reference), np.array(ds.ImagePositionPatient, dtype=float), atol=1e-3
            )


def assert_every_kind_in_viewer_order(
    tmp_path: Path, cam, scan: torch.Tensor, expected: Expected, referenced: bool = True
) -> None:
    """Write ``cam`` (on ``scan``'s grid) as every kind and check each against the ``expected`` map."""
    for kind in KINDS:
        files = dicom_instances(write_dicom(cam, tmp_path / kind, scan, kind=kind))
        if kind == "overlay":
            assert_overlay_in_viewer_order(files, scan, referenced)
        else:
            (path,) = files
            assert_multiframe_in_viewer_order(pydicom.dcmread(path), scan, expected, referenced)


# -- series stacked every way -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation",
    ["LPS", "LPI", "LAS", "LAI"],
    ids=["normal-up", "normal-up-numbered-down", "normal-down", "normal-down-numbered-down"],
)
def test_a_series_stacked_either_way_gives_frames_ascending_along_its_normal(tmp_path, orientation) -> None:
    # LPS (the shipped CT): normal row × column towards the head, InstanceNumber 1 at the feet. LPI: the
    # same normal, InstanceNumber 1 at the head. LAS, LAI: the columns run anterior, so the normal points
    # to the feet and viewers stack the slices head first.
    folder = write_ct_dicom(chest_ct(3, True, shape=SHAPE, orientation=orientation), tmp_path / "ct", key=orientation)
    scan = load(folder)
    cam = blob(scan)
    assert_every_kind_in_viewer_order(tmp_path, cam, scan, (cam, scan))


def test_a_series_with_a_gap_and_a_tilted_gantry(tmp_path) -> None:
    make_series(tmp_path / "ct", 7, step=-4.0, skip=(2,), shear=1.5)  # descending z, a slice missing, sheared
    scan = load(tmp_path / "ct")
    assert scan.shape[-1] == 6
    cam = blob(scan)
    assert_every_kind_in_viewer_order(tmp_path, cam, scan, (cam, scan))


def test_an_enhanced_multiframe_source_stored_against_the_normal(tmp_path) -> None:
    phantom = chest_ct(4, True, shape=SHAPE, orientation="LAS")  # normal towards the feet
    folder = write_ct_dicom(phantom, tmp_path / "ct", key="enhanced")
    legacy = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom on the phantom's one-component name
        enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(legacy, generate_uid(), 5, generate_uid(), 1)
    along = [
        np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float) @ np.array([0.0, 0.0, -1.0])
        for item in enhanced.PerFrameFunctionalGroupsSequence
    ]
    assert np.all(np.diff(along) < 0)  # the file's frames run against the normal
    enhanced.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    scan = load(tmp_path / "enhanced.dcm")
    cam = blob(scan)
    for kind in ("parametric-map", "segmentation"):
        (path,) = dicom_instances(write_dicom(cam, tmp_path / kind, scan, kind=kind))
        ds = pydicom.dcmread(path)
        assert_multiframe_in_viewer_order(ds, scan, (cam, scan))
        numbers = [
            int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
            for item in ds.PerFrameFunctionalGroupsSequence
        ]
        if kind == "parametric-map":
            assert numbers == list(range(len(numbers), 0, -1))  # the source's frames from its last
    assert_overlay_in_viewer_order(dicom_instances(write_dicom(cam, tmp_path / "overlay", scan, kind="overlay")), scan)


# -- maps on other grids, scans that were not DICOM ----------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        Flip(spatial_axis=2),
        Orientation(axcodes="SAL", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ],
    ids=["slices-reversed", "axes-permuted", "reoriented-RAS"],
)
def test_a_map_on_a_flipped_or_permuted_grid(tmp_path, transform) -> None:
    folder = write_ct_dicom(chest_ct(6, True, shape=SHAPE, orientation="LAS"), tmp_path / "ct", key="moved")
    scan = load(folder)
    cam = blob(scan)
    moved_scan = transform(scan)
    moved_map = transform(MetaTensor(cam[None], meta=dict(scan.meta)))  # the scan's affine and metadata
    assert_every_kind_in_viewer_order(tmp_path, moved_map, moved_scan, (cam, scan))


def test_a_resampled_map_whose_slices_run_against_the_normal(tmp_path) -> None:
    # The map's grid is not the source's: placed by its affine, its frames still ascend along the normal.
    folder = write_ct_dicom(chest_ct(7, True, shape=SHAPE, orientation="LPS"), tmp_path / "ct", key="resampled")
    scan = Spacing(pixdim=(1.4, 1.4, 2.5))(Flip(spatial_axis=2)(load(folder)))
    assert scan.affine[2, 2] < 0  # the resampled grid's slices run from the head
    del scan.meta["slice_positions_lps"]  # the source's, carried over: the map's slices are where its affine says
    cam = blob(scan)
    for kind in ("parametric-map", "segmentation"):
        (path,) = dicom_instances(write_dicom(cam, tmp_path / kind, scan, kind=kind))
        ds = pydicom.dcmread(path)
        assert_multiframe_in_viewer_order(ds, scan, (cam, scan), False)
    files = dicom_instances(write_dicom(cam, tmp_path / "overlay", scan, kind="overlay"))
    assert_overlay_in_viewer_order(files, scan, referenced=False)


@pytest.mark.parametrize("orientation", ["RAS", "LPI", "RPI", "LAS"])
def test_a_nifti_source_in_any_orientation(tmp_path, orientation) -> None:
    phantom = chest_ct(8, True, shape=SHAPE, orientation=orientation)
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), tmp_path / "ct.nii.gz")
    scan = load(tmp_path / "ct.nii.gz")
    cam = blob(scan)
    assert_every_kind_in_viewer_order(tmp_path, cam, scan, (cam, scan), referenced=False)
    # the object is a stand-in study's: the frames hold the map of the slice at their position all the same
    (path,) = dicom_instances(tmp_path / "parametric-map")
    volume = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path)).get_volume()
    assert volume.spatial_shape[0] == SHAPE[2]
