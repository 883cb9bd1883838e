"""What perturbation methods run: the model on changed inputs, or its head on changed activations.

A :class:`volcam.methods.runner.ModelRunner` for one input and target, built on a captured forward:
changed activations go through the head cut after the layer (:mod:`volcam.engine.head`) when the model
can be cut there, else through a whole forward with the layer's output replaced; rows go through in
batches sized to the free memory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from volcam.engine.capture import ForwardPass, forward_replacing
from volcam.engine.layers import LayerRecord
from volcam.engine.tokens import from_grid
from volcam.methods.runner import ModelRunner
from volcam.targets import Target, target_score

__all__ = ["auto_batch_size", "free_memory", "model_runner"]


def model_runner(
    model: nn.Module,
    x: torch.Tensor,
    fwd: ForwardPass,
    target: Target,
    *,
    head: Callable[[], nn.Module | None],
    freeze: Callable[[], contextlib.AbstractContextManager[None]],
    select: Callable[[Any], torch.Tensor],
    batch_size: int,
    progress: bool = True,
) -> ModelRunner:
    """A runner for ``x`` ``(B, C, *S)`` (prepared) and ``target``, at ``fwd``'s first target layer.

    Args:
        fwd: the forward of ``x``; its scores for ``target`` are the runner's base scores.
        head: the layers after the target layer as a module, or ``None`` (called on first use only:
            Score-CAM never needs it).
        freeze: the model frozen for one pass, restored after it.
        select: the tensor explained out of the model's raw output.
    """
    layer = next(iter(fwd.activations))
    with torch.no_grad():
        base = target_score(target, fwd.raw, select).detach()

    def run_inputs(batch: torch.Tensor) -> Any:
        with freeze(), torch.no_grad():
            return model(batch)

    def run_activations(acts: torch.Tensor, sample: torch.Tensor) -> Any:
        cut = head()
        runner.head_only = cut is not None
        # in the layer's own layout (tokens rebuilt from the cached forward's), and a copy: in-place
        # ops after the layer (ReLU) must not write into the caller's rows
        acts = from_grid(acts, fwd.layer_outputs.get(layer, acts)[sample], fwd.layouts[layer])
        with freeze(), torch.no_grad():
            if cut is not None:
                return cut(acts)
            return forward_replacing(model, x[sample], layer, acts, fwd.calls[layer])

    runner = ModelRunner(
        target=target,
        inputs=x,
        base_scores=base,
        batch_size=batch_size,
        run_inputs=run_inputs,
        run_activations=run_activations,
        select=select,
        show_progress=progress,
    )
    return runner


def auto_batch_size(records: Sequence[LayerRecord], x: torch.Tensor, budget: float = 0.25, cap: int = 64) -> int:
    """Rows per model call so a batch's activations fit in ``budget`` of the free memory.

    A forward's peak is a few times its largest layer output; the shapes come from the probe
    (``records``, one sample's), the free memory from CUDA or the operating system.
    """
    largest = max((math.prod(r.shape) for r in records), default=x[:1].numel())
    per_row = 4 * largest * x.element_size() + x[:1].numel() * x.element_size()
    return int(max(1, min(cap, budget * free_memory(x.device) // per_row)))


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (CUDA's free memory, else the OS's available memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3  # no way to ask: assume a modest machine
