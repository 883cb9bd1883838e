"""Model cards: the shipped demo models, maps back in the scan's geometry, weights that are refused."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import aff2axcodes
from scipy.ndimage import distance_transform_edt

import volcam
from volcam import sample_data as sd
from volcam.errors import InputError, LayerError, MethodError
from volcam.metrics.localization import localization
from volcam.model.model import CardError, load_model


@pytest.fixture(scope="module")
def ct_model():
    return load_model(sd.file(sd.CT_CARD))


@pytest.fixture(scope="module")
def ct_scan():
    return volcam.load(sd.file(sd.CT_NIFTI))


@pytest.fixture(scope="module")
def ct_mask():
    return np.asarray(nib.load(sd.file(sd.CT_MASK)).dataobj)


def copy_card(tmp_path, name: str = sd.CT_CARD) -> dict:
    """The shipped card and its weights copied into tmp_path; returns the card as a dict."""
    card = json.loads(sd.file(name).read_text())
    shutil.copy(sd.file(card["weights"]), tmp_path / card["weights"])
    return card


def write(tmp_path, card: dict):
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    return path


def test_map_comes_back_on_the_anisotropic_lps_scan(ct_model, ct_scan, ct_mask, tmp_path) -> None:
    assert aff2axcodes(ct_scan.affine.numpy()) == ("L", "P", "S")
    assert ct_scan.meta["spacing"] == pytest.approx((0.7, 0.7, 2.5))
    explained = ct_model.explain(ct_scan, "gradcam")
    assert explained.prediction == "covid" and explained.probabilities["covid"] > 0.5
    assert explained.map.shape == ct_scan.shape
    assert torch.equal(explained.map.affine, ct_scan.affine)
    written = volcam.io.write_nifti(explained.map, tmp_path / "cam.nii.gz", like=ct_scan)
    on_disk = nib.load(written)
    assert np.allclose(on_disk.affine, nib.load(sd.file(sd.CT_NIFTI)).affine, atol=1e-5)
    cam = np.asarray(on_disk.dataobj)
    # The hot voxels are on the lesions: the peak within 5 mm of one, and so are most voxels above 0.9.
    spacing = ct_scan.meta["spacing"]
    assert localization(cam, ct_mask, spacing)["pointing_hit"]
    distance = distance_transform_edt(ct_mask == 0, sampling=spacing)
    hot = cam >= 0.9
    assert hot.sum() > 20 and (distance[hot] <= 5.0).mean() > 0.8


def test_dicom_series_and_nifti_give_the_same_map(ct_model, ct_scan) -> None:
    series = volcam.load(sd.file(sd.CT_DICOM))
    assert np.allclose(series.affine.numpy(), ct_scan.affine.numpy(), atol=1e-4)
    a, b = ct_model.explain(series, ["gradcam", "cam"]), ct_model.explain(ct_scan, ["gradcam", "cam"])
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x.map.as_tensor(), y.map.as_tensor(), atol=1e-4)
    assert a[1].layers == ("layer4",)  # CAM reads the layer feeding the pooling


def test_ultrasound_model_explains_the_clip_in_its_geometry() -> None:
    model = load_model(sd.file(sd.LUS_CARD))
    clip = volcam.load(sd.file(sd.LUS_DICOM))
    explained = model.explain(clip, "gradcam", target="covid")
    assert explained.map.shape == clip.shape and torch.equal(explained.map.affine, clip.affine)
    assert explained.prediction == "covid"
    assert explained.result.frame_probabilities.shape == (clip.shape[1], 2)


def test_scan_the_model_cannot_take(ct_model) -> None:
    clip = volcam.load(sd.file(sd.LUS_DICOM))
    with pytest.raises(InputError, match="explains volumes"):
        ct_model.explain(clip)
    with pytest.raises(LayerError, match=r"its layers: conv1, .*layer4"):
        ct_model.explain(volcam.load(sd.file(sd.CT_NIFTI)), layer="layer9")


def test_card_that_does_not_match_the_weights(tmp_path) -> None:
    card = copy_card(tmp_path)
    card["network"]["args"]["block_inplanes"] = [8, 16, 32, 64]
    with pytest.raises(CardError, match=r"does not match the weights .*wrong shape"):
        load_model(write(tmp_path, card))
    card["network"] = {"monai": "NoSuchNet"}
    with pytest.raises(CardError, match=r"not a network in monai\.networks\.nets"):
        load_model(write(tmp_path, card))


def test_card_refuses_code_in_preprocessing(tmp_path) -> None:
    card = copy_card(tmp_path)
    card["preprocessing"] = [{"name": "Lambda", "args": {}}]
    with pytest.raises(CardError, match="'Lambda' is not a transform volcam runs from a card"):
        load_model(write(tmp_path, card))


class Payload:
    """Anything not a tensor: unpickling it would import and run code."""


def test_weights_needing_unpickling_are_refused_unless_trusted(tmp_path) -> None:
    card = copy_card(tmp_path)
    state = torch.load(tmp_path / card["weights"], weights_only=True)
    torch.save({"state_dict": state, "extra": Payload()}, tmp_path / card["weights"])
    with pytest.raises(CardError, match="trust"):
        load_model(write(tmp_path, card))
    assert isinstance(load_model(write(tmp_path, card), trust=True), volcam.Model)


def test_not_a_weights_file_and_not_a_card(tmp_path) -> None:
    card = copy_card(tmp_path)
    (tmp_path / card["weights"]).write_bytes(b"these are not weights")
    with pytest.raises(CardError, match=r"ct_covid\.pt: not a PyTorch weights file"):
        load_model(write(tmp_path, card))
    torch.save([torch.zeros(2)], tmp_path / card["weights"])  # tensors, but no parameter names
    with pytest.raises(CardError, match=r"ct_covid\.pt: expected a state_dict"):
        load_model(write(tmp_path, card))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CardError, match=r"bad\.json: not a JSON model card"):
        load_model(tmp_path / "bad.json")


def test_monai_bundle_folder(tmp_path, ct_scan) -> None:
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    definition = {"_target_": "monai.networks.nets.ResNet", **card["network"]["args"]}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": definition}))
    (bundle / "configs" / "metadata.json").write_text(
        json.dumps({"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "normal", "1": "covid"}}}}})
    )
    shutil.copy(sd.file(card["weights"]), bundle / "models" / "model.pt")
    model = load_model(bundle)
    assert model.labels == ("normal", "covid")
    # A card may wrap the bundle to give it preprocessing: then it explains a scan like the demo card.
    wrapper = {**card, "network": {"bundle": "bundle"}, "weights": None}
    explained = load_model(write(tmp_path, wrapper)).explain(ct_scan, "gradcam")
    assert explained.map.shape == ct_scan.shape
    definition["spatial_dims"] = "$3"
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": definition}))
    with pytest.raises(CardError, match="runs code"):
        load_model(bundle)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_card(tmp_path, ct_model, ct_scan) -> None:
    prepared = ct_model.prepare(ct_scan).as_tensor()[None]
    traced = torch.jit.trace(ct_model.network, prepared)
    traced.save(str(tmp_path / "net.ts"))
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    card["network"] = {"torchscript": "net.ts"}
    card["weights"] = None
    with pytest.raises(CardError, match=r"network\.torchscript is a program"):  # code: only when trusted
        load_model(write(tmp_path, card))
    model = load_model(write(tmp_path, card), trust=True)
    assert model.predict(ct_scan) == pytest.approx(ct_model.predict(ct_scan), abs=1e-4)
    # A TorchScript module takes no Python hooks, so CAM methods need the network as Python modules.
    with pytest.raises(MethodError, match="TorchScript"):
        model.explain(ct_scan, "gradcam")


def test_sample_data_folder_is_found_or_named(tmp_path, monkeypatch) -> None:
    assert (sd.path() / sd.CT_CARD).is_file()
    monkeypatch.setenv("VOLCAM_SAMPLE_DATA", str(tmp_path))  # wins when it holds the data ...
    shutil.copy(sd.file(sd.CT_CARD), tmp_path / sd.CT_CARD)
    assert sd.path() == tmp_path
    with pytest.raises(volcam.FileFormatError, match="missing from the sample data"):
        sd.file(sd.LUS_CARD)
