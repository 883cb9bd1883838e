"""L-CAM-Fm / L-CAM-Img: the attention module, training on a frozen classifier, the weights file and
the card, inference as registered methods, and the errors a person meets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import volcam
from conftest import GapNet
from volcam.errors import CardError, MethodError
from volcam.maps.geometry import normalize, upsample
from volcam.methods.learned import LCamAttention, lcam_loss, select_class, tv_loss
from volcam.workflows.lcam_training import load_lcam, save_lcam, train_lcam

TINY_RESNET = {
    "block": "basic",
    "layers": [1, 1, 1, 1],
    "block_inplanes": [4, 4, 8, 8],
    "spatial_dims": 3,
    "n_input_channels": 1,
    "num_classes": 2,
    "conv1_t_size": 3,
    "conv1_t_stride": 1,
    "no_max_pool": True,
}


@pytest.fixture
def card(tmp_path):
    """A card for a tiny 3D MONAI ResNet taking 16³ inputs, with random (but fixed) weights."""
    from monai.networks.nets import ResNet

    torch.manual_seed(0)
    net = ResNet(**TINY_RESNET)
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    data = {
        "volcam_card": 1,
        "name": "tiny",
        "kind": "volume",
        "labels": ["no", "yes"],
        "layer": "layer2",
        "in_channels": 1,
        "network": {"monai": "ResNet", "args": TINY_RESNET},
        "weights": "tiny.pt",
        "preprocessing": [{"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [16, 16, 16]}}],
    }
    path = tmp_path / "tiny.card.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def batch() -> torch.Tensor:
    """Network inputs (8, 1, 16, 16, 16): noise with a bright cube in half of them."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 16, 16, 16, generator=gen) * 0.2
    x[::2, :, 4:9, 5:10, 6:11] += 1.0
    return x


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- the module and the loss ------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_attention_is_a_one_by_one_convolution_in_any_dimension(dims) -> None:
    module = LCamAttention(6, 3)
    a = torch.randn(2, 6, *[5] * dims)
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims](6, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(module.weight.view(3, 6, *[1] * dims))
        conv.bias.copy_(module.bias)
        torch.testing.assert_close(module(a), torch.sigmoid(conv(a)))
    picked = select_class(module(a), torch.tensor([2, 0]))
    assert picked.shape == (2, 1, *[5] * dims)
    torch.testing.assert_close(picked[0, 0], module(a)[0, 2])
    torch.testing.assert_close(picked[1, 0], module(a)[1, 0])


def test_loss_terms_follow_the_paper() -> None:
    flat = torch.full((2, 1, 4, 4, 4), 0.5)
    assert float(tv_loss(flat, border=0.0)) == 0.0  # constant: no variation inside
    edge = flat.clone()
    edge[..., 2:] = 1.0
    assert float(tv_loss(edge, border=0.0)) == pytest.approx(2 * 16 * 0.25 / (2 * 2))  # 16 jumps of 0.5 per map
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    terms = lcam_loss(logits, torch.tensor([0, 1]), flat, area_weight=0.0, tv_weight=0.0)
    assert float(terms["loss"]) == pytest.approx(1.5 * float(F.cross_entropy(logits, torch.tensor([0, 1]))))
    small = lcam_loss(logits, torch.tensor([0, 1]), flat * 0.1)["area"]
    assert float(small) < float(terms["area"]) or float(terms["area"]) == 0.0


# -- training ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["fm", "img"])
def test_training_steps_lower_the_loss_and_never_touch_the_classifier(card, batch, variant) -> None:
    model = volcam.load_model(card)
    model.network.train()  # eval inside, restored after
    frozen = model.network.conv1.weight
    frozen.requires_grad_(False)  # a flag the caller set must come back as it was
    before = _parameters(model.network)
    # one batch, one step per epoch, no validation: each epoch's loss is that batch's before the step
    run = train_lcam(model, batch, variant, epochs=6, batch_size=8, lr=0.05, validation=0.0, progress=False, save=False)
    losses = [row["train_loss"] for row in run.history]
    assert losses[-1] < losses[0]
    assert losses[1] < losses[0]  # the first step already lowered it
    after = model.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical, running stats included
    assert model.network.training and all(m.training for m in model.network.modules())
    assert not frozen.requires_grad and model.network.fc.weight.requires_grad
    assert run.path is None and run.layer == "layer2"


def test_validation_loss_early_stopping_and_the_best_epoch(card, batch) -> None:
    run = train_lcam(card, batch, "fm", epochs=40, lr=0.5, validation=0.25, patience=2, progress=False, save=False)
    assert all(row["val_loss"] == row["val_loss"] for row in run.history)  # a number every epoch
    best = min(range(len(run.history)), key=lambda i: run.history[i]["val_loss"])
    assert run.best_epoch == best + 1
    if run.stopped_early:
        assert len(run.history) == run.best_epoch + 2
    again = train_lcam(card, batch, "fm", epochs=3, lr=0.5, validation=0.25, progress=False, save=False)
    torch.testing.assert_close(again.history[0]["val_loss"], run.history[0]["val_loss"])  # the seed fixes it


def test_save_load_explain_gives_the_same_map(card, batch) -> None:
    model = volcam.load_model(card)
    run = train_lcam(model, batch, "fm", epochs=2, validation=0.0, progress=False)
    assert run.path == card.with_name("tiny.lcam-fm.pt")
    recorded = json.loads(card.read_text())["lcam"]["fm"]
    assert recorded == {"weights": "tiny.lcam-fm.pt", "layer": "layer2", "labels": ["no", "yes"]}
    assert model.card.lcam["fm"]["layer"] == "layer2"  # the Model that trained it knows it too
    scan = batch[1] * 1000  # a (C, X, Y, Z) volume; the card pads/crops it to 16³
    from monai.data import MetaTensor

    scan = MetaTensor(scan[:, :, :, :12])  # another grid than the network's: the map comes back on it
    reloaded = volcam.load_model(card)
    explained = reloaded.explain(scan, "lcam-fm", target="yes")
    assert explained.map.shape == scan.shape and explained.layers == ("layer2",)
    assert explained.result.timings.keys() >= {"forward", "method"}
    torch.testing.assert_close(model.explain(scan, "lcam-fm", target="yes").map, explained.map)  # trainer's Model
    x = reloaded.prepare(scan)[None].as_tensor()
    direct = volcam.explain(reloaded.network, x, "lcam-fm", 1, "layer2", module=run.module)
    torch.testing.assert_close(explained.result.map.as_tensor(), direct.map)
    # and the map is the class's attention map, upsampled and normalised like every other method
    a = volcam.CamEngine(reloaded.network, "layer2").forward(x).activations["layer2"].detach()
    expected = normalize(upsample(run.module(a)[:, 1:2], x.shape[2:]))
    torch.testing.assert_close(direct.map, expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_registered_methods_explain_2d_and_3d(dims) -> None:
    net = GapNet(dims, num_classes=3).eval()
    x = torch.rand(2, 1, *[12] * dims)
    module = LCamAttention(16, 3)
    for method in ("lcam-fm", "lcam-img"):
        result = volcam.explain(net, x, method, [0, 2], "features.2", module=module)
        assert result.map.shape == (2, 1, *[12] * dims)
        a = volcam.CamEngine(net, "features.2").forward(x).activations["features.2"].detach()
        expected = normalize(upsample(select_class(module(a), torch.tensor([0, 2])), x.shape[2:]))
        torch.testing.assert_close(result.map, expected)
    info = {m.name: m for m in volcam.methods()}
    assert info["lcam-fm"].passes == "1F" and not info["lcam-fm"].needs_gradients


# -- errors -----------------------------------------------------------------------------------------


def test_without_a_trained_module_the_error_says_how_to_get_one(card, batch) -> None:
    net = GapNet(3).eval()
    with pytest.raises(MethodError, match=r"train one with volcam\.train_lcam"):
        volcam.explain(net, torch.rand(1, 1, 8, 8, 8), "lcam-fm")
    model = volcam.load_model(card)
    with pytest.raises(CardError, match=r"tiny.card.json: no trained L-CAM-Img module.*volcam train-lcam"):
        model.explain(torch.rand(1, 16, 16, 16), "lcam-img")


def test_a_module_for_another_layer_or_class_set_is_refused(card, batch, tmp_path) -> None:
    model = volcam.load_model(card)
    run = train_lcam(model, batch, "img", epochs=1, validation=0.0, progress=False)
    with pytest.raises(CardError, match=r"trained at layer 'layer2', not 'layer3'"):
        volcam.load_model(card).explain(torch.rand(1, 16, 16, 16), "lcam-img", layer="layer3")
    data = json.loads(card.read_text())
    data["labels"] = ["a", "b"]
    card.write_text(json.dumps(data))
    with pytest.raises(CardError, match=r"trained for classes \['no', 'yes'\], the model has \['a', 'b'\]"):
        volcam.load_model(card).explain(torch.rand(1, 16, 16, 16), "lcam-img")
    assert run.module.in_channels == 4
    with pytest.raises(MethodError, match="trained on a layer with 5 channels; this layer has 4"):
        volcam.explain(model.network, torch.rand(1, 1, 16, 16, 16), "lcam-img", 1, "layer1", module=LCamAttention(5, 2))


def test_weights_file_is_plain_tensors_and_refuses_anything_else(tmp_path) -> None:
    module = LCamAttention(8, 2)
    path = save_lcam(tmp_path / "m.pt", module, variant="fm", layer="layer2", labels=["a", "b"])
    loaded, meta = load_lcam(path, variant="fm", layer="layer2", labels=["a", "b"])
    torch.testing.assert_close(loaded.weight, module.weight)
    assert meta["layer"] == "layer2"
    with pytest.raises(CardError, match="holds an L-CAM-Fm module, not img"):
        load_lcam(path, variant="img")
    torch.save({"volcam_lcam": 1, "state_dict": {}, "x": torch.nn.Linear(1, 1)}, tmp_path / "pickled.pt")
    with pytest.raises(CardError, match="not an L-CAM weights file"):
        load_lcam(tmp_path / "pickled.pt")
    with pytest.raises(CardError, match="no such L-CAM weights file"):
        load_lcam(tmp_path / "missing.pt")


# -- the command line and the shipped demo modules --------------------------------------------------


def _nifti_scans(folder, n: int) -> list:
    import nibabel as nib
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(5)
    names = []
    for i in range(n):
        volume = rng.random((16, 16, 16), dtype=np.float32) * 0.2
        if i % 2:
            volume[4:9, 5:10, 6:11] += 1.0
        names.append(f"scan{i}.nii.gz")
        nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / names[-1])
    return names


@pytest.mark.slow
def test_cli_trains_from_a_manifest_and_explain_finds_the_module(card, tmp_path) -> None:
    from typer.testing import CliRunner

    from volcam.cli import app

    names = _nifti_scans(tmp_path / "scans", 6)
    manifest = tmp_path / "scans" / "cohort.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{['no', 'yes'][i % 2]}\n" for i, n in enumerate(names)))
    runner = CliRunner()
    result = runner.invoke(
        app, ["train-lcam", str(card), str(manifest), "--variant", "img", "--epochs", "2", "--target", "label"]
    )
    assert result.exit_code == 0, result.stderr
    assert "L-CAM-Img at layer2" in result.stdout and "validation" in result.stdout
    assert json.loads(card.read_text())["lcam"]["img"]["weights"] == "tiny.lcam-img.pt"
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["explain", str(tmp_path / "scans" / names[1]), "-m", str(card), "--method", "lcam-img", "-o", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["explanations"][0]["method"] == "lcam-img"
    # a card without the Fm module: one line saying what to train
    result = runner.invoke(
        app, ["explain", str(tmp_path / "scans" / names[1]), "-m", str(card), "--method", "lcam-fm", "-o", str(out)]
    )
    assert result.exit_code == 2 and result.stderr.startswith("volcam: error: ")
    assert "no trained L-CAM-Fm module" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_train_lcam_bad_input_is_one_line(card, tmp_path) -> None:
    from typer.testing import CliRunner

    from volcam.cli import app

    result = CliRunner().invoke(app, ["train-lcam", str(card), str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"volcam: error: {tmp_path / 'nowhere'}: no such folder, manifest or image"


def test_shipped_demo_card_explains_with_both_modules() -> None:
    from volcam import sample_data as sd

    model = volcam.load_model(sd.file(sd.CT_CARD))
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    for method in ("lcam-fm", "lcam-img"):
        explained = model.explain(scan, method)
        assert explained.map.shape == scan.shape and explained.layers == (model.card.layer,)
        low, high = float(explained.map.min()), float(explained.map.max())
        assert low >= 0.0 and 0.5 < high <= 1.0 + 1e-4  # normalised on the network's grid, then resampled
