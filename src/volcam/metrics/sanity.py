"""Sanity check by cascading parameter randomization (Adebayo et al., NeurIPS 2018).

A map that explains the model must change when the model's weights do. The layers of a deep copy
of the model are re-initialised from the head down, one block more per step; after each step the
map is computed again for the same class and compared with the original by Spearman rank
correlation and SSIM (3D on volumes). A method whose map stays the same when every block is
random fails: it shows the input, not the model. The user's model is never touched. The threshold
and the choices: docs/methods.md#sanity.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from volcam.engine.drive import frozen, model_input, read_output
from volcam.metrics._common import MetricInputError, as_map, spearman, ssim
from volcam.targets import OutputSpec, TargetSpec

__all__ = ["SanityCheck", "parameter_randomization", "randomization_blocks"]

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model, x, classes (B,)) -> maps (B, 1, *S)``: any explanation method, for methods volcam lacks."""


@dataclass(frozen=True)
class SanityCheck:
    """Attributes:
    method: the method checked.
    steps: the block randomised at each step, head first; step ``j`` has blocks ``0..j`` random.
    spearman: ``(steps, B)`` rank correlation with the original map.
    ssim: ``(steps, B)`` SSIM with the original map (maps in [0, 1]).
    threshold: the similarity both must stay at or above, once every block is random, to fail.
    passed: the map changed once the whole model was random.
    """

    method: str
    steps: tuple[str, ...]
    spearman: torch.Tensor
    ssim: torch.Tensor
    threshold: float
    passed: bool

    def report(self) -> str:
        """One line saying whether the method passed, with the final similarities."""
        rho, s = float(self.spearman[-1].mean()), float(self.ssim[-1].mean())
        if self.passed:
            return (
                f"{self.method}: passes the randomization check (with every block random: "
                f"Spearman {rho:.2f}, SSIM {s:.2f})"
            )
        return (
            f"{self.method}: FAILS the randomization check: its map does not change when the model's weights are "
            f"randomised (with every block random: Spearman {rho:.2f}, SSIM {s:.2f}, both >= {self.threshold}), "
            "so it does not explain the model"
        )


def randomization_blocks(model: nn.Module) -> list[str]:
    """The blocks randomised one by one, head first: the model's children that hold parameters,
    with ``nn.Sequential``/``nn.ModuleList`` containers opened one level deeper (ResNet stages
    become their residual blocks)."""
    blocks: list[str] = []

    def visit(module: nn.Module, prefix: str, open_containers: int) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if not any(True for _ in child.parameters()):
                continue
            if open_containers and isinstance(child, (nn.Sequential, nn.ModuleList)):
                visit(child, f"{full}.", open_containers - 1)
            else:
                blocks.append(full)

    visit(model, "", 2)
    if len(blocks) == 1 and blocks[0] and any(True for _ in model.get_submodule(blocks[0]).children()):
        # one wrapper holding everything: its children are the blocks
        inner = blocks.pop()
        visit(model.get_submodule(inner), f"{inner}.", 1)
    return blocks[::-1]


def parameter_randomization(
    model: nn.Module,
    x: torch.Tensor,
    method: str | Explainer = "gradcam",
    target: TargetSpec = None,
    layer: str | Sequence[str] = "auto",
    *,
    blocks: Sequence[str] | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    output: OutputSpec = None,
    **options: Any,
) -> SanityCheck:
    """Cascading parameter randomization of ``method`` on ``x`` ``(B, C, *S)``.

    Args:
        model: the classifier; a deep copy is randomised, the model itself is left as it is.
        method: a volcam method name, or an :data:`Explainer` callable.
        target: the class explained (index or label); ``None``: the original model's prediction,
            kept fixed for every step.
        layer: the target layer(s) for a volcam method.
        blocks: module names to randomise, head first; default :func:`randomization_blocks`.
        threshold: the check fails when, with every block random, both the mean Spearman
            correlation and the mean SSIM are still ``>= threshold``.
        seed: for the re-initialisation (the global RNG is left alone).
        output: the tensor explained, of a model returning several (the engine's ``output=``, a
            card's ``"output"``); ``None``: the model's only tensor.
        options: the method's options.

    Returns:
        :class:`SanityCheck`; its ``report()`` says whether the method passed.
    """
    explain = _explainer(method, layer, output, options)
    xp = model_input(model, x)
    clone = copy.deepcopy(model)
    names = list(blocks) if blocks is not None else randomization_blocks(clone)
    if not names:
        raise MetricInputError("the model has no parameters to randomise")
    for name in names:
        try:
            clone.get_submodule(name)
        except AttributeError:
            raise MetricInputError(f"the model has no module named {name!r} to randomise") from None
    from volcam.targets import predicted_classes, resolve_target

    with frozen(clone), torch.no_grad():
        out = read_output(clone, xp, output)
    _, classes = resolve_target(target if target is not None else predicted_classes(out), out)
    original = as_map(explain(clone, xp, classes)).cpu()
    rhos, ssims = [], []
    with torch.random.fork_rng(devices=[xp.device] if xp.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for name in names:
            _reinitialise(clone.get_submodule(name))
            cam = as_map(explain(clone, xp, classes)).cpu()
            rhos.append(spearman(original, cam))
            ssims.append(ssim(original.clamp(0, 1), cam.clamp(0, 1)))
    rho, s = torch.stack(rhos), torch.stack(ssims)
    passed = bool(rho[-1].mean() < threshold or s[-1].mean() < threshold)
    label = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    return SanityCheck(label, tuple(names), rho, s, threshold, passed)


def _explainer(
    method: str | Explainer, layer: str | Sequence[str], output: OutputSpec, options: dict[str, Any]
) -> Explainer:
    if callable(method):
        return method
    from volcam.engine.core import CamEngine

    def explain(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        with CamEngine(model, layer, progress=False, output=output) as engine:
            return engine.explain(x, method, classes, **options).map

    return explain


@torch.no_grad()
def _reinitialise(module: nn.Module) -> None:
    """Fresh weights for every part of ``module``: each layer's own initialiser where it has one
    (convolutions, linear, batch norm, which also resets its running statistics), else a normal
    draw with the parameter's own spread."""
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
        elif any(True for _ in sub.parameters(recurse=False)):
            for p in sub.parameters(recurse=False):
                p.normal_(0.0, float(p.std()) if p.numel() > 1 else 0.02)
