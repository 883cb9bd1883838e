"""PNG montages: not blank, the map where the anatomy is, radiological orientation, clips as strips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import volcam
from io_fixtures import dicomdir_tests, nibabel_data, pydicom_file
from volcam.errors import InputError
from volcam.viz.render import _choose, _panel, _reoriented, fuse, montage


def ras_blob(image, centre_ras) -> torch.Tensor:
    """A map on the image grid: a ball of 15 mm around a patient point given in RAS mm."""
    shape = image.shape[1:]
    grid = np.indices(shape).reshape(3, -1)
    world = image.affine.numpy()[:3, :3] @ grid + image.affine.numpy()[:3, 3:]
    distance = np.linalg.norm(world - np.asarray(centre_ras, float)[:, None], axis=0)
    return torch.from_numpy(np.exp(-((distance / 15.0) ** 2)).reshape(shape).astype(np.float32))


def open_png(path) -> np.ndarray:
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture.convert("RGB")).astype(int)


def test_ct_montage_is_not_blank_and_shows_the_map(tmp_path) -> None:
    ct = volcam.load(pydicom_file("eCT_Supplemental.dcm"))
    centre = ct.affine.numpy() @ np.array([256, 200, 0, 1.0])
    out = montage(ct, ras_blob(ct, centre[:3]), tmp_path / "montage.png", window="brain", title="a test")
    pixels = open_png(out)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 20  # not one flat colour
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # anatomy, a map and a colour bar
    reddish = (pixels[..., 0] > 180) & (pixels[..., 2] < 90)
    assert reddish.sum() > 50


def test_radiological_orientation_patient_right_on_the_left_anterior_on_top() -> None:
    image = volcam.load(nibabel_data("anatomical.nii"))  # voxel axes point L, A, S
    affine = image.affine.numpy()
    centre = affine @ np.append((np.array(image.shape[1:]) - 1) / 2, 1.0)
    right_front = centre[:3] + np.array([20.0, 20.0, 0.0])  # RAS: +x right, +y anterior
    cam = ras_blob(image, right_front).numpy()
    shown = _reoriented(cam.shape, affine)
    heat, spacing, axis, positions = shown.volume(cam), shown.spacing, shown.axis, shown.positions
    assert axis == 2 and spacing == pytest.approx([2.0, 2.0, 2.0])
    k = int(np.argmax(heat.reshape(-1, heat.shape[2]).sum(0)))
    panel = _panel(heat, axis, k)
    rows, columns = np.unravel_index(np.argmax(panel), panel.shape)
    assert columns < panel.shape[1] / 2  # patient right on the viewer's left
    assert rows < panel.shape[0] / 2  # anterior at the top
    assert positions[k] == pytest.approx(centre[2], abs=2.0)


def test_hottest_slices_are_the_ones_with_the_map() -> None:
    scores = np.array([0.0, 5.0, 0.1, 9.0, 0.2])
    assert _choose(scores, None, 2, 16) == [1, 3]
    assert _choose(scores, 2, None, 16) == [0, 2, 4]
    assert _choose(np.zeros(40), None, None, 16) == list(range(0, 40, 3))[:16]


def test_clip_strip_of_frames(tmp_path) -> None:
    clip = volcam.load(pydicom_file("examples_ybr_color.dcm"))
    cam = torch.zeros(clip.shape[1:])
    cam[10:14, 100:140, 150:200] = 1.0
    out = montage(clip, cam, tmp_path / "strip.png", hottest=3)
    pixels = open_png(out)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # a strip, wider than tall
    assert pixels.std() > 20


def test_title_names_method_class_and_score(tmp_path) -> None:
    from torch import nn

    ct = volcam.load(dicomdir_tests() / "98892001" / "CT5N")
    net = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    result = volcam.explain(net.eval(), ct[None], "gradcam", layer="1", labels=["normal", "lesion"])

    title = result.describe().title()
    assert title.startswith("gradcam · class '") and "score" in title and "p = " in title
    out = montage(ct, result, tmp_path / "cam.png", every=1)
    assert open_png(out).std() > 10


def test_fuse_leaves_the_image_where_the_map_is_zero() -> None:
    grey = np.linspace(0, 1, 16).reshape(4, 4)
    cam = np.zeros((4, 4))
    cam[0, 0] = 1.0
    rgb = fuse(grey, cam, alpha=0.5)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(rgb[1:, :, 0], np.round(255 * grey[1:]).astype(np.uint8))
    assert rgb[0, 0, 0] != rgb[0, 0, 2]


def test_map_of_another_shape_is_refused(tmp_path) -> None:
    ct = volcam.load(dicomdir_tests() / "98892001" / "CT5N")
    with pytest.raises(InputError, match="not on the image grid"):
        montage(ct, torch.rand(8, 8, 5), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
