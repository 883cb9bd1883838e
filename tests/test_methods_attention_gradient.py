"""Gradient-weighted attention (Chefer, Gur & Wolf, ICCV 2021) against an independent computation.

The reference runs MONAI's ViT in a plain forward and backward written here: each block's attention is
recomputed from the block's own query/key projections with ``retain_grad`` on it (MONAI's ``att_mat``,
kept by ``save_attn=True``, is detached, so it holds no gradient: the recomputation is checked against
it instead), the class score is backpropagated, and the formula ``R <- R + mean_h (dA * A)+ R`` is
written out per sample.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

import volcam
from volcam.engine.gradients import attention_gradients
from volcam.errors import MethodError
from volcam.methods.attention import attention_gradient
from volcam.targets import ClassTarget


def vit(layers: int = 3, **kwargs) -> nn.Module:
    """A small 3D MONAI ViT classifier: 32³ inputs, 8³ patches (a 4x4x4 grid plus the class token)."""
    from monai.networks.nets import ViT

    torch.manual_seed(0)
    args = dict(hidden_size=24, mlp_dim=48, num_layers=layers, num_heads=4, classification=True, num_classes=2)
    return ViT(in_channels=1, img_size=32, patch_size=8, spatial_dims=3, save_attn=True, **{**args, **kwargs}).eval()


def _reference(net: nn.Module, x: torch.Tensor, klass: int, cut: bool = False) -> list[tuple[torch.Tensor, ...]]:
    """Per block ``(A, dA)`` by plain autograd: each block's attention recomputed from its ``qkv``
    projection (as MONAI's SABlock does) with ``retain_grad``, and ``d out[:, klass] / d A``.
    ``cut``: each block's attention enters the rest of the network as a fresh leaf, so a gradient
    through a later block's attention is lost (what a per-block leaf would give)."""
    net = copy.deepcopy(net)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def attention_forward(self, h, attn_mask=None):
        q, k, v = self.input_rearrange(self.qkv(h))
        a = torch.einsum("blxd,blyd->blxy", q, k).mul(self.scale).softmax(dim=-1)
        if cut:
            a = a.detach().requires_grad_(True)
        a.retain_grad()
        kept.append((a, a))
        out = self.out_rearrange(torch.einsum("bhxy,bhyd->bhxd", a, v))
        return self.out_proj(out)

    for block in net.blocks:
        block.attn.forward = types.MethodType(attention_forward, block.attn)
    out = net(x)[0]
    out[:, klass].sum().backward()
    return [(a.detach(), a.grad) for a, _ in kept]


def _by_hand(pairs: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """Chefer et al.'s recipe per sample: R = I; R <- R + mean_h max(dA * A, 0) @ R; the class token's row."""
    out = []
    for b in range(pairs[0][0].shape[0]):
        t = pairs[0][0].shape[-1]
        r = torch.eye(t, dtype=torch.float64)
        for a, g in pairs:
            cam = (g[b].double() * a[b].double()).clamp(min=0).mean(0)
            r = r + cam @ r
        out.append(r[0, 1:])
    return torch.stack(out)


def test_the_map_is_chefers_formula_on_gradients_from_a_plain_backward():
    net = vit(3)
    x = torch.rand(2, 1, 32, 32, 32)
    result = volcam.explain(net, x, "attention-gradient", target=1)
    # the reference's recomputed attention is MONAI's own (saved by save_attn in the explain's forward)
    pairs = _reference(net, x, 1)
    for (a, _), block in zip(pairs, net.blocks, strict=True):
        torch.testing.assert_close(a, block.attn.att_mat, rtol=1e-5, atol=1e-7)
    expected = _by_hand(pairs)
    got = result.raw.flatten(1).double()
    assert result.raw.shape == (2, 1, 4, 4, 4) and result.method == "attention-gradient"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert result.map.shape == (2, 1, 32, 32, 32) and 0 <= float(result.map.amin()) <= float(result.map.amax()) <= 1


def test_the_engine_takes_the_full_gradient_through_every_later_block():
    net = vit(3)
    x = torch.rand(2, 1, 32, 32, 32)
    full = _reference(net, x, 0)
    cut = _reference(net, x, 0, cut=True)
    with volcam.CamEngine(net, "blocks.2.norm1", progress=False) as engine:
        fwd = engine.forward(x, graph=False, attention_graph=True)
        grads = attention_gradients(fwd, ClassTarget(torch.tensor([0, 0])), engine._select)
    assert len(grads) == 3
    for g, (_, expected) in zip(grads, full, strict=True):
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    # the test can tell: a gradient cut at each block's attention differs in the first blocks
    assert not torch.allclose(full[0][1], cut[0][1], rtol=1e-3, atol=1e-3 * float(full[0][1].abs().max()))
    torch.testing.assert_close(full[-1][1], cut[-1][1])  # nothing after the last block's attention to cut


def test_a_target_layer_before_the_last_block_keeps_the_class_tokens_path():
    # the target layer's tokens go on rebuilt from A; the class token must stay in the graph the
    # first block's attention started, else every earlier block's gradient loses its path through it
    net = vit(3)
    x = torch.rand(1, 1, 32, 32, 32)
    expected = _by_hand(_reference(net, x, 1))
    for layer in ("blocks.0.norm1", "blocks.1.norm2", "patch_embedding"):
        result = volcam.explain(net, x, "attention-gradient", target=1, layer=layer)
        got = result.raw.flatten(1).double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_samples_are_independent():
    net = vit(2)
    x = torch.rand(3, 1, 32, 32, 32)
    batch = volcam.explain(net, x, "attention-gradient", target=[0, 1, 1])
    alone = volcam.explain(net, x[2:], "attention-gradient", target=1)
    torch.testing.assert_close(alone.raw[0], batch.raw[2], rtol=1e-5, atol=1e-8)


def test_the_model_comes_back_unchanged():
    net = vit(2).train()
    net.blocks[0].attn.qkv.weight.requires_grad_(False)  # a mixed state, restored exactly
    grad_state = {n: p.requires_grad for n, p in net.named_parameters()}
    modes = {n: m.training for n, m in net.named_modules()}
    before = copy.deepcopy(net.state_dict())
    result = volcam.explain(net, torch.rand(1, 1, 32, 32, 32), "attention-gradient")
    assert torch.isfinite(result.map).all()
    assert {n: p.requires_grad for n, p in net.named_parameters()} == grad_state
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert all(p.grad is None for p in net.parameters())
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.is_grad_enabled()


def test_the_engine_restores_the_model_when_the_method_fails():
    net = vit(2).train()
    with pytest.raises(MethodError):  # an option the method does not take: refused before any pass
        volcam.explain(net, torch.rand(1, 1, 32, 32, 32), "attention-gradient", head_fusion="max")
    with pytest.raises(Exception):  # noqa: B017 - a wrong input shape fails inside the forward
        volcam.explain(net, torch.rand(1, 1, 24, 32, 32), "attention-gradient", layer="blocks.1.norm1")
    assert net.training and all(m.training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_without_a_class_token_the_map_is_the_mean_of_the_rows():
    torch.manual_seed(0)
    attention = [torch.softmax(torch.randn(2, 3, 8, 8), -1) for _ in range(2)]
    gradients = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    r = torch.eye(8, dtype=torch.float64).expand(2, 8, 8)
    for a, g in zip(attention, gradients, strict=True):
        r = r + (a.double() * g.double()).clamp(min=0).mean(1) @ r
    got = attention_gradient(attention, gradients, (2, 2, 2))
    assert got.shape == (2, 1, 2, 2, 2)
    torch.testing.assert_close(got.flatten(1).double(), r.mean(1))


def test_mismatched_gradients_and_a_cnn_are_one_line():
    a = [torch.softmax(torch.randn(1, 2, 9, 9), -1)]
    with pytest.raises(MethodError, match="one gradient shaped like"):
        attention_gradient(a, [torch.randn(1, 2, 9, 8)], (2, 2, 2))
    from conftest import GapNet

    with pytest.raises(MethodError, match="attention weights of ViT-style blocks") as err:
        volcam.explain(GapNet(3).eval(), torch.rand(1, 1, 8, 8, 8), "attention-gradient", layer="features.2")
    assert "\n" not in str(err.value)


def test_registered_with_its_cost_and_needs():
    info = volcam.methods.get_method("attention-gradient")
    assert info.needs == frozenset({"attention", "attention_gradients"})
    assert info.passes == "1F+1B" and not info.options
