"""ModelRunner: what a perturbation method gets to run the model, batched and gradient-free.

Score-CAM, Ablation-CAM and occlusion are functions of tensors plus this runner. The engine builds
it around the model (no hooks here): it scores batches of perturbed inputs, or of perturbed
target-layer activations through the head alone when the model can be cut there, each row for
the target of the sample it was made from, and it tells how many rows to send at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from volcam.targets import ClassProbability, ClassTarget, Target, target_rows

__all__ = ["ModelRunner"]


@dataclass
class ModelRunner:
    """Batched ``no_grad`` scoring of perturbed copies of the input or of the activations.

    Attributes:
        target: the explained target, resolved on the original batch.
        inputs: the model input ``(B, C, *S)`` (plain tensor on the model's device).
        base_scores: ``(B,)`` the target score of the unperturbed input.
        batch_size: rows per model call, chosen from free memory unless the caller fixed it.
        run_inputs: ``(N, C, *S) -> output`` the whole model.
        run_activations: ``(activations (N, K, *s), sample (N,)) -> output``: the head alone when
            ``head_only``, else the whole model with the layer's output replaced.
        head_only: whether activations go through the head alone (cheap) or a full forward.
        show_progress: draw a tqdm bar for long loops.
    """

    target: Target
    inputs: torch.Tensor
    base_scores: torch.Tensor
    batch_size: int
    run_inputs: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    run_activations: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    head_only: bool = False
    show_progress: bool = True
    forwards: int = 0

    def score(self, output: torch.Tensor, sample: torch.Tensor, probability: bool = False) -> torch.Tensor:
        """``(N,)`` target scores of ``output`` rows, each for its sample's class or region.

        ``probability=True`` gives the class probability (softmax, or sigmoid for one logit)
        instead of the logit, for class targets.
        """
        rows = target_rows(self.target, sample)
        if probability and isinstance(rows, ClassTarget):
            rows = ClassProbability(rows.classes)
        return rows(output)

    def input_scores(self, batch: torch.Tensor, sample: torch.Tensor, probability: bool = False) -> torch.Tensor:
        """Scores of perturbed inputs ``(N, C, *S)``; row ``i`` is a copy of sample ``sample[i]``."""
        outputs = [self.run_inputs(chunk) for chunk in batch.split(self.batch_size)]
        self.forwards += batch.shape[0]
        return self.score(torch.cat(outputs), sample, probability)

    def activation_scores(
        self, activations: torch.Tensor, sample: torch.Tensor, probability: bool = False
    ) -> torch.Tensor:
        """Scores of perturbed target-layer activations ``(N, K, *s)``."""
        outputs = [
            self.run_activations(a, s)
            for a, s in zip(activations.split(self.batch_size), sample.split(self.batch_size), strict=True)
        ]
        self.forwards += 0 if self.head_only else activations.shape[0]
        return self.score(torch.cat(outputs), sample, probability)

    def progress(self, total: int, desc: str):
        """A progress bar over ``total`` rows (a no-op one when progress is off)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="pass", disable=not self.show_progress, leave=False)
