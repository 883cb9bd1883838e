"""Synthetic phantoms: seeded, anatomically sane, lesions inside the lungs, files that load back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from nibabel.orientations import aff2axcodes

import volcam
from volcam.testing.phantoms import (
    B_LINE,
    chest_ct,
    lung_ultrasound,
    write_ct_dicom,
    write_ultrasound_dicom,
)

SMALL = {"shape": (64, 64, 24), "spacing": (1.4, 1.4, 5.0)}


def test_chest_ct_is_seeded_and_anisotropic_lps() -> None:
    a, b = chest_ct(7, covid=True), chest_ct(7, covid=True)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, chest_ct(8, covid=True).image)
    assert a.image.shape == (128, 128, 48) and a.image.dtype == np.int16
    assert a.spacing == pytest.approx((0.7, 0.7, 2.5))
    assert aff2axcodes(a.affine) == ("L", "P", "S")


def test_chest_ct_anatomy_and_lesions_inside_the_lungs() -> None:
    covid, normal = chest_ct(3, covid=True, **SMALL), chest_ct(4, covid=False, **SMALL)
    assert covid.label == 1 and normal.label == 0
    assert not normal.mask.any()
    assert covid.mask.any() and covid.lungs[covid.mask > 0].all()
    healthy_lung = normal.image[normal.lungs]
    assert -900 < np.median(healthy_lung) < -780  # about -850 HU
    assert np.median(covid.image[covid.mask > 0]) > np.median(healthy_lung) + 250  # lesions are denser
    assert normal.image.min() >= -1024 and (normal.image < -950).mean() > 0.05  # air around the body


def test_orientation_changes_the_grid_not_the_patient() -> None:
    lps = chest_ct(5, covid=True, orientation="LPS", **SMALL)
    ras = chest_ct(5, covid=True, orientation="RAS", **SMALL)
    assert aff2axcodes(ras.affine) == ("R", "A", "S")
    assert np.array_equal(ras.mask, lps.mask[::-1, ::-1]) and np.array_equal(ras.image, lps.image[::-1, ::-1])
    nx, ny, _ = SMALL["shape"]
    assert np.allclose(ras.affine @ [0, 0, 0, 1], lps.affine @ [nx - 1, ny - 1, 0, 1])  # the same corner voxel


def test_lung_ultrasound_clips() -> None:
    covid, healthy = lung_ultrasound(11, covid=True), lung_ultrasound(12, covid=False)
    assert covid.frames.shape == (24, 128, 128) and covid.frames.dtype == np.uint8
    assert np.array_equal(covid.frames, lung_ultrasound(11, covid=True).frames)
    assert not healthy.mask.any() and (covid.mask == B_LINE).any()
    below = slice(covid.pleura_row + 5, None)
    # B-lines are bright columns below the pleura; the frames move (lung sliding, speckle).
    assert covid.frames[:, below][covid.mask[:, below] == B_LINE].mean() > covid.frames[:, below].mean() + 20
    assert not np.array_equal(covid.frames[0], covid.frames[5])


def test_dicom_files_load_back_exactly(tmp_path) -> None:
    ct = chest_ct(9, covid=True, **SMALL)
    loaded = volcam.load(write_ct_dicom(ct, tmp_path / "series", key=9))
    assert loaded.shape == (1, *ct.image.shape)
    assert np.array_equal(loaded[0].numpy(), ct.image.astype(np.float32))
    assert np.allclose(loaded.affine.numpy(), ct.affine, atol=1e-4)
    clip = lung_ultrasound(9, covid=True, frames=6)
    loaded = volcam.load(write_ultrasound_dicom(clip, tmp_path / "clip.dcm", key=9))
    assert loaded.shape == (1, 6, 128, 128) and loaded.meta["modality"] == "US"
    assert loaded.meta["spacing"] == pytest.approx((0.1, 0.3, 0.3))
    assert np.array_equal(loaded[0].numpy(), clip.frames.astype(np.float32))
