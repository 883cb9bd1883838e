"""Training L-CAM attention modules on a frozen classifier (their weights files: :mod:`volcam.model.weights`).

:func:`train_lcam` fits a :class:`~volcam.methods.learned.LCamAttention` at a target layer of a model
card's network: the network runs in eval mode with every parameter's ``requires_grad`` off (restored
afterwards), so only the attention module learns. The target layer's activations are computed once
per image (the classifier never changes, so neither do they); each step then runs

* **L-CAM-Fm**: the class map times ``A`` through the layers after the target (the *head*, cut out
  of the network as for Ablation-CAM; a full forward with the layer's output replaced when the
  network cannot be cut there);
* **L-CAM-Img**: the class map, upsampled to the input grid, times the input through the whole
  network;

and minimises the paper's loss (:func:`~volcam.methods.learned.lcam_loss`) for the class the frozen
model predicts on the unmasked image (or the given label). The module is saved as plain tensors and
strings (loads with ``torch.load(weights_only=True)``) and recorded in the card::

    "lcam": {"fm": {"weights": "ct_covid.lcam-fm.pt", "layer": "layer2", "labels": ["normal", "covid"]}}
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from volcam.errors import CardError, InputError, MethodError
from volcam.io.atomic import check_not_input
from volcam.io.formats import is_image_name
from volcam.io.tables import read_cases
from volcam.methods.learned import LCamAttention, lcam_loss, select_class
from volcam.model.weights import default_path, load_lcam, record_in_card, save_lcam
from volcam.workflows.specs import LCAM_TARGETS, LCamSpec

if TYPE_CHECKING:
    from volcam.model.model import Model

__all__ = ["LCAM_TARGETS", "LCamTraining", "load_lcam", "save_lcam", "train_lcam"]  # file functions: model.weights


@dataclass(frozen=True)
class LCamTraining:
    """What :func:`train_lcam` did.

    Attributes:
        module: the trained attention module (the best epoch's weights).
        variant: ``"fm"`` or ``"img"``.
        layer: the target layer it was trained at.
        path: where it was saved (``None`` when not saved).
        history: one dict per epoch: ``train_loss``, ``val_loss`` (NaN without a validation set)
            and the training loss's ``ce``, ``area``, ``tv`` terms.
        best_epoch: the epoch (1-based) whose weights were kept: lowest validation loss (training
            loss without a validation set).
        stopped_early: whether training stopped before ``epochs`` (no improvement for ``patience``).
        seconds: wall time.
    """

    module: LCamAttention
    variant: str
    layer: str
    path: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


# -- the training data ------------------------------------------------------------------------------


def _gather(
    model: Model, images: Any, labels: Sequence[int | str | None] | None
) -> tuple[torch.Tensor, list[int | str | None] | None]:
    """Network inputs ``(N, C, *S)`` and labels from a folder, a manifest, scans or a ready tensor."""
    from volcam.io import load

    if isinstance(images, (str, os.PathLike)):
        where = Path(images)
        if where.is_dir() or (where.is_file() and not is_image_name(where)):  # the cohort's folder/manifest reader
            cases = read_cases(where)  # scans only: masks, notes and hidden files are not images
            paths = [case.image for case in cases]
            found = [case.label for case in cases]
            if labels is None and any(label is not None for label in found):
                labels = found
        elif where.exists():
            paths = [where]
        else:
            raise InputError(f"{where}: no such folder, manifest or image")
        images = [load(p) for p in paths]
    if torch.is_tensor(images) and images.ndim >= 3 and not hasattr(images, "meta"):
        x = images.float()  # already network inputs (B, C, *S)
    else:
        if torch.is_tensor(images):
            images = [images]
        prepared = [model.prepare(scan).as_tensor() for scan in images]
        if model.card.kind == "frames":  # a 2D frame model: every frame is a sample
            counts = [p.shape[1] for p in prepared]
            prepared = [f for p in prepared for f in p.permute(1, 0, 2, 3)]
            if labels is not None:
                labels = [lab for lab, n in zip(labels, counts, strict=True) for _ in range(n)]
        try:
            x = torch.stack(prepared)
        except RuntimeError:
            raise InputError(
                f"the images have different shapes after {model.name}'s preprocessing "
                f"({sorted({tuple(p.shape) for p in prepared})}); give the card a fixed output size"
            ) from None
    if labels is not None and len(labels) != len(x):
        raise InputError(f"{len(labels)} labels were given for {len(x)} images")
    return x, list(labels) if labels is not None else None


def _label_indices(labels: Sequence[int | str | None], names: Sequence[str]) -> torch.Tensor:
    out = []
    for lab in labels:
        if lab is None:  # a manifest row with an empty label cell
            raise InputError("target='label' needs a label for every image; one has none")
        if isinstance(lab, str) and not lab.lstrip("-").isdigit():
            if lab not in names:
                raise InputError(f"unknown label {lab!r}; the model's labels are {', '.join(names)}")
            out.append(list(names).index(lab))
        else:
            out.append(int(lab))
    return torch.tensor(out, dtype=torch.long)


# -- training ---------------------------------------------------------------------------------------


def train_lcam(
    model_card: str | os.PathLike | Model,
    images: Any,
    variant: str | None = None,
    *,
    spec: LCamSpec | None = None,
    labels: Sequence[int | str] | None = None,
    out: str | os.PathLike | None = None,
    save: bool = True,
    update_card: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
    **choices: Any,
) -> LCamTraining:
    """Train an L-CAM-Fm or L-CAM-Img attention module for a model card's frozen network.

    Args:
        model_card: a card path (or MONAI bundle folder) or a loaded :class:`volcam.Model`.
        images: a folder of scans, a manifest (``.csv``/``.tsv`` with ``path`` and optional ``label``
            columns, paths relative to it), a list of scans as :func:`volcam.load` returns them (the
            card's preprocessing is applied), or a tensor ``(N, C, *S)`` of network inputs.
        variant: ``"fm"`` (map × feature maps through the head) or ``"img"`` (upsampled map × input
            through the whole network); short for ``variant=`` in ``choices``.
        spec: how to train (:class:`~volcam.workflows.specs.LCamSpec`: variant, epochs, layer, target
            — ``"prediction"``, the frozen model's own decision on each unmasked image, or ``"label"``
            —, batch size, learning rate, validation fraction, patience, seed, loss weights);
            ``choices`` as keywords (``epochs=20, lr=0.05``) change it.
        labels: one class label or index per image (a manifest's ``label`` column otherwise).
        out: where to save the module; next to the card by default (``<name>.lcam-<variant>.pt``).
        save: write the module to ``out``.
        update_card: record the module in the card, so ``explain(method="lcam-fm")`` finds it.
        progress: a tqdm bar over epochs with the losses.
        device: where to train (the model's device by default).

    Returns:
        :class:`LCamTraining`. The network's parameters, modes and ``requires_grad`` flags are as before.
    """
    from volcam.model.model import Model, load_model

    spec = LCamSpec.of(spec, **({"variant": variant} if variant is not None else {}), **choices)
    start = time.perf_counter()
    model = model_card if isinstance(model_card, Model) else load_model(model_card, device=device)
    destination = Path(out) if out is not None else default_path(model.card.path, spec.variant)
    if save:  # where the module goes is checked before the slow part: never over an input
        sources = [images] if isinstance(images, str | os.PathLike) else []
        check_not_input(destination, [model.card.path, model.card.weights, *sources], what="L-CAM weights file")
    dev = torch.device(device) if device is not None else model.device
    x, given = _gather(model, images, labels)
    if spec.target == "label" and given is None:
        raise InputError("target='label' needs labels (labels=, or a manifest with a 'label' column)")
    data = _frozen_data(model, x, given, spec, dev)
    trainer = _Trainer(model, data, spec, dev)
    fit = trainer.fit(progress)
    if not save:
        return LCamTraining(trainer.module, spec.variant, data.layer, None, *fit, time.perf_counter() - start)
    info = {
        "images": len(x), "validation": len(trainer.val_idx), "target": spec.target, "epochs_run": len(fit[0]),
        "best_epoch": fit[1], "seed": spec.seed, "best_loss": round(trainer.best, 6), **vars(spec.loss),
    }  # fmt: skip
    save_lcam(destination, trainer.module, variant=spec.variant, layer=data.layer, labels=model.labels, info=info)
    if update_card:
        record_in_card(model.card.path, spec.variant, destination, data.layer, model.labels)
        model.refresh_card()  # this Model explains with the new module right away
    return LCamTraining(trainer.module, spec.variant, data.layer, destination, *fit, time.perf_counter() - start)


@dataclass(frozen=True)
class _FrozenData:
    """What the frozen network gives once per image: the inputs, the target layer's activations, the
    network's outputs and the class each image teaches."""

    x: torch.Tensor  # (N, C, *S) network inputs, on the training device
    layer: str  # the target layer ("auto" resolved)
    activations: torch.Tensor  # (N, K, *s) at the layer
    output: torch.Tensor  # (N, n_classes) the card's output
    classes: torch.Tensor  # (N,) the class each image teaches


def _frozen_data(
    model: Model, x: torch.Tensor, given: list[int | str | None] | None, spec: LCamSpec, dev: torch.device
) -> _FrozenData:
    """The activations and the decisions of the frozen network, once per image (they never change)."""
    from volcam.engine.core import CamEngine
    from volcam.targets import num_classes, predicted_classes

    chosen = spec.layer if spec.layer is not None else model.card.layer
    if not isinstance(chosen, str):
        raise MethodError("L-CAM trains at one layer")
    model.check_layer(chosen)
    feats, outputs = [], []
    with CamEngine(model.network, chosen, device=dev, progress=False, output=model.output_of) as engine:
        chosen = engine.layers_for(x[:1].to(dev))[0]  # "auto" resolved
        for chunk in x.split(spec.batch_size):
            fwd = engine.forward(chunk, graph=False)
            feats.append(fwd.activations[chosen].detach())
            outputs.append(fwd.output.detach())
    activations, output = torch.cat(feats), torch.cat(outputs)
    n_classes = num_classes(output)
    if model.labels and len(model.labels) != n_classes:
        raise CardError(f"{model.card.path}: the card has {len(model.labels)} labels, the network {n_classes} classes")
    taught = _label_indices(given, model.labels) if given is not None and spec.target == "label" else None
    classes = (taught if taught is not None else predicted_classes(output)).to(dev)
    return _FrozenData(x.to(dev, dtype=activations.dtype), chosen, activations, output, classes)


class _Trainer:
    """The attention module, its optimiser and the split, and what one step computes: the class map
    applied (to the feature maps through the head, or to the input through the network) and the loss."""

    def __init__(self, model: Model, data: _FrozenData, spec: LCamSpec, dev: torch.device) -> None:
        self.model, self.data, self.spec = model, data, spec
        self.generator = torch.Generator().manual_seed(spec.seed)
        order = torch.randperm(len(data.x), generator=self.generator)
        n_val = round(spec.validation * len(data.x)) if len(data.x) > 1 else 0
        self.val_idx, self.train_idx = order[:n_val], order[n_val:]
        torch.manual_seed(spec.seed)  # the module's initial weights
        self.module = LCamAttention(data.activations.shape[1], data.output.shape[1]).to(dev)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=spec.lr)
        self.head: torch.nn.Module | None = None
        self.best = math.inf

    def masked_output(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The card's output with the class maps applied to samples ``idx``, and the maps ``(n, 1, *s)``."""
        from volcam.engine.capture import forward_replacing
        from volcam.engine.drive import read_output

        data, network, output_of = self.data, self.model.network, self.model.output_of
        a = data.activations[idx]
        mask = select_class(self.module(a), data.classes[idx])
        if self.spec.variant == "img":
            from volcam.maps.geometry import upsample

            return read_output(network, data.x[idx] * upsample(mask, data.x.shape[2:]), output_of), mask
        if self.head is not None:
            return output_of(self.head(a * mask)), mask
        return output_of(forward_replacing(network, data.x[idx], data.layer, a * mask)), mask

    def loss_terms(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, mask = self.masked_output(idx)
        return lcam_loss(logits, self.data.classes[idx], mask, **vars(self.spec.loss))

    def validation_loss(self) -> float:
        if not len(self.val_idx):
            return math.nan
        total = 0.0
        with torch.no_grad():
            for chunk in self.val_idx.split(self.spec.batch_size):
                total += float(self.loss_terms(chunk)["loss"]) * len(chunk)
        return total / len(self.val_idx)

    def epoch(self) -> dict[str, float]:
        """One pass over the training images; the mean loss terms and the validation loss."""
        self.module.train()
        sums = dict.fromkeys(("loss", "ce", "area", "tv"), 0.0)
        shuffled = self.train_idx[torch.randperm(len(self.train_idx), generator=self.generator)]
        for chunk in shuffled.split(self.spec.batch_size):
            terms = self.loss_terms(chunk)
            self.optimizer.zero_grad()
            terms["loss"].backward()
            self.optimizer.step()
            for k, v in terms.items():
                sums[k] += float(v.detach()) * len(chunk)
        self.module.eval()
        row = {f"train_{k}" if k == "loss" else k: v / max(len(self.train_idx), 1) for k, v in sums.items()}
        row["val_loss"] = self.validation_loss()
        return row

    def fit(self, progress: bool) -> tuple[list[dict[str, float]], int, bool]:
        """Train with early stopping; the module keeps the best epoch's weights. The history, the best
        epoch (1-based) and whether training stopped before ``epochs``."""
        from tqdm.auto import tqdm

        from volcam.engine.drive import frozen
        from volcam.engine.head import checked_head

        spec, data, network = self.spec, self.data, self.model.network
        history: list[dict[str, float]] = []
        best_state, best_epoch, waited, stopped_early = copy.deepcopy(self.module.state_dict()), 0, 0, False
        title = f"L-CAM-{spec.variant.capitalize()} at {data.layer}"
        bar = tqdm(range(spec.epochs), desc=title, unit="epoch", disable=not progress)
        # eval mode (batch-norm statistics stay as they are) and no parameter gradients, restored on exit
        with frozen(network), torch.enable_grad():
            if spec.variant == "fm":
                self.head = checked_head(
                    network, data.layer, data.activations[:1], data.output[:1], self.model.output_of
                )
            for epoch in bar:
                row = {**self.epoch(), "epoch": epoch + 1}
                history.append(row)
                bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}")
                score = row["val_loss"] if len(self.val_idx) else row["train_loss"]
                if score < self.best - 1e-6:
                    self.best, best_state, best_epoch, waited = (
                        score,
                        copy.deepcopy(self.module.state_dict()),
                        epoch + 1,
                        0,
                    )
                    continue
                waited += 1
                if waited >= spec.patience:
                    stopped_early = epoch + 1 < spec.epochs
                    break
        bar.close()
        self.module.load_state_dict(best_state)
        self.module = self.module.eval().cpu()
        return history, best_epoch, stopped_early
