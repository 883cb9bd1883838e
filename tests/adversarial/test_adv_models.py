"""Cards and bundles are data: nothing in them runs, fetches or waits unless the user trusts them.

Each payload would create a marker file (or call a debugger, or download) if volcam ran it; the
tests assert one clear :class:`CardError` naming the file and the key, and that the marker does not
exist. Where the payload is valid with ``trust=True`` that path is shown too: the opt-in works.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from volcam import sample_data as sd
from volcam.errors import CardError, InputError
from volcam.model.model import load_model


def _bundle(tmp_path: Path, definition: dict, **config) -> Path:
    """A MONAI bundle folder with the demo CT network's weights and ``definition`` as network_def."""
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps({**config, "network_def": definition}))
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    shutil.copy(sd.file(card["weights"]), bundle / "models" / "model.pt")
    return bundle


def _demo_args() -> dict:
    return json.loads(sd.file(sd.CT_CARD).read_text())["network"]["args"]


def _card(tmp_path: Path, **changes) -> Path:
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    shutil.copy(sd.file(card["weights"]), tmp_path / card["weights"])
    card.pop("lcam")
    card.update(changes)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _payloads(marker: Path) -> dict[str, dict]:
    """network_def values that each run code in MONAI's ConfigParser."""
    touch = {"_target_": "os.system", "command": f"touch {marker}"}
    via_attribute = "monai.networks.nets.resnet.os.system"
    opener = f"$open('{marker}','w') and 3"
    return {
        "nested _target_": {"_target_": "monai.networks.nets.ResNet", **_demo_args(), "block": touch},
        "_requires_": {"_target_": "monai.networks.nets.ResNet", **_demo_args(), "_requires_": touch},
        "builtin without a dot": {"_target_": "open", "file": str(marker), "mode": "w"},
        "prefix then module attribute": {"_target_": via_attribute, "command": f"touch {marker}"},
        "expression": {"_target_": "monai.networks.nets.ResNet", **_demo_args(), "spatial_dims": opener},
        "disabled/mode": {"_target_": "monai.networks.nets.ResNet", **_demo_args(), "_mode_": "callable"},
    }  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [
        "nested _target_",
        "_requires_",
        "builtin without a dot",
        "prefix then module attribute",
        "expression",
        "disabled/mode",
    ],
)
def test_bundle_code_never_runs_without_trust(tmp_path, marker, name, unchanged) -> None:
    bundle = _bundle(tmp_path, _payloads(marker)[name])
    unchanged(bundle)
    with pytest.raises(CardError) as caught:
        load_model(bundle)
    message = str(caught.value)
    assert "\n" not in message and "inference.json" in message
    assert "network_def" in message or "not a network" in message
    assert not marker.exists()


def test_bundle_debugger_flag_is_refused_before_any_prompt(tmp_path, marker) -> None:
    bundle = _bundle(tmp_path, {"_target_": "monai.networks.nets.ResNet", **_demo_args(), "_debug_": True})
    with pytest.raises(CardError, match=r"network_def\._debug_: _debug_ makes MONAI's config parser run code"):
        load_model(bundle)


def test_trusted_bundle_runs_its_code(tmp_path, marker) -> None:
    """The opt-in is real: with trust the same expression runs (here harmlessly creating the marker)."""
    definition = {"_target_": "monai.networks.nets.ResNet", **_demo_args()}
    definition["spatial_dims"] = f"$open('{marker}', 'w').close() or 3"
    model = load_model(_bundle(tmp_path, definition), trust=True)
    assert marker.exists() and model.network.conv1.weight.ndim == 5


def test_bundle_references_to_plain_values_are_followed(tmp_path) -> None:
    args = _demo_args()
    definition = {"_target_": "ResNet", **args, "spatial_dims": "@dims", "num_classes": "@head::classes"}
    model = load_model(_bundle(tmp_path, definition, dims=3, head={"classes": 2}))
    assert model.network.fc.out_features == 2


def test_card_arguments_that_fetch_are_refused(tmp_path, monkeypatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    for args, key in (
        ({"pretrained": True, "spatial_dims": 3, "n_input_channels": 1}, "pretrained"),
        ({"pretrained_url": "http://127.0.0.1:9/w.pt", "out_classes": 2}, "pretrained_url"),
    ):
        name = "resnet18" if "pretrained" in args else "HoVerNet"
        path = _card(tmp_path, network={"monai": name, "args": args})
        with pytest.raises(CardError, match=rf"network\.args: {key}.*would download or read files"):
            load_model(path)
    # a default that fetches must be switched off explicitly
    path = _card(tmp_path, network={"monai": "MILModel", "args": {"num_classes": 2}})
    with pytest.raises(CardError, match=r"pretrained \(default True; give 'pretrained': false\)"):
        load_model(path)
    assert not hub.exists()


def test_card_names_a_monai_factory(tmp_path) -> None:
    """MONAI's own docs build networks with factories (resnet18, ...): a card may name them."""
    from monai.networks.nets import resnet10

    args = {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 2, "pretrained": False}
    torch.save(resnet10(**args).state_dict(), tmp_path / "r10.pt")
    model = load_model(_card(tmp_path, network={"monai": "resnet10", "args": args}, weights="r10.pt"))
    assert type(model.network).__name__ == "ResNet"
    for name in ("get_pretrained_resnet_medicalnet", "drop_connect", "Transchex", "os", "resnet.torch"):
        with pytest.raises(CardError, match=r"is not a network in monai\.networks\.nets"):
            load_model(_card(tmp_path, network={"monai": name, "args": {}}, weights="r10.pt"))


def test_network_larger_than_its_weights_is_refused_before_it_is_built(tmp_path) -> None:
    args = {**_demo_args(), "block_inplanes": [512, 1024, 2048, 4096]}  # about 2.4 GB of parameters
    with pytest.raises(CardError, match=r"MiB of parameters; the weights file ct_covid\.pt holds only"):
        load_model(_card(tmp_path, network={"monai": "ResNet", "args": args}))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"in_channels": "abc"}, r"'in_channels' is \"abc\"; it should be a whole number"),
        ({"in_channels": True}, r"'in_channels' is true; it should be a whole number"),
        ({"weights": 123}, r"'weights' is 123; it should be a string"),
        ({"labels": "normal,covid"}, r"'labels' should be a list of names"),
        ({"labels": ["a", "a"]}, r"'labels' names a class twice"),
        ({"layer": ["layer2"]}, r"'layer' is \[\"layer2\"\]; it should be a string"),
        ({"kind": "volume\nEVIL"}, r"kind 'volume EVIL'"),
        ({"network": {"monai": "ResNet", "torchscript": "x.pt"}}, r"'network' needs one of"),
        ({"preprocessing": {"name": "Orientation"}}, r"'preprocessing' is .*; it should be a list"),
    ],
)
def test_malformed_card_fields_are_one_line(tmp_path, change, expected) -> None:
    with pytest.raises(CardError, match=expected) as caught:
        load_model(_card(tmp_path, **change))
    assert "\n" not in str(caught.value)


def test_metrics_file_that_is_not_json(tmp_path) -> None:
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CardError, match=r"m\.json: not a JSON metrics file"):
        load_model(_card(tmp_path, metrics="m.json"))


def test_labels_are_checked_against_the_network_outputs(tmp_path) -> None:
    """When the model is built (issue 27: one label for two classes was an IndexError mid-explanation);
    tests/test_input_classes.py checks the class (too few, too many, a transformer, the first forward)."""
    with pytest.raises(CardError, match=r"names 3 labels \(normal, covid, other\); the network gives 2 outputs"):
        load_model(_card(tmp_path, labels=["normal", "covid", "other"]))


def test_empty_weights_file_is_one_line(tmp_path) -> None:
    path = _card(tmp_path)
    (tmp_path / "ct_covid.pt").write_bytes(b"")
    with pytest.raises(CardError, match=r"ct_covid\.pt: the weights file is empty"):
        load_model(path)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"name": "SimulateDelay", "args": {"delay_time": 3600}}, "'SimulateDelay' is not a transform volcam runs"),
        ({"name": "LoadImage", "args": {}}, "'LoadImage' is not a transform"),
        ({"name": "Lambda", "args": {"func": "$print"}}, "'Lambda' is not a transform"),
        ({"name": "Spacing", "args": {"pixdim": "$[1, 1, 1]"}}, r"preprocessing\.0\.args\.pixdim: .* runs code"),
        ({"name": "Resize", "args": {"spatial_size": [100000, 100000, 100000]}}, "whole numbers up to 4096"),
        ({"name": "Spacing", "args": {"pixdim": [1, 1, 1], "_target_": "os.system"}}, "_target_ makes MONAI"),
        ({"name": "Spacing", "args": {"pixdims": [1, 1, 1]}}, r"preprocessing\.0 \(Spacing\): .*pixdims"),
    ],
)
def test_preprocessing_steps_come_from_the_allow_list(tmp_path, step, expected) -> None:
    with pytest.raises(CardError, match=expected):
        load_model(_card(tmp_path, preprocessing=[step]))


def test_preprocessing_that_would_explode_the_scan_is_refused_before_allocating(tmp_path) -> None:
    import volcam

    model = load_model(_card(tmp_path, preprocessing=[{"name": "Spacing", "args": {"pixdim": [0.01, 0.01, 0.01]}}]))
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    with pytest.raises(InputError, match=r"preprocessing step 0 \(Spacing\) would make .* voxels of this scan"):
        model.prepare(scan)


def test_preprocessing_failure_names_the_step_and_the_reason(tmp_path) -> None:
    import volcam

    model = load_model(_card(tmp_path, preprocessing=[{"name": "Flip", "args": {"spatial_axis": 7}}]))
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    with pytest.raises(InputError) as caught:
        model.prepare(scan)
    message = str(caught.value)
    assert message.startswith("preprocessing step 0 (Flip) failed on a scan of shape (1, 128, 128, 48): index 7")
    assert "object at 0x" not in message


def test_torchscript_is_a_program(tmp_path) -> None:
    path = _card(tmp_path, network={"torchscript": "net.ts"}, weights=None)
    with pytest.raises(CardError, match=r"network\.torchscript is a program, not data"):
        load_model(path)
