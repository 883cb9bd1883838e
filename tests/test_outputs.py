"""Which output: output= picks the tensor explained from a dict or tuple; callable targets see the raw output."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import volcam
from conftest import GapNet
from volcam import CamEngine
from volcam.model.card import read_card
from volcam.targets import describe_output, select_output


class TwoHeads(nn.Module):
    """GapNet's features with an auxiliary head (3 outputs) and the classifier (2 outputs), returned as
    a dict, a tuple with the auxiliary head first, or a named tuple."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = GapNet(3, num_classes=2)
        self.aux = nn.Linear(16, 3)
        self.kind = kind

    def forward(self, x: torch.Tensor):
        pooled = self.body.pool(self.body.features(x)).flatten(1)
        aux, logits = self.aux(pooled), self.body.fc(pooled)
        if self.kind == "dict":
            return {"aux": aux, "logits": logits}
        return (aux, logits)


METHODS = ("gradcam", "cam", "hirescam", "scorecam", "ablationcam", "occlusion", "smoothgradcam++")
OPTIONS = {"smoothgradcam++": {"n_samples": 2}, "occlusion": {"max_forwards": 8}}


@pytest.mark.parametrize(
    "kind,spec",
    [("dict", "logits"), ("dict", lambda out: out["logits"]), ("tuple", 1), ("tuple", -1)],
    ids=["dict-key", "dict-callable", "tuple-index", "tuple-last"],
)
def test_the_picked_output_is_explained_as_the_classifier_alone(kind, spec):
    net = TwoHeads(kind).eval()
    alone = net.body  # the same features and classifier, returning its logits only
    x = torch.rand(2, 1, 8, 8, 8)
    with (
        CamEngine(net, "body.features.3", output=spec, progress=False) as picked,
        CamEngine(alone, "features.3", progress=False) as plain,
    ):
        for method in METHODS:
            ours = picked.explain(x, method, **OPTIONS.get(method, {}))
            theirs = plain.explain(x, method, **OPTIONS.get(method, {}))
            assert torch.allclose(ours.map, theirs.map, atol=1e-5), method
            assert torch.equal(ours.classes, theirs.classes) and torch.allclose(ours.output, theirs.output)
            assert ours.probabilities is not None and ours.probabilities.shape == (2, 2)


@pytest.mark.parametrize("kind,spec", [("dict", "logits"), ("tuple", 1)], ids=["dict", "tuple"])
def test_every_registered_method_runs_on_a_picked_output_or_says_why_in_one_line(kind, spec):
    from volcam.methods.learned import LCamAttention

    options = {**OPTIONS, "occlusion": {"max_forwards": 8}, "kpcacam": {}}
    options.update({m: {"module": LCamAttention(16, 2)} for m in ("lcam-fm", "lcam-img")})
    x = torch.rand(2, 1, 8, 8, 8)
    with CamEngine(TwoHeads(kind).eval(), "body.features.3", output=spec, progress=False) as engine:
        for info in volcam.methods():
            try:
                result = engine.explain(x, info.name, target=[0, 1], **options.get(info.name, {}))
            except volcam.VolcamError as error:  # rollout, attention-gradient: no attention in this model
                assert "attention" in info.needs and "\n" not in str(error)
                continue
            assert result.map.shape == (2, 1, 8, 8, 8) and torch.isfinite(result.map).all(), info.name
            assert result.classes.tolist() == [0, 1] and result.output.shape == (2, 2)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_several_outputs_without_output_is_one_line_listing_them(kind):
    net = TwoHeads(kind).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(volcam.InputError) as refused:
        volcam.explain(net, x, "gradcam", layer="body.features.3")
    message = str(refused.value)
    listed = "'aux' (1, 3), 'logits' (1, 2)" if kind == "dict" else "[0] (1, 3), [1] (1, 2)"
    assert listed in message and "output=" in message and "\n" not in message
    with pytest.raises(volcam.InputError, match="output='score': the model returned a dict of 'aux'"):
        volcam.explain(TwoHeads("dict").eval(), x, layer="body.features.3", output="score")
    with pytest.raises(volcam.InputError, match=r"output=2: the model returned a tuple of \[0\] \(1, 3\)"):
        volcam.explain(TwoHeads("tuple").eval(), x, layer="body.features.3", output=2)
    with pytest.raises(volcam.InputError, match="returned a list, not a tensor"):
        volcam.explain(net, x, layer="body.features.3", output=lambda out: [out])


def test_a_callable_target_sees_the_raw_output():
    net = TwoHeads("dict").eval()
    x = torch.rand(2, 1, 8, 8, 8)
    seen = []

    def aux_class_1(out):
        seen.append(type(out))
        return out["aux"][:, 1]

    with CamEngine(net, "body.features.3", output="logits", progress=False) as engine:
        # Score-CAM weighs a class target by its probability, a custom score as it is: compare increases
        options = {**OPTIONS, "scorecam": {"weights": "increase"}}
        for method in ("gradcam", "scorecam", "occlusion"):
            custom = engine.explain(x, method, target=aux_class_1, **options.get(method, {}))
            with CamEngine(net, "body.features.3", output="aux", progress=False) as aux:
                reference = aux.explain(x, method, target=1, **options.get(method, {}))
            assert torch.allclose(custom.map, reference.map, atol=1e-5), method
            assert (custom.classes == -1).all() and custom.output.shape == (2, 2)  # the picked output, still
            assert torch.allclose(custom.scores, reference.scores)
    assert seen and set(seen) == {dict}


def test_a_single_tensor_and_a_container_with_one_tensor_need_no_output():
    logits = torch.zeros(1, 2)
    assert select_output(logits) is logits
    hidden = [torch.zeros(1, 5, 4)] * 2
    assert select_output((logits, hidden)) is logits  # MONAI's ViT: (logits, hidden states)
    assert select_output({"logits": logits, "name": "x"}) is logits
    with pytest.raises(volcam.InputError, match="leave output= out"):
        select_output(logits, "logits")
    with pytest.raises(volcam.InputError, match="returned a str, not a tensor"):
        select_output("logits")
    assert describe_output({"a": logits, "h": hidden}) == "a dict of 'a' (1, 2), 'h' a list of 2"


def test_the_model_card_names_its_output(tmp_path):
    from volcam import sample_data as sd
    from volcam.model.model import Model

    card = json.loads(sd.file(sd.CT_CARD).read_text())
    for bad in (True, [1], "", 1.5):
        (tmp_path / "bad.json").write_text(json.dumps({**card, "output": bad}))
        with pytest.raises(volcam.CardError, match="'output' is"):
            read_card(tmp_path / "bad.json")
    for good in ("logits", 1):
        (tmp_path / "card.json").write_text(json.dumps({**card, "output": good}))
        assert read_card(tmp_path / "card.json").output == good

    from monai.data import MetaTensor

    plain = {**card, "layer": "body.features.3", "preprocessing": []}  # TwoHeads on the scan as it is
    (tmp_path / "card.json").write_text(json.dumps({**plain, "output": "logits"}))
    (tmp_path / "silent.json").write_text(json.dumps(plain))
    scan = MetaTensor(torch.rand(1, 8, 8, 8))
    model = Model(TwoHeads("dict"), read_card(tmp_path / "card.json"))
    explained = model.explain(scan, "gradcam")
    assert explained.map.shape == scan.shape and set(explained.probabilities) == {"normal", "covid"}
    assert model.predict(scan) == pytest.approx(explained.probabilities, abs=1e-6)
    silent = Model(TwoHeads("dict"), read_card(tmp_path / "silent.json"))
    for call in (lambda: silent.explain(scan, "gradcam"), lambda: silent.predict(scan)):
        with pytest.raises(volcam.CardError, match=r"silent\.json: the model returned a dict of 'aux' \(1, 3\)"):
            call()


# -- every metric scores the output the card names --------------------------------------------------------


class WithAuxiliaryHead(nn.Module):
    """The shipped CT network behind an auxiliary head that comes first: ``(aux, logits)``. The auxiliary
    head disagrees with the classifier (its classes reversed, three of them), so a metric that reads it
    instead of the logits the card names gives other numbers."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return 3.0 * torch.cat([logits.flip(1), logits[:, :1]], dim=1), logits


def shipped_and_tuple_models(tmp_path):
    """The shipped CT model, and the same network returning ``(aux, logits)`` with a card saying
    ``"output": 1`` (its layer named through the wrapper)."""
    from volcam import sample_data as sd
    from volcam.model.model import Model

    plain = volcam.load_model(sd.file(sd.CT_CARD))
    card = json.loads(sd.file(sd.CT_CARD).read_text())
    card.update(layer=f"net.{card['layer']}", output=1)
    card.pop("lcam")
    path = tmp_path / "ct_covid_aux.card.json"
    path.write_text(json.dumps(card))
    return plain, Model(WithAuxiliaryHead(plain.network), read_card(path))


def test_evaluate_scores_the_output_the_card_names(tmp_path):
    from volcam import sample_data as sd
    from volcam.workflows.evaluate import evaluate_to_folder

    plain, tupled = shipped_and_tuple_models(tmp_path)
    scan, mask = volcam.load(sd.file(sd.CT_DICOM)), volcam.load(sd.file(sd.CT_MASK))
    options = {"methods": ["gradcam"], "steps": 5, "road": True, "robustness": True}
    (expected,) = evaluate_to_folder(scan, plain, mask, tmp_path / "plain", **options)
    (row,) = evaluate_to_folder(scan, tupled, mask, tmp_path / "tuple", **options)
    for column in ("deletion_auc", "insertion_auc", "average_drop", "road", "sanity_spearman", "max_sensitivity"):
        assert row[column] == pytest.approx(expected[column], rel=1e-5, abs=1e-6), column
    assert row["pointing_hit"] == expected["pointing_hit"]


def test_a_cohort_scores_the_output_the_card_names(tmp_path, monkeypatch):
    from volcam.testing.cohorts import synthetic_cohort
    from volcam.workflows.cohort import run

    plain, tupled = shipped_and_tuple_models(tmp_path)
    manifest = synthetic_cohort(tmp_path / "data", 2)
    options = {"methods": ["gradcam"], "faithfulness_steps": 4, "progress": False, "prefetch": False}
    tables = {}
    for name, model in (("plain", plain), ("tuple", tupled)):
        monkeypatch.setattr(run, "cached_model", lambda *_, model=model: model)
        tables[name] = volcam.run_cohort(manifest, tmp_path / "ct_covid_aux.card.json", tmp_path / name, **options)
    expected, table = (tables[n].sort_values("case").reset_index(drop=True) for n in ("plain", "tuple"))
    assert (table["status"] == "ok").all() and table["prediction"].tolist() == expected["prediction"].tolist()
    for column in ("p_covid", "gradcam.deletion_auc", "gradcam.insertion_auc", "gradcam.average_drop"):
        assert table[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-5), column


@pytest.mark.parametrize("variant", ["fm", "img"])
def test_lcam_trains_on_the_output_the_card_names(tmp_path, variant):
    from volcam import sample_data as sd
    from volcam.workflows.lcam_training import train_lcam

    plain, tupled = shipped_and_tuple_models(tmp_path)
    scan = volcam.load(sd.file(sd.CT_DICOM))
    images = plain.prepare(scan)[None].as_tensor().repeat(4, 1, 1, 1, 1)
    images = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    options = {"epochs": 2, "batch_size": 2, "save": False, "progress": False}
    expected = train_lcam(plain, images, variant, **options)
    trained = train_lcam(tupled, images, variant, **options)
    assert [row["train_loss"] for row in trained.history] == pytest.approx(
        [row["train_loss"] for row in expected.history], rel=1e-5
    )
    for name, value in expected.module.state_dict().items():
        assert torch.allclose(trained.module.state_dict()[name], value, atol=1e-6), name
