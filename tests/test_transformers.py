"""Transformers on their patch grid: MONAI's ViT (3D and 2D), a Swin encoder classifier, reshape=, rollout."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import volcam
from conftest import SwinClassifier
from volcam.engine.tokens import Layout, from_grid, infer_layout, to_grid
from volcam.errors import LayerError, MethodError, VolcamError
from volcam.methods.attention import rollout
from volcam.methods.learned import LCamAttention

HIDDEN = 24
# small perturbation budgets: the contract is checked, not the method's quality
OPTIONS = {"smoothgradcam++": {"n_samples": 2}, "occlusion": {"max_forwards": 8}}
OPTIONS.update({m: {"module": LCamAttention(HIDDEN, 2)} for m in ("lcam-fm", "lcam-img")})


def vit(dims: int, **kwargs) -> nn.Module:
    """A small MONAI ViT classifier: 32^dims inputs, 8^dims patches (a 4^dims grid plus the class token)."""
    from monai.networks.nets import ViT

    torch.manual_seed(0)
    args = dict(hidden_size=HIDDEN, mlp_dim=48, num_layers=2, num_heads=4, classification=True, num_classes=2)
    return ViT(in_channels=1, img_size=32, patch_size=8, spatial_dims=dims, **{**args, **kwargs}).eval()


def _manual_token_gradients(net: nn.Module, x: torch.Tensor, layer: str, klass: int) -> tuple[torch.Tensor, ...]:
    """The layer's tokens and d logit / d tokens by plain autograd, for comparison."""
    kept = {}

    def hook(_m, _i, out):
        out.retain_grad()
        kept["t"] = out

    handle = net.get_submodule(layer).register_forward_hook(hook)
    try:
        out = net(x)[0]
        out[:, klass].sum().backward()
    finally:
        handle.remove()
    net.zero_grad()
    return kept["t"].detach(), kept["t"].grad


# -- every method on MONAI's ViT, 3D and 2D ---------------------------------------------------------------


@pytest.fixture(scope="module")
def vits() -> dict[int, nn.Module]:
    return {3: vit(3), 2: vit(2)}


@pytest.mark.parametrize("method", [m.name for m in volcam.methods()])
@pytest.mark.parametrize("dims", [3, 2], ids=["3d", "2d"])
def test_every_method_on_vit_gives_a_map_on_the_patch_grid_or_its_one_line_reason(vits, method, dims):
    x = torch.rand(2, 1, *[32] * dims)
    try:
        result = volcam.explain(vits[dims], x, method, **OPTIONS.get(method, {}))
    except VolcamError as err:
        # CAM's GAP + linear identity does not hold on a class token: refused, in one line
        assert method == "cam" and "\n" not in str(err)
        return
    assert result.layer == "blocks.1.norm1"
    assert result.map.shape == (2, 1, *[32] * dims) and torch.isfinite(result.map).all()
    grid = (4,) * dims if method != "occlusion" else (32,) * dims  # occlusion works on the input grid
    assert result.raw.shape == (2, 1, *grid)
    # not constant, or said so: a random network may have no evidence for a class at all (a ReLU'd map of
    # only negative evidence, occlusion's score drops clipped at 0), which the result must then tell
    flat = [b for b in range(2) if result.map[b].amax() == result.map[b].amin()]
    assert len(result.warnings) >= len(flat)
    if method in ("gradcam", "eigencam", "rollout"):
        assert not flat


def test_auto_picks_the_last_blocks_first_norm_and_says_so(vits, caplog):
    net = vit(3, num_layers=3)
    with caplog.at_level(logging.INFO, logger="volcam"):
        result = volcam.explain(net, torch.rand(1, 1, 32, 32, 32))
    assert result.layer == "blocks.2.norm1"
    assert "blocks.2.norm1" in caplog.text and "65 tokens (1 extra) on a 4x4x4 grid" in caplog.text


def test_activations_and_gradients_are_the_tokens_laid_on_the_grid(vits):
    net, x = vits[3], torch.rand(2, 1, 32, 32, 32)
    layer = "blocks.1.norm1"
    tokens, grads = _manual_token_gradients(net, x, layer, klass=1)
    with volcam.CamEngine(net, layer) as engine:
        a = engine.forward(x).activations[layer].detach()
        g = engine.gradients(x, target=1)[layer]
    on_grid = lambda t: t[:, 1:].reshape(2, 4, 4, 4, HIDDEN).permute(0, 4, 1, 2, 3)  # noqa: E731
    torch.testing.assert_close(a, on_grid(tokens))
    torch.testing.assert_close(g, on_grid(grads))


def test_activations_put_back_unchanged_give_the_models_own_scores(vits):
    """Score-CAM and Ablation-CAM perturb A on the grid; the network must get it back in its layout."""
    net, x = vits[3], torch.rand(2, 1, 32, 32, 32)
    with volcam.CamEngine(net, progress=False) as engine:
        a = engine.forward(x, graph=False).activations["blocks.1.norm1"]
        runner = engine.runner(x, target=[0, 1])
        scores = runner.activation_scores(a, torch.arange(2))
    torch.testing.assert_close(scores, runner.base_scores)


# -- the grid from the user: reshape= -------------------------------------------------------------------


def test_a_grid_the_model_does_not_tell_is_one_error_naming_the_tokens_and_reshape():
    net = vit(3, proj_type="perceptron")  # a linear patch embedding: no (B, C, *grid) output to read
    with pytest.raises(LayerError, match=r"65 tokens of 24 channels.*pass reshape=") as err:
        volcam.explain(net, torch.rand(1, 1, 32, 32, 32))
    assert "\n" not in str(err.value)


def test_reshape_lays_tokens_on_the_grid_the_user_gives():
    net, x = vit(3, proj_type="perceptron"), torch.rand(2, 1, 32, 32, 32)

    def reshape(t: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's reshape_transform, in 3D
        return t[:, 1:, :].reshape(t.size(0), 4, 4, 4, t.size(2)).permute(0, 4, 1, 2, 3)

    tokens, grads = _manual_token_gradients(net, x, "blocks.1.norm1", klass=0)
    with volcam.CamEngine(net, reshape=reshape, progress=False) as engine:
        assert engine.layers_for(x) == ("blocks.1.norm1",)
        torch.testing.assert_close(engine.forward(x).activations["blocks.1.norm1"].detach(), reshape(tokens))
        torch.testing.assert_close(engine.gradients(x, target=0)["blocks.1.norm1"], reshape(grads))
        for method in ("gradcam", "ablationcam", "rollout"):
            result = engine.explain(x, method, target=0)
            assert result.raw.shape == (2, 1, 4, 4, 4) and torch.isfinite(result.map).all()
        runner = engine.runner(x, target=0)
        a = engine.forward(x).activations["blocks.1.norm1"]
        torch.testing.assert_close(runner.activation_scores(a, torch.arange(2)), runner.base_scores)


def test_a_reshape_that_computes_values_is_refused():
    net = vit(3, proj_type="perceptron")
    mean_pool = lambda t: t[:, 1:].reshape(t.size(0), 4, 4, 4, -1).permute(0, 4, 1, 2, 3) * 0.5  # noqa: E731
    with pytest.raises(LayerError, match="only select and reorder"):
        volcam.explain(net, torch.rand(1, 1, 32, 32, 32), reshape=mean_pool)


# -- Swin: channels-last stages -------------------------------------------------------------------------


def test_swin_encoder_classifier_is_explained_at_its_last_stage():
    torch.manual_seed(0)
    net = SwinClassifier().eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with volcam.CamEngine(net, progress=False) as engine:
        assert engine.layers_for(x) == ("encoder.layers4.0.blocks.0.norm1",)
        for method in ("gradcam", "hirescam", "scorecam", "eigencam"):
            result = engine.explain(x, method, target=[0, 1])
            assert result.raw.shape == (2, 1, 2, 2, 2)  # the last stage's grid, before its patch merging
            assert torch.isfinite(result.map).all() and (result.map.flatten(1).std(1) > 0).all()
        with pytest.raises(MethodError, match="windowed attention"):
            engine.explain(x, "rollout")
    # the stage's channels-last tokens (B, d, h, w, C) are A = (B, C, d, h, w)
    layout = infer_layout((1, 2, 2, 2, 48), 5, [(1, 48, 2, 2, 2)], last_axis=True)
    assert layout == Layout("channels_last", (2, 2, 2), 48)


# -- attention rollout -------------------------------------------------------------------------------


def _rollout_by_hand(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's recipe written out per sample with numpy-style loops."""
    out = []
    for b in range(attentions[0].shape[0]):
        r = torch.eye(attentions[0].shape[-1], dtype=torch.float64)
        for a in attentions:
            m = a[b].double().mean(0)
            m = 0.5 * m + 0.5 * torch.eye(m.shape[0], dtype=torch.float64)
            m = m / m.sum(1, keepdim=True)
            r = m @ r
        out.append(r[0, 1:])
    return torch.stack(out)


def test_rollout_is_the_class_tokens_attention_flow_from_monais_own_attention_weights():
    net = vit(3, save_attn=True)  # MONAI keeps each block's att_mat: an independent source of the weights
    x = torch.rand(2, 1, 32, 32, 32)
    result = volcam.explain(net, x, "rollout")
    expected = _rollout_by_hand([blk.attn.att_mat for blk in net.blocks])  # from the explain's own forward
    torch.testing.assert_close(result.raw.flatten(1).double(), expected, rtol=1e-5, atol=1e-7)
    # batch-safe: each sample's map is its own
    alone = volcam.explain(net, x[1:], "rollout")
    torch.testing.assert_close(alone.raw[0], result.raw[1])


def test_rollout_without_a_class_token_averages_the_rows():
    attention = torch.softmax(torch.randn(2, 3, 8, 8), -1)
    expected = rollout([attention], (2, 2, 2))
    fused = (attention.double().mean(1) + torch.eye(8)) / 2
    fused = fused / fused.sum(-1, keepdim=True)
    torch.testing.assert_close(expected.flatten(1).double(), fused.mean(1))


def test_rollout_on_a_cnn_is_one_line():
    from conftest import GapNet

    with pytest.raises(MethodError, match="attention weights of ViT-style blocks") as err:
        volcam.explain(GapNet(3).eval(), torch.rand(1, 1, 8, 8, 8), "rollout", layer="features.2")
    assert "\n" not in str(err.value)


# -- the layout functions themselves ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((2, 65, 24), Layout("tokens", (4, 4, 4), 24, extra=1)),
        ((2, 69, 24), Layout("tokens", (4, 4, 4), 24, extra=5)),  # a class token and four registers
        ((2, 4, 4, 4, 24), Layout("channels_last", (4, 4, 4), 24)),
    ],
)
def test_to_grid_and_back_is_the_identity(shape, layout):
    t = torch.randn(shape)
    a = to_grid(t, layout)
    assert a.shape == (2, 24, 4, 4, 4)
    torch.testing.assert_close(from_grid(a, t, layout), t)
    assert infer_layout(shape, 5, [(2, 24, 4, 4, 4)], batch=2) == layout


def test_tokens_that_fit_no_grid_have_no_layout():
    assert infer_layout((1, 100, 24), 5, [(1, 24, 4, 4, 4)]) is None  # 36 extra tokens: not a class token
    assert infer_layout((1, 24), 5, [(1, 24, 4, 4, 4)]) is None  # a pooled vector


# -- the demo transformer -------------------------------------------------------------------------------


def test_the_demo_transformer_explains_the_sample_ct_on_its_grid():
    from volcam import sample_data as sd

    model = volcam.load_model(sd.file(sd.CT_VIT_CARD))
    scan = volcam.load(sd.file(sd.CT_NIFTI))
    assert model.predict(scan)["covid"] > 0.5  # the sample has lesions
    for method in ("gradcam", "rollout"):
        explanation = model.explain(scan, method, target="covid")
        assert explanation.layers == ("blocks.2.norm1",)
        assert explanation.map.shape == scan.shape and torch.isfinite(explanation.map).all()
        assert explanation.result.raw.shape == (1, 1, 8, 8, 6)  # 4x4x4-voxel patches of the 32x32x24 input
