"""ModelRunner: what a perturbation method gets to run the model, batched and gradient-free.

Score-CAM, Ablation-CAM and occlusion are functions of tensors plus this runner. The engine builds
it around the model (no hooks here): it scores batches of perturbed inputs, or of perturbed
target-layer activations through the head alone when the model can be cut there, each row for
the target of the sample it was made from, and it tells how many rows to send at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from volcam.targets import ClassProbability, ClassTarget, Target, select_output, target_rows, target_score

__all__ = ["ModelRunner"]


@dataclass
class ModelRunner:
    """Batched ``no_grad`` scoring of perturbed copies of the input or of the activations.

    Attributes:
        target: the explained target, resolved on the original batch.
        inputs: the model input ``(B, C, *S)`` (plain tensor on the model's device).
        base_scores: ``(B,)`` the target score of the unperturbed input.
        batch_size: rows per model call, chosen from free memory unless the caller fixed it.
        run_inputs: ``(N, C, *S) -> output`` the whole model (its raw output: a tensor, a dict ...).
        run_activations: ``(activations (N, K, *s), sample (N,)) -> output``: the head alone when
            ``head_only``, else the whole model with the layer's output replaced.
        select: raw output -> the tensor explained (the engine's ``output=``); volcam's own
            targets score that tensor, a callable target the raw output.
        head_only: whether activations go through the head alone (cheap) or a full forward.
        show_progress: draw a tqdm bar for long loops.
        forwards: full forward rows run so far (head-only passes not counted).
        details: what the method reports about its run, for the result (Score-CAM: the channels
            it masked out of the layer's).
    """

    target: Target
    inputs: torch.Tensor
    base_scores: torch.Tensor
    batch_size: int
    run_inputs: Callable[[torch.Tensor], Any] = field(repr=False)
    run_activations: Callable[[torch.Tensor, torch.Tensor], Any] = field(repr=False)
    select: Callable[[Any], torch.Tensor] = field(default=select_output, repr=False)
    head_only: bool = False
    show_progress: bool = True
    forwards: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def score(self, output: Any, sample: torch.Tensor, probability: bool = False) -> torch.Tensor:
        """``(N,)`` target scores of ``output`` rows, each for its sample's class or region.

        ``probability=True`` gives the class probability (softmax, or sigmoid for one logit)
        instead of the logit, for class targets.
        """
        rows = target_rows(self.target, sample)
        if probability and isinstance(rows, ClassTarget):
            rows = ClassProbability(rows.classes)
        return target_score(rows, output, self.select)

    def input_scores(self, batch: torch.Tensor, sample: torch.Tensor, probability: bool = False) -> torch.Tensor:
        """Scores of perturbed inputs ``(N, C, *S)``; row ``i`` is a copy of sample ``sample[i]``."""
        # scored chunk by chunk: a raw output (a dict) has no torch.cat
        scores = [
            self.score(self.run_inputs(chunk), rows, probability)
            for chunk, rows in zip(batch.split(self.batch_size), sample.split(self.batch_size), strict=True)
        ]
        self.forwards += batch.shape[0]
        return torch.cat(scores)

    def activation_scores(
        self, activations: torch.Tensor, sample: torch.Tensor, probability: bool = False
    ) -> torch.Tensor:
        """Scores of perturbed target-layer activations ``(N, K, *s)``."""
        scores = [
            self.score(self.run_activations(a, s), s, probability)
            for a, s in zip(activations.split(self.batch_size), sample.split(self.batch_size), strict=True)
        ]
        self.forwards += 0 if self.head_only else activations.shape[0]
        return torch.cat(scores)

    def progress(self, total: int, desc: str):
        """A progress bar over ``total`` rows (a no-op one when progress is off)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="pass", disable=not self.show_progress, leave=False)
