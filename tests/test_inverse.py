"""The way back to the scan's grid: separable where the chain is axis-aligned, equal to MONAI's inverse."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import volcam
from volcam import sample_data as sd
from volcam.io.image import make_volume
from volcam.maps.geometry import axis_aligned, resample_axis_aligned
from volcam.model.preprocess import Preprocessing

CARD_STEPS = [
    {"name": "Orientation", "args": {"axcodes": "RAS"}},
    {"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0], "mode": "bilinear"}},
    {"name": "ScaleIntensityRange", "args": {"a_min": -1000, "a_max": 200, "b_min": 0.0, "b_max": 1.0, "clip": True}},
    {"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [32, 32, 24]}},
]


def odd_scan() -> MetaTensor:
    """An anisotropic scan whose voxel axes are permuted and flipped against RAS (a sagittal stack)."""
    data = np.random.default_rng(0).normal(size=(1, 60, 40, 30)).astype(np.float32)
    affine = np.array([[0, 0, -2.5, 10], [0.8, 0, 0, -20], [0, -1.3, 0, 5], [0, 0, 0, 1]], dtype=float)
    return make_volume(data, affine, path="odd.nii.gz", modality="CT")


def route_is_separable(pre: Preprocessing, prepared, scan) -> bool:
    carried = MetaTensor(
        torch.rand(1, *prepared.shape[1:]),
        meta=dict(prepared.meta),
        applied_operations=copy.deepcopy(list(prepared.applied_operations)),
    )
    carried.affine = prepared.affine
    return pre._separable(carried, scan) is not None


@pytest.mark.parametrize(
    ("scan_name", "steps", "separable"),
    [
        ("ct", CARD_STEPS, True),  # the shipped CT card: LPS 0.7 × 0.7 × 2.5 mm
        ("ct", CARD_STEPS[:2], True),
        ("ct", [CARD_STEPS[1], {"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [40, 20, 30]}}], True),
        ("ct", [CARD_STEPS[0], {"name": "Resize", "args": {"spatial_size": [50, 40, 30], "mode": "trilinear"}}], True),
        ("odd", [CARD_STEPS[0], {"name": "Spacing", "args": {"pixdim": [2.0, 1.7, 3.1]}}], True),
        ("odd", [{"name": "Orientation", "args": {"axcodes": "LPI"}},
                 {"name": "Spacing", "args": {"pixdim": [0.5, 0.9, 1.1]}},
                 {"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [40, 60, 50]}}], True),
        ("ct", [{"name": "Resize", "args": {"spatial_size": [50, 40, 30]}}], False),  # area: MONAI's own inverse
        ("ct", [CARD_STEPS[1], {"name": "Resize", "args": {"spatial_size": [20, 20, 20], "mode": "trilinear"}}], False),
        ("ct", [CARD_STEPS[1], {"name": "Resize", "args": {"spatial_size": [20, 20, 20], "mode": "trilinear"}},
                {"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [24, 16, 20]}}], False),  # 2 resamplings
    ],
)  # fmt: skip
def test_the_fast_route_equals_monais_inverse(scan_name, steps, separable) -> None:
    scan = volcam.load(sd.file(sd.CT_NIFTI)) if scan_name == "ct" else odd_scan()
    pre = Preprocessing(steps)
    prepared = pre(scan)
    cam = torch.rand(1, *prepared.shape[1:], generator=torch.Generator().manual_seed(0))
    assert route_is_separable(pre, prepared, scan) is separable
    fast = pre.invert(cam, prepared, like=scan)
    reference = pre.invert(cam, prepared)  # without the scan: MONAI's inverse, step by step
    assert tuple(fast.shape) == tuple(scan.shape)
    assert float((fast - reference).abs().max()) <= 1e-3


@pytest.mark.parametrize(
    ("scan_name", "steps", "fast"),
    [
        ("ct", CARD_STEPS, True),
        ("dicom", CARD_STEPS, True),  # int16, slice-contiguous as a DICOM series loads
        ("odd", [CARD_STEPS[0], {"name": "Spacing", "args": {"pixdim": [2.0, 1.7, 3.1]}}, CARD_STEPS[3]], True),
        ("odd", [{"name": "Spacing", "args": {"pixdim": [0.5, 0.9, 1.1]}}], True),  # upsampling, no orientation
        ("ct", [{"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0], "padding_mode": "zeros"}}], False),
        ("ct", [{"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0], "mode": "nearest"}}], False),
        ("ct", [CARD_STEPS[2], CARD_STEPS[1]], False),  # an intensity step first
        ("ct", [CARD_STEPS[0], {"name": "Resize", "args": {"spatial_size": [50, 40, 30], "mode": "trilinear"}}], True),
        ("ct", [{"name": "Resize", "args": {"spatial_size": [50, 40, 30]}}], False),  # area mode
        ("ct", [{"name": "Resize", "args": {"spatial_size": [50, 40, 30], "mode": "trilinear",
                                              "anti_aliasing": True}}], False),
        ("clip", [{"name": "Resize", "args": {"spatial_size": [-1, 112, 112], "mode": "trilinear"}},
                  {"name": "ScaleIntensityRange", "args": {"a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0}}],
         True),  # an RGB ultrasound clip's uint8 frames, as a frame or window card prepares them
    ],
)  # fmt: skip
def test_the_fast_way_there_equals_monais_transforms(scan_name, steps, fast) -> None:
    """The leading orientation + linear Spacing (or linear Resize) run as one separable pass on the scan
    as stored; the network input, its affine and the inverse records are MONAI's own."""
    if scan_name == "dicom":
        scan = volcam.load(sd.file(sd.CT_DICOM))
    elif scan_name == "clip":
        scan = volcam.load(sd.file(sd.LUS_DICOM))
        assert scan.dtype == torch.uint8
    else:
        scan = volcam.load(sd.file(sd.CT_NIFTI)) if scan_name == "ct" else odd_scan()
    pre = Preprocessing(steps, channels=scan.shape[0])
    assert (pre._resample_separably(scan) is not None) is fast
    prepared = pre(scan)
    reference = pre._run(scan.to(torch.float32, memory_format=torch.contiguous_format), pre.compose.transforms, "scan")
    assert tuple(prepared.shape) == tuple(reference.shape)
    assert torch.allclose(prepared.affine.double(), reference.affine.double(), atol=1e-6)
    scale = float(reference.abs().max()) or 1.0
    assert float((prepared.as_tensor() - reference.as_tensor()).abs().max()) <= 1e-5 * scale
    assert [r["class"] for r in prepared.applied_operations] == [r["class"] for r in reference.applied_operations]
    cam = torch.rand(1, *prepared.shape[1:], generator=torch.Generator().manual_seed(0))
    back = pre.invert(cam, prepared)  # MONAI's inverse from the records the fast way left
    assert float((back - pre.invert(cam, reference)).abs().max()) <= 1e-4


def test_oblique_grids_are_not_axis_aligned() -> None:
    eye = torch.eye(4, dtype=torch.float64)
    rotated = eye.clone()
    angle = torch.tensor(0.3, dtype=torch.float64)
    rotated[:2, :2] = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    assert axis_aligned(eye, rotated) is None
    flipped = torch.diag(torch.tensor([-2.0, 1.0, 0.5, 1.0], dtype=torch.float64))
    axes, scale, offset = axis_aligned(eye, flipped)
    assert axes == [0, 1, 2] and scale == [-2.0, 1.0, 0.5] and offset == [0.0, 0.0, 0.0]
    assert resample_axis_aligned(torch.rand(1, 4, 4, 4), eye, rotated, (4, 4, 4)) is None


def test_the_model_takes_the_fast_route(monkeypatch) -> None:
    """Model.explain maps back without MONAI's full inverse on the demo card (axis-aligned)."""
    model = volcam.load_model(sd.file(sd.CT_CARD))
    scan = volcam.load(sd.file(sd.CT_DICOM))

    def refuse(*args, **kwargs):
        raise AssertionError("MONAI's full inverse ran")

    monkeypatch.setattr(type(model.preprocessing.compose), "inverse", refuse)
    explained = model.explain(scan, "gradcam")
    assert explained.map.shape == scan.shape and torch.equal(explained.map.affine, scan.affine)


@pytest.mark.parametrize("axcodes", ["RAS", "LPI"])
def test_a_cards_orientation_runs_without_monais_labels_warning_and_means_what_it_did(axcodes) -> None:
    """MONAI 1.6 warns on every Orientation that leaves ``labels`` out (its default changed); a card's step
    gets the labels cards were written against, silently, to the same grid as MONAI's own step."""
    import warnings

    from monai.transforms import Orientation

    scan = odd_scan()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        prepared = Preprocessing([{"name": "Orientation", "args": {"axcodes": axcodes}}])(scan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = Orientation(axcodes=axcodes)(scan.clone())
    np.testing.assert_array_equal(prepared.affine.numpy(), expected.affine.numpy())
    np.testing.assert_array_equal(prepared.as_tensor().numpy(), expected.as_tensor().numpy())


def test_a_sheared_scan_goes_back_through_monais_inverse_from_untouched_records() -> None:
    """A scan whose voxel axes are not perpendicular (a kept gantry tilt, an odd Analyze sform):
    Spacing gives an axis-aligned grid that is not along the scan's axes, so the fast route must
    give way before it undoes the card's crop (which consumed ResizeWithPadOrCrop's record and left
    MONAI's full inverse a RuntimeError), and MONAI's inverse gets the map back to the scan's grid."""
    data = np.random.default_rng(1).uniform(-1000, 200, size=(1, 8, 8, 6)).astype(np.float32)
    sheared = np.array([[0.8, 0, 316.0, -10], [0, 0.8, 0, 20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    tilted = np.array([[0.7, 0, 0, 0], [0, 0.7, 0.9, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]])  # 10° of gantry tilt
    for affine in (sheared, tilted):
        scan = make_volume(data, affine, path="sheared.nii.gz", modality="CT")
        pre = Preprocessing(CARD_STEPS)
        prepared = pre(scan)
        records = copy.deepcopy(list(prepared.applied_operations))
        assert not route_is_separable(pre, prepared, scan)
        cam = torch.rand(1, *prepared.shape[1:], generator=torch.Generator().manual_seed(0))
        back = pre.invert(cam, prepared, scan)
        assert back.shape == scan.shape
        assert float((back - pre.invert(cam, prepared)).abs().max()) == 0.0  # MONAI's inverse, as without the scan
        assert [r["class"] for r in prepared.applied_operations] == [r["class"] for r in records]
