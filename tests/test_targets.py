"""Targets: what score is explained."""

from __future__ import annotations

import pytest
import torch

from volcam.errors import TargetError
from volcam.targets import (
    ClassProbability,
    ClassTarget,
    RegionTarget,
    predicted_classes,
    probabilities,
    resolve_target,
)


def test_predicted_and_probabilities_for_softmax_and_single_logit():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert predicted_classes(logits).tolist() == [1, 0]
    assert torch.allclose(probabilities(logits).sum(1), torch.ones(2))
    single = torch.tensor([[-0.3], [2.0]])
    assert predicted_classes(single).tolist() == [0, 1]
    assert torch.allclose(probabilities(single)[:, 1], torch.sigmoid(single[:, 0]))


def test_class_target_one_per_sample_and_negative_class():
    logits = torch.tensor([[0.1, 2.0], [3.0, -1.0]])
    assert ClassTarget([0, 1])(logits).tolist() == pytest.approx([0.1, -1.0])
    assert ClassTarget(1)(logits).tolist() == pytest.approx([2.0, -1.0])
    assert ClassTarget(0)(torch.tensor([[1.5]])).item() == pytest.approx(-1.5)


def test_class_probability():
    logits = torch.tensor([[0.0, 0.0]])
    assert ClassProbability(1)(logits).item() == pytest.approx(0.5)


def test_region_target_sums_a_class_inside_a_mask():
    out = torch.arange(8, dtype=torch.float32).view(1, 2, 4)
    mask = torch.tensor([True, False, False, True])
    assert RegionTarget(1, mask)(out).item() == 4.0 + 7.0
    with pytest.raises(TargetError, match="spatial shape"):
        RegionTarget(1, torch.ones(3))(out)
    with pytest.raises(TargetError, match="out of range"):
        RegionTarget(5, mask)(out)


def test_resolve_target_defaults_to_prediction_and_checks_ranges():
    logits = torch.tensor([[0.1, 2.0], [3.0, -1.0]])
    _, classes = resolve_target(None, logits)
    assert classes.tolist() == [1, 0]
    _, classes = resolve_target(["b", "a"], logits, labels=["a", "b"])
    assert classes.tolist() == [1, 0]
    with pytest.raises(TargetError, match="out of range"):
        resolve_target(2, logits)
    with pytest.raises(TargetError, match="no class labels"):
        resolve_target("a", logits)
    with pytest.raises(TargetError, match="RegionTarget"):
        resolve_target(0, torch.rand(1, 2, 4, 4))
