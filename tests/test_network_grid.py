"""Maps on the network's grid: the prepared input's affine places them on the scan, without resampling.

The claim the review rests on: after every geometric step of a card (Orientation, Spacing, crop/pad,
Resize, Flip) the prepared tensor's ``affine`` is the voxel → world mapping of its grid. A field that
is linear in world coordinates survives trilinear resampling exactly, so the prepared values must
equal the field at ``affine @ voxel`` wherever the network's voxel lies inside the scan. Then the
dock's network-grid layer, read through its affine, gives the full-resolution map's values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import volcam
from volcam import sample_data
from volcam.io.image import make_volume
from volcam.model.card import read_card
from volcam.model.preprocess import Preprocessing
from volcam.viz.display import display_geometry

LABELS = [["L", "R"], ["P", "A"], ["I", "S"]]  # MONAI's RAS labels, as the shipped card gives them
GEOMETRIC = {"Orientation", "Spacing", "ResizeWithPadOrCrop", "Resize", "Flip", "SpatialPad", "CenterSpatialCrop"}


def linear_field(world: np.ndarray) -> np.ndarray:
    """A field linear in RAS world mm (``world``: ``(..., 3)``)."""
    return world @ np.array([0.3, -0.2, 0.5]) + 7.0


def world_of(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def linear_scan(shape: tuple[int, int, int], affine: np.ndarray):
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).astype(np.float64)
    values = linear_field(world_of(affine, grid)).astype(np.float32)[None]
    return make_volume(values, affine, path="phantom", modality="CT")


def check_affine(scan, steps: list[dict]) -> int:
    """Run ``steps`` one more at a time; after each, the prepared affine must be its grid's voxel → world.

    Returns how many voxels were checked after the last step."""
    scan_affine = scan.affine.numpy()
    shape = np.asarray(scan.shape[1:])
    checked = 0
    for k in range(1, len(steps) + 1):
        prepared = Preprocessing(steps[:k]).__call__(scan)
        affine = prepared.affine.numpy()
        grid = np.stack(np.meshgrid(*(np.arange(n) for n in prepared.shape[1:]), indexing="ij"), -1)
        world = world_of(affine, grid.astype(np.float64))
        inside = world_of(np.linalg.inv(scan_affine), world)  # where each network voxel lies in the scan
        keep = np.all((inside >= 1.0) & (inside <= shape - 2.0), axis=-1)  # away from padding and the edge
        assert keep.sum() > 0.2 * keep.size, f"step {k}: too few network voxels inside the scan"
        got = prepared[0].numpy()[keep]
        np.testing.assert_allclose(got, linear_field(world[keep]), atol=2e-3, err_msg=f"after step {k}: {steps[k - 1]}")
        checked = int(keep.sum())
    return checked


def test_the_shipped_ct_cards_input_affine_places_each_step_on_the_scan():
    scan = volcam.load(sample_data.file(sample_data.CT_NIFTI))
    card = read_card(sample_data.file(sample_data.CT_CARD))
    steps = [s for s in card.preprocessing if s["name"] in GEOMETRIC]
    assert [s["name"] for s in steps] == ["Orientation", "Spacing", "ResizeWithPadOrCrop"]
    values = linear_scan(tuple(scan.shape[1:]), scan.affine.numpy())
    assert check_affine(values, steps) > 1000
    # the intensity steps leave the grid as it is: the full card's input has the same affine
    full = Preprocessing(card.preprocessing)(scan)
    np.testing.assert_allclose(full.affine.numpy(), Preprocessing(steps)(scan).affine.numpy())


@pytest.mark.parametrize(
    "steps",
    [
        [  # crop along x, pad along y and z
            {"name": "Orientation", "args": {"axcodes": "RAS", "labels": LABELS}},
            {"name": "Spacing", "args": {"pixdim": [2.0, 3.0, 4.5], "mode": "bilinear"}},
            {"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [20, 40, 24]}},
        ],
        [  # a resize to a fixed size, and a flip
            {"name": "Orientation", "args": {"axcodes": "RAS", "labels": LABELS}},
            {"name": "Resize", "args": {"spatial_size": [30, 22, 17], "mode": "trilinear"}},
            {"name": "Flip", "args": {"spatial_axis": [0]}},
        ],
        [  # another orientation, then spacing and a centre crop
            {"name": "Orientation", "args": {"axcodes": "LPS", "labels": LABELS}},
            {"name": "Spacing", "args": {"pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"}},
            {"name": "CenterSpatialCrop", "args": {"roi_size": [40, 32, 30]}},
        ],
    ],
    ids=["spacing-crop-pad", "resize-flip", "lps-crop"],
)
def test_a_flipped_anisotropic_scans_input_affine_places_each_step_on_it(steps):
    # axes permuted and flipped against RAS, anisotropic voxels, an origin off zero
    affine = np.array(
        [
            [0.0, 0.0, -1.3, 40.0],
            [-0.9, 0.0, 0.0, 25.0],
            [0.0, 3.1, 0.0, -70.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert check_affine(linear_scan((60, 30, 70), affine), steps) > 500


@pytest.fixture(scope="module")
def demo():
    """The demo CT as the sample-data command gives it, explained by the dock's controller."""
    from napari_volcam._controller import DockController, ScanImage
    from napari_volcam._sample_data import demo_ct

    layer_data, _ = demo_ct()
    image = ScanImage.of(layer_data)
    c = DockController()
    c.card_for(image)
    job = c.start(image)
    shown = [c.accept(job, result) for result in c.run(job)]
    c.finish()
    return image, layer_data[1], next(s for s in shown if s is not None).layer, c


def lungs(hu: np.ndarray) -> np.ndarray:
    """The lungs of a displayed CT ``(S, P, L)``: air enclosed by the body on each axial slice, eroded."""
    from scipy import ndimage

    body = hu > -500
    enclosed = np.stack([ndimage.binary_fill_holes(s) for s in body]) & ~body
    return ndimage.binary_erosion(enclosed, iterations=2)


def sample(data: np.ndarray, data_to_world: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``data`` at world points ``(N, 3)`` through its data → world affine."""
    from scipy import ndimage

    index = world_of(np.linalg.inv(data_to_world), world)
    return ndimage.map_coordinates(data, index.T, order=1, mode="nearest")


def test_the_network_layer_gives_the_full_resolution_maps_values_inside_the_lungs(demo):
    """The same world point: the same value in the network-grid layer (through its affine) as in the
    map carried back to the scan's grid, at 20 random points inside the lungs of the demo CT."""
    from napari_volcam._layers import map_view

    image, kwargs, layer, c = demo
    scan = image.metadata["volcam_scan"]
    full = c.last_explanation.to_scan()  # today's map: through the card's inverse transforms
    geometry = display_geometry(scan)
    full_data = geometry.to_display(full.map[0].numpy())
    scan_to_world = np.diag([*kwargs["scale"], 1.0])
    scan_to_world[:3, 3] = kwargs["translate"]

    rng = np.random.default_rng(7)
    inside = np.argwhere(lungs(np.asarray(image.data)))
    assert len(inside) > 1000
    picked = inside[rng.choice(len(inside), 20, replace=False)] + rng.uniform(-0.5, 0.5, (20, 3))
    world = world_of(scan_to_world, picked)
    ours = sample(np.asarray(layer.data), layer.affine, world)
    theirs = sample(full_data, scan_to_world, world)
    assert np.ptp(theirs) > 0.1  # the points see the map change, not one flat value
    np.testing.assert_allclose(ours, theirs, atol=0.02)  # the full map itself is a trilinear resampling

    # at the scan's voxel centres the full map is exactly the network map's trilinear interpolation
    centres = np.rint(picked)
    np.testing.assert_allclose(
        sample(np.asarray(layer.data), layer.affine, world_of(scan_to_world, centres)),
        full_data[tuple(centres.astype(int).T)],
        atol=2e-3,
    )
    # the layer is the session's network map in its own display order, placed by map_view's affine
    data, shown, affine = map_view(c.last_explanation, geometry)
    np.testing.assert_array_equal(data, layer.data)
    np.testing.assert_allclose(affine, layer.affine)
    assert shown.scale == pytest.approx((5.0, 2.8, 2.8)) and c.last_explanation.map.shape[1:] == (32, 32, 24)


def test_an_oblique_scans_map_lines_up_with_its_display():
    """An oblique scan is displayed on its nearest axes; the network map's affine drops the same rotation."""
    from volcam.viz.display import DisplayGeometry

    angle = np.deg2rad(4.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]]) @ np.diag(
        [-0.8, -0.8, 2.0]
    )
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = rotation, (30.0, 20.0, -40.0)
    scan = linear_scan((50, 50, 20), affine)
    scan_geometry = display_geometry(scan)
    assert scan_geometry.oblique
    net = Preprocessing(
        [
            {"name": "Orientation", "args": {"axcodes": "RAS", "labels": LABELS}},
            {"name": "Spacing", "args": {"pixdim": [2.0, 2.0, 4.0]}},
        ]
    )(scan)
    net_geometry = display_geometry(net)
    placing = scan_geometry.placing(net_geometry)
    np.testing.assert_allclose(placing[:3, :3], np.diag(np.diag(placing[:3, :3])), atol=1e-9)  # no rotation left
    # a network voxel lands where the scan voxel at its world point is displayed
    voxel = np.array([3.0, 7.0, 2.0])  # displayed (S, P, L) index of the network map
    source = (net_geometry.source_of_display() @ [*voxel, 1.0])[:3]
    in_scan = world_of(np.linalg.inv(affine), world_of(net.affine.numpy(), source))
    shown = np.linalg.solve(scan_geometry.source_of_display(), [*in_scan, 1.0])
    np.testing.assert_allclose((placing @ [*voxel, 1.0])[:3], (scan_geometry.display_world() @ shown)[:3])
    assert isinstance(DisplayGeometry.from_metadata(net_geometry.as_metadata()), DisplayGeometry)


def test_session_on_network_costs_no_inverse_and_gives_the_full_map_when_asked():
    from volcam.model.session import ScanSession

    scan = volcam.load(sample_data.file(sample_data.CT_NIFTI))
    model = volcam.load_model(sample_data.file(sample_data.CT_CARD))
    with ScanSession(model, scan) as session:
        net = session.explain("gradcam", "normal", on="network")
        full = session.explain("gradcam", "normal")
        assert net.grid == "network" and full.grid == "scan" and full.to_scan() is full
        assert "invert" not in net.timings and "invert" in full.timings
        assert tuple(net.map.shape) == (1, 32, 32, 24) and torch.equal(net.map.affine, session._prepared.affine)
        assert (net.target, net.prediction, net.probabilities) == (full.target, full.prediction, full.probabilities)
        assert net.to_scan() is net.to_scan()  # made once
        torch.testing.assert_close(net.to_scan().map, full.map)
        np.testing.assert_array_equal(net.to_scan().map.affine.numpy(), scan.affine.numpy())
        assert session.forwards == 1
        with pytest.raises(volcam.VolcamError, match="'scan' grid or on the 'network' grid"):
            session.explain("gradcam", on="screen")
