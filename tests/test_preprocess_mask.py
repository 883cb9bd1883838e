"""A mask carried to the network's grid by the card's geometric steps lands where the scan's voxels land."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import volcam
from volcam import sample_data as sd


@pytest.fixture(scope="module")
def model() -> volcam.Model:
    return volcam.load_model(sd.file(sd.CT_CARD))


def test_mask_follows_the_scan_through_preprocessing(model) -> None:
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    dark = scan[0] < -500  # lungs and air, on the scan's grid
    on_net = model.preprocessing.mask(dark, like=scan)
    x = model.prepare(scan)[0]
    assert on_net.dtype == torch.bool and on_net.shape == x.shape
    # ScaleIntensityRange maps -1000..200 HU to 0..1: -500 HU is 500/1200; padding (0) also reads dark
    agree = (on_net == (x < 500 / 1200)).float().mean()
    assert agree > 0.97, float(agree)
    assert 0.05 < on_net.float().mean() < 0.95


def test_mask_from_a_file_keeps_its_own_affine(model, tmp_path) -> None:
    """A MetaTensor mask (as volcam.load gives it) needs no ``like``; an all-ones mask covers the field of view."""
    image = nib.load(sd.file(sd.CT_NIFTI))
    nib.save(nib.Nifti1Image(np.ones(image.shape, dtype=np.uint8), image.affine), tmp_path / "ones.nii.gz")
    ones = volcam.load(tmp_path / "ones.nii.gz")
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    on_net = model.preprocessing.mask(ones)
    assert on_net.shape == model.prepare(scan).shape[1:]
    assert torch.equal(on_net, model.preprocessing.mask(ones[0], like=scan))
    assert on_net.float().mean() > 0.5  # all of the scan, less the padding the card adds
