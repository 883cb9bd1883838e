"""Building a card's network: shapes on ``meta``, the file's tensors assigned, a real build when needed."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from volcam import sample_data as sd
from volcam.model.allowlist import build_network
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
