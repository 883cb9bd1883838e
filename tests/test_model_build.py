"""Building a card's network: shapes on ``meta``, the file's tensors assigned, a real build when needed;
its arguments held to the constructor's annotations and its size bounded before it is built (issue 27:
a bundle asking for a billion layers hung; one passing a string for a stride built and failed at its
first forward); a network failing in its own code on its input is one line naming the card."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from torch import nn

import volcam
from volcam import sample_data as sd
from volcam.errors import CardError
from volcam.model.allowlist import MAX_PARTS, _built, _PartsLimit, build_network
from volcam.model.arguments import MAX_INT, check_arguments, declared_parameters, describe, fits
from volcam.model.build import network_of
from volcam.model.weights import fit_state


def test_a_card_network_holds_exactly_its_weights_file() -> None:
    network, card = network_of(Path(sd.file(sd.CT_CARD)))
    state = torch.load(card.weights, weights_only=True)
    own = network.state_dict()
    assert own.keys() == state.keys()
    assert all(torch.equal(own[k], state[k]) and own[k].dtype == state[k].dtype for k in own)
    assert not any(t.is_meta for t in [*network.parameters(), *network.buffers()])
    assert not any(p.requires_grad is False for p in network.parameters())  # as a freshly built network


def test_weights_take_the_networks_dtype_when_assigned(tmp_path) -> None:
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    real = build_network("DenseNet121", args, "card")
    state = {k: v.half() if v.is_floating_point() else v for k, v in real.state_dict().items()}
    empty = build_network("DenseNet121", args, "card", empty=True)
    assert next(empty.parameters()).is_meta
    assert fit_state(empty, state, tmp_path / "card.json", tmp_path / "w.pt")
    assert next(empty.parameters()).dtype == torch.float32
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        real.load_state_dict(state)
        assert torch.allclose(empty.eval()(x), real.eval()(x))


class _Computed(nn.Module):
    """A constructor that computes a table no state_dict holds (a non-persistent buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.register_buffer("table", torch.arange(4.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x + self.table)


def test_a_network_with_computed_tensors_asks_for_a_real_build(tmp_path) -> None:
    state = _Computed().state_dict()
    with torch.device("meta"):
        empty = _Computed()
    assert not fit_state(empty, state, tmp_path / "card.json", tmp_path / "w.pt")  # "table" is still meta
    real = _Computed()
    assert fit_state(real, state, tmp_path / "card.json", tmp_path / "w.pt")
    assert torch.equal(real.table, torch.arange(4.0))


# -- arguments held to the constructor's annotations ------------------------------------------------------

DEMO = json.loads(sd.file(sd.CT_CARD).read_text())["network"]["args"]  # the shipped CT card's ResNet


def _bundle(folder: Path, **changes: Any) -> Path:
    """A MONAI bundle of the demo ResNet with ``changes`` to its ``network_def`` (no weights needed: the
    arguments are refused before they are read)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    definition = {"_target_": "monai.networks.nets.ResNet", **DEMO, **changes}
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": definition}))
    torch.save({}, folder / "models" / "model.pt")
    return folder


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"conv1_t_stride": "builtins.eval"},
            r'network_def\.conv1_t_stride is "builtins\.eval"; ResNet takes tuple\[int\] \| int there',
        ),
        ({"no_max_pool": {"a": {"a": [1]}}}, r"network_def\.no_max_pool is .*; ResNet takes bool there"),
        ({"layers": [1, 1, 1, "\u0000"]}, r"network_def\.layers is .*; ResNet takes list\[int\] there"),
        ({"num_classes": 2.5}, r"network_def\.num_classes is 2\.5; ResNet takes int there"),
        ({"spatial_dims": True}, r"network_def\.spatial_dims is true; ResNet takes int there"),
        ({"widen_factor": "wide"}, r"ResNet takes float there"),
        ({"bias_downsample": [True]}, r"ResNet takes bool there"),
        ({"no_such_argument": 1}, r"cannot build monai\.networks\.nets\.ResNet: .*'no_such_argument'"),
    ],
)
def test_an_argument_of_the_wrong_type_is_one_line_before_the_build(tmp_path, change, expected) -> None:
    """The example (fuzz seed 8): ``conv1_t_stride: "builtins.eval"`` built a ResNet that failed at its
    first forward (``conv3d() received an invalid combination of arguments``)."""
    with pytest.raises(CardError, match=expected) as raised:
        volcam.load_model(_bundle(tmp_path / "bundle", **change))
    assert "inference.json" in str(raised.value) and "\n" not in str(raised.value)


def test_a_card_argument_of_the_wrong_type_names_the_card_key(tmp_path) -> None:
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    card["network"]["args"]["block_inplanes"] = "4, 8, 16, 32"
    card["weights"] = str(sd.file(card["weights"]))
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    with pytest.raises(
        CardError, match=r"card\.json: network\.args\.block_inplanes is \"4, 8, 16, 32\"; ResNet takes list\[int\]"
    ):
        volcam.load_model(path)


def test_arguments_a_factory_or_a_subclass_passes_on_are_checked_where_they_go() -> None:
    """``resnet18(**kwargs)`` hands them to ``ResNet``, ``DenseNet121(**kwargs)`` to ``DenseNet``."""
    from monai.networks.nets import resnet18

    declared, open_ended = declared_parameters(resnet18)
    assert not open_ended and declared["conv1_t_stride"] == (tuple[int] | int) and "pretrained" in declared
    with pytest.raises(CardError, match=r"args\.conv1_t_stride is \"x\"; resnet10 takes tuple\[int\] \| int"):
        build_network("resnet10", {"spatial_dims": 3, "conv1_t_stride": "x"}, "card.json")
    with pytest.raises(CardError, match=r"args\.bn_size is \"4\"; DenseNet121 takes int there"):
        build_network("DenseNet121", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "bn_size": "4"}, "c")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("ResNet", DEMO),
        ("ResNet", {**DEMO, "act": ["relu", {"inplace": True}], "norm": "batch", "conv1_t_size": [3, 3, 3]}),
        ("resnet10", {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 2, "pretrained": False}),
        ("DenseNet121", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "dropout_prob": 0.1}),
        ("ViT", {"in_channels": 1, "img_size": [32, 32, 24], "patch_size": 4, "hidden_size": 48, "mlp_dim": 96,
                 "num_layers": 1, "num_heads": 4, "classification": True, "num_classes": 2}),
        ("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2],
                  "kernel_size": [3, 3, 3], "norm": ["instance", {"affine": True}]}),
        ("SwinUNETR", {"in_channels": 1, "out_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
                       "num_heads": [3, 3, 3, 3], "window_size": 7, "norm_name": "instance"}),
        ("TorchVisionFCModel", {"model_name": "resnet18", "pool": ["avg", {"kernel_size": 7}]}),
    ],
)  # fmt: skip
def test_the_arguments_of_real_networks_pass(name, args) -> None:
    from volcam.model.allowlist import network_constructor

    check_arguments(network_constructor(name, "card.json"), args, "card.json", ("network", "args"))


def test_fits_holds_json_to_annotations() -> None:
    cases: list[tuple[Any, Any, bool | None]] = [
        (3, int, True), (True, int, False), ("3", int, False), (3, float, True), (2.5, int, False),
        (True, bool, True), (1, bool, True), ({"a": 1}, bool, False), (None, int | None, True),
        ([1, 2], Sequence[int], True), ([1, "2"], Sequence[int], False), ("12", Sequence[int], False),
        ([3, 3, 3], tuple[int] | int, True), ([1, 2], tuple[int, ...], True), ([1, 2], tuple[int, str], False),
        (["avg", {"k": 7}], tuple[str, dict[str, Any]], True), ("relu", str | tuple, True), ([1], tuple, True),
        ({"a": 1}, dict[str, int], True), ({"a": "x"}, dict[str, int], False), ("b", Literal["a", "b"], True),
        (1, Literal[True], False), ({"x": 1}, nn.Module, None), ("merging", str | nn.Module, True),
        ({"x": 1}, str | nn.Module, None), ("x", type[nn.Module], None), (object(), Any, True),
    ]  # fmt: skip
    for value, annotation, expected in cases:
        assert fits(value, annotation) is expected, (value, annotation)
    assert describe(tuple[int] | int) == "tuple[int] | int"
    assert describe(Sequence[int] | None) == "Sequence[int] | None"


def test_a_whole_number_past_a_million_is_refused_wherever_it_is(tmp_path) -> None:
    """The example (fuzz seed 8): ``layers: [1000000000, 1, 1, "\\u0000"]``, before any build."""
    start = time.perf_counter()
    with pytest.raises(CardError, match=rf"network_def\.layers\.0 is 1000000000; .* at most {MAX_INT}"):
        volcam.load_model(_bundle(tmp_path / "bundle", layers=[1_000_000_000, 1, 1, "\u0000"]))
    assert time.perf_counter() - start < 10
    with pytest.raises(CardError, match=r"args\.act\.1\.negative_slope is -2000000"):
        build_network("ResNet", {**DEMO, "act": ["leakyrelu", {"negative_slope": -2_000_000}]}, "card.json")


# -- the parts a build registers, counted --------------------------------------------------------------


def test_a_network_of_too_many_layers_is_refused_after_the_first_few_thousand(tmp_path) -> None:
    """Within the bound on every number, a layer count still asks for a million blocks: the build
    stops at :data:`MAX_PARTS` registered modules, parameters and buffers, whichever argument asked."""
    start = time.perf_counter()
    with pytest.raises(CardError, match=rf"ResNet with these arguments registers more than {MAX_PARTS} modules"):
        volcam.load_model(_bundle(tmp_path / "bundle", layers=[MAX_INT, 1, 1, 1]))
    assert time.perf_counter() - start < 30


@pytest.mark.slow
def test_a_network_built_for_real_is_counted_too() -> None:
    """SwinUNETR cannot be built on ``meta`` (it reads a tensor's value): its real build is counted."""
    start = time.perf_counter()
    with pytest.raises(CardError, match=r"SwinUNETR with these arguments registers more than"):
        build_network("SwinUNETR", {"in_channels": 1, "out_channels": 2, "depths": [100_000, 2, 2, 2]}, "card.json")
    assert time.perf_counter() - start < 60


def test_a_constructor_that_swallows_the_limit_is_still_refused() -> None:
    def stubborn() -> nn.Module:
        layers = nn.ModuleList()
        for _ in range(MAX_PARTS + 10):
            try:
                layers.append(nn.Identity())
            except Exception:  # what a careless constructor does
                continue
        return layers

    with pytest.raises(CardError, match="registers more than"):
        _built(stubborn, {}, "Stubborn", "card.json")


def test_the_count_is_of_the_building_thread_only() -> None:
    built: list[nn.Module] = []
    with _PartsLimit(limit=5) as limit:
        other = threading.Thread(target=lambda: built.append(nn.Sequential(*[nn.Linear(2, 2) for _ in range(20)])))
        other.start()
        other.join()
        nn.Linear(2, 2)
    assert len(built) == 1 and limit.count == 2 and not limit.exceeded  # the Linear's weight and bias


# -- a network that fails in its own code on its input ----------------------------------------------------


def _wrong_stride_model() -> volcam.Model:
    """The demo model with a network built (past the checks) with the fuzzed stride: it fails at its forward."""
    from monai.networks.nets import ResNet

    from volcam.model.model import Model

    model = volcam.load_model(sd.file(sd.CT_CARD))
    network = ResNet(**{**DEMO, "conv1_t_stride": "builtins.eval"})
    network.load_state_dict(model.network.state_dict())
    return Model(network, model.card)


def test_a_network_failing_in_its_own_code_is_one_line_naming_the_card() -> None:
    model = _wrong_stride_model()
    scan = volcam.load(sd.file("ct_covid_sample.nii.gz"))
    for run in (
        lambda: model.explain(scan, "gradcam"),
        lambda: model.predict(scan),
        lambda: model.explain(scan, "cam"),
    ):
        with pytest.raises(
            CardError, match=r"ct_covid\.card\.json: its network fails on an input of shape .*TypeError: conv3d"
        ):
            run()


def test_a_failure_of_volcams_own_code_during_the_forward_stays_an_internal_error(monkeypatch) -> None:
    from volcam.engine import capture

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("a bug in volcam's hook")

    monkeypatch.setattr(capture._Capture, "_keep", broken)
    model = volcam.load_model(sd.file(sd.CT_CARD))
    with pytest.raises(TypeError, match="a bug in volcam's hook"):
        model.explain(volcam.load(sd.file("ct_covid_sample.nii.gz")), "gradcam")


@pytest.mark.parametrize(
    ("channel_def", "labels"),
    [
        ({"0": "normal", "1": "covid"}, ("normal", "covid")),
        ({"1": "covid", "0": "normal"}, ("normal", "covid")),
        ([1], ()),  # found by benchmarks/fuzz.py --seed 31: an IndexError
        (["normal", "covid"], ()),
        ({"a": "normal"}, ()),
        ({"\u00b2": "normal"}, ()),  # a digit int() does not read
        ("normal,covid", ()),
        (None, ()),
    ],
)
def test_a_bundles_labels_are_read_from_metadata_of_the_right_form_only(tmp_path, channel_def, labels) -> None:
    from volcam.model.build import _bundle_labels

    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"network_data_format": {"outputs": {"pred": {"channel_def": channel_def}}}}))
    assert _bundle_labels(path) == labels
    for document in ([], {"network_data_format": []}, {"network_data_format": {"outputs": [1]}}):
        path.write_text(json.dumps(document))
        assert _bundle_labels(path) == ()


def test_a_network_built_for_real_asks_for_no_more_than_its_weights_can_fill(tmp_path) -> None:
    """Found by benchmarks/fuzz.py --seed 31: a ResNet the meta device could not build (num_classes -1) was
    built for real to find out, allocating 576 MiB of weights before the same error. A real build now
    counts each tensor's bytes before it is made, against what the weights file can fill."""
    weights = tmp_path / "model.pt"
    torch.save({}, weights)
    args = {**DEMO, "block_inplanes": [4, 8, 2365, 32], "num_classes": -1}
    with pytest.raises(CardError, match=r"asks for .* MiB of tensors while it is built, more than its weights file"):
        build_network("ResNet", args, "card.json", weights=weights)
    # SwinUNETR cannot be built on meta either: with weights that fit, it builds
    from monai.networks.nets import SwinUNETR

    swin = {"in_channels": 1, "out_channels": 2, "feature_size": 12}
    torch.save(SwinUNETR(**swin).state_dict(), weights)
    assert isinstance(build_network("SwinUNETR", swin, "card.json", weights=weights, empty=True), SwinUNETR)


def test_the_bytes_a_tensor_factory_asks_for() -> None:
    from volcam.model.allowlist import _requested_bytes

    assert _requested_bytes("empty", ((4, 1, 3, 3, 3),), {}) == 4 * 27 * 4
    assert _requested_bytes("zeros", (2, 3), {"dtype": torch.float64}) == 48
    assert _requested_bytes("full", ((10,), 1.0), {"dtype": torch.uint8}) == 10
    assert _requested_bytes("empty", (), {"size": (5,)}) == 20
    assert _requested_bytes("ones", ("x",), {}) == 0  # not a size: the factory says what is wrong
