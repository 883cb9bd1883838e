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

from volcam.defaults import LCAM_LOSS
from volcam.errors import CardError, InputError, MethodError
from volcam.methods.learned import VARIANTS, LCamAttention, lcam_loss, select_class
from volcam.model.weights import default_path, load_lcam, record_in_card, save_lcam

if TYPE_CHECKING:
    from volcam.model.model import Model

__all__ = ["TARGETS", "LCamTraining", "load_lcam", "save_lcam", "train_lcam"]  # file functions: model.weights

#: What L-CAM learns to explain: the network's decision, or the label the data gives.
TARGETS = ("prediction", "label")


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
    from volcam.io.formats import is_image_name
    from volcam.io.tables import read_cases

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
    variant: str = "fm",
    *,
    epochs: int = 10,
    layer: str | None = None,
    labels: Sequence[int | str] | None = None,
    target: str = "prediction",
    batch_size: int = 8,
    lr: float = 0.01,
    validation: float = 0.2,
    patience: int = 3,
    seed: int = 0,
    ce_weight: float = LCAM_LOSS.ce_weight,
    area_weight: float = LCAM_LOSS.area_weight,
    area_power: float = LCAM_LOSS.area_power,
    tv_weight: float = LCAM_LOSS.tv_weight,
    tv_border: float = LCAM_LOSS.tv_border,
    out: str | os.PathLike | None = None,
    save: bool = True,
    update_card: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> LCamTraining:
    """Train an L-CAM-Fm or L-CAM-Img attention module for a model card's frozen network.

    Args:
        model_card: a card path (or MONAI bundle folder) or a loaded :class:`volcam.Model`.
        images: a folder of scans, a manifest (``.csv``/``.tsv`` with ``path`` and optional ``label``
            columns, paths relative to it), a list of scans as :func:`volcam.load` returns them (the
            card's preprocessing is applied), or a tensor ``(N, C, *S)`` of network inputs.
        variant: ``"fm"`` (map × feature maps through the head) or ``"img"`` (upsampled map × input
            through the whole network).
        epochs: at most this many passes over the training images.
        layer: the target layer; the card's by default.
        labels: one class label or index per image (a manifest's ``label`` column otherwise).
        target: ``"prediction"`` keeps the frozen model's own decision on each unmasked image;
            ``"label"`` the given labels.
        batch_size, lr: Adam's batches and learning rate.
        validation: fraction of the images held out for the validation loss (0: none).
        patience: stop after this many epochs without a lower validation loss.
        seed: the split, the shuffling and the module's initial weights.
        ce_weight, area_weight, area_power, tv_weight, tv_border: the loss (the paper's defaults;
            see :func:`volcam.methods.learned.lcam_loss`).
        out: where to save the module; next to the card by default (``<name>.lcam-<variant>.pt``).
        save: write the module to ``out``.
        update_card: record the module in the card, so ``explain(method="lcam-fm")`` finds it.
        progress: a tqdm bar over epochs with the losses.
        device: where to train (the model's device by default).

    Returns:
        :class:`LCamTraining`. The network's parameters, modes and ``requires_grad`` flags are as before.
    """
    from tqdm.auto import tqdm

    from volcam.engine.capture import forward_replacing
    from volcam.engine.core import CamEngine
    from volcam.engine.drive import frozen, read_output
    from volcam.engine.head import checked_head
    from volcam.model.model import Model, load_model
    from volcam.targets import num_classes, predicted_classes

    if variant not in VARIANTS:
        raise MethodError(f"L-CAM variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if target not in TARGETS:
        raise MethodError(f"target {target!r}; use 'prediction' (the model's decision) or 'label'")
    if epochs < 1 or batch_size < 1 or not 0 <= validation < 1 or patience < 1:
        raise MethodError("epochs, batch_size and patience must be at least 1 and validation in [0, 1)")
    start = time.perf_counter()
    model = model_card if isinstance(model_card, Model) else load_model(model_card, device=device)
    if save:  # where the module goes is checked before the slow part: never over an input
        from volcam.io.atomic import check_not_input

        sources = [images] if isinstance(images, str | os.PathLike) else []
        check_not_input(
            Path(out) if out is not None else default_path(model.card.path, variant),
            [model.card.path, model.card.weights, *sources],
            what="L-CAM weights file",
        )
    network = model.network
    dev = torch.device(device) if device is not None else model.device
    x, given = _gather(model, images, labels)
    if target == "label" and given is None:
        raise InputError("target='label' needs labels (labels=, or a manifest with a 'label' column)")
    chosen = layer if layer is not None else model.card.layer
    if not isinstance(chosen, str):
        raise MethodError("L-CAM trains at one layer")
    model.check_layer(chosen)

    # The activations and the decisions of the frozen network, once per image.
    engine = CamEngine(network, chosen, device=dev, progress=False, output=model.output_of)  # the card's output
    chosen = engine.layers_for(x[:1].to(dev))[0]  # "auto" resolved
    feats, outputs = [], []
    for chunk in x.split(batch_size):
        fwd = engine.forward(chunk, graph=False)
        feats.append(fwd.activations[chosen].detach())
        outputs.append(fwd.output.detach())
    engine.close()
    activations, output = torch.cat(feats), torch.cat(outputs)
    n_classes = num_classes(output)
    if model.labels and len(model.labels) != n_classes:
        raise CardError(f"{model.card.path}: the card has {len(model.labels)} labels, the network {n_classes} classes")
    # given is None only for target="prediction" (checked above)
    classes = (
        _label_indices(given, model.labels) if given is not None and target == "label" else predicted_classes(output)
    )
    classes = classes.to(dev)
    x = x.to(dev, dtype=activations.dtype)

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    n_val = round(validation * len(x)) if len(x) > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    torch.manual_seed(seed)  # the module's initial weights
    module = LCamAttention(activations.shape[1], n_classes).to(dev)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    weights = {"ce_weight": ce_weight, "area_weight": area_weight, "area_power": area_power}
    weights.update(tv_weight=tv_weight, tv_border=tv_border)

    def masked_output(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = activations[idx]
        mask = select_class(module(a), classes[idx])
        if variant == "img":
            from volcam.maps.geometry import upsample

            return read_output(network, x[idx] * upsample(mask, x.shape[2:]), model.output_of), mask
        if head is not None:
            return model.output_of(head(a * mask)), mask
        return model.output_of(forward_replacing(network, x[idx], chosen, a * mask)), mask

    def evaluate(idx: torch.Tensor) -> float:
        total = 0.0
        with torch.no_grad():
            for chunk in idx.split(batch_size):
                logits, mask = masked_output(chunk)
                total += float(lcam_loss(logits, classes[chunk], mask, **weights)["loss"]) * len(chunk)
        return total / max(len(idx), 1)

    history: list[dict[str, float]] = []
    best, best_state, best_epoch, waited = math.inf, copy.deepcopy(module.state_dict()), 0, 0
    stopped_early = False
    bar = tqdm(range(epochs), desc=f"L-CAM-{variant.capitalize()} at {chosen}", unit="epoch", disable=not progress)
    # eval mode (batch-norm statistics stay as they are) and no parameter gradients, restored on exit
    with frozen(network), torch.enable_grad():
        head = checked_head(network, chosen, activations[:1], output[:1], model.output_of) if variant == "fm" else None
        for epoch in bar:
            module.train()
            sums = dict.fromkeys(("loss", "ce", "area", "tv"), 0.0)
            shuffled = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for chunk in shuffled.split(batch_size):
                logits, mask = masked_output(chunk)
                terms = lcam_loss(logits, classes[chunk], mask, **weights)
                optimizer.zero_grad()
                terms["loss"].backward()
                optimizer.step()
                for k, v in terms.items():
                    sums[k] += float(v.detach()) * len(chunk)
            module.eval()
            row = {f"train_{k}" if k == "loss" else k: v / max(len(train_idx), 1) for k, v in sums.items()}
            row["val_loss"] = evaluate(val_idx) if n_val else math.nan
            row["epoch"] = epoch + 1
            history.append(row)
            bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}")
            score = row["val_loss"] if n_val else row["train_loss"]
            if score < best - 1e-6:
                best, best_state, best_epoch, waited = score, copy.deepcopy(module.state_dict()), epoch + 1, 0
            else:
                waited += 1
                if waited >= patience:
                    stopped_early = epoch + 1 < epochs
                    break
    bar.close()
    module.load_state_dict(best_state)
    module = module.eval().cpu()
    path = None
    if save:
        path = Path(out) if out is not None else default_path(model.card.path, variant)
        info = {
            "images": len(x),
            "validation": n_val,
            "target": target,
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "seed": seed,
            "best_loss": round(best, 6),
            **weights,
        }
        save_lcam(path, module, variant=variant, layer=chosen, labels=model.labels, info=info)
        if update_card:
            record_in_card(model.card.path, variant, path, chosen, model.labels)
            model.refresh_card()  # this Model explains with the new module right away
    return LCamTraining(module, variant, chosen, path, history, best_epoch, stopped_early, time.perf_counter() - start)
