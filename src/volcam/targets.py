"""What is explained: a scalar score per sample, computed from the model's output.

A target is a callable ``target(output) -> (B,)`` where ``output`` is what the model returns:
logits ``(B, C)`` for a classifier, ``(B, C, *S)`` for a segmentation network. The engine
differentiates that score with respect to the target layer's activations, so a target must be a
differentiable function of the output.

Conventions, as in docs/methods.md#notation:

* scores are **pre-softmax** logits unless :class:`ClassProbability` is asked for;
* a single-logit (sigmoid) model has two classes: 1 is the logit, 0 (the negative class) is
  ``-logit``; its prediction is 1 where the logit is positive;
* a batch may ask for a different class per sample, and gives exactly what running each sample
  alone gives.

A model may return several tensors (a dict, a tuple of an auxiliary head and the classifier). The
tensor explained is picked with ``output=`` (:func:`select_output`: a key, an index or a callable);
volcam's own targets score that tensor, while any other callable target receives the model's raw
output and picks what it needs itself (:func:`target_score`).

Example::

    >>> logits = torch.tensor([[0.2, 1.5], [2.0, -1.0]])
    >>> ClassTarget([1, 0])(logits)
    tensor([1.5000, 2.0000])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from volcam.errors import InputError, TargetError

__all__ = [
    "ClassProbability",
    "ClassTarget",
    "OutputSpec",
    "RegionTarget",
    "Target",
    "TargetSpec",
    "describe_output",
    "predicted_classes",
    "probabilities",
    "resolve_target",
    "select_output",
    "target_rows",
    "target_score",
]


@runtime_checkable
class Target(Protocol):
    """A differentiable score per sample: ``(B, C, ...) -> (B,)``."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor: ...


Classes = int | str | Sequence[int | str] | torch.Tensor
TargetSpec = Classes | Target | None
"""What ``target=`` accepts: ``None`` (the predicted class), a class index or label, one per
sample, or any :class:`Target`."""


def num_classes(output: torch.Tensor) -> int:
    """Number of classes the output stands for (2 for a single-logit model)."""
    return 2 if output.shape[1] == 1 else int(output.shape[1])


def predicted_classes(output: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample ``(B,)``: argmax, or ``logit > 0`` for a single-logit model."""
    logits = _flat_logits(output)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def probabilities(output: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, num_classes)``: softmax, or ``[1 - p, p]`` for a single logit."""
    logits = _flat_logits(output).float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _flat_logits(output: torch.Tensor) -> torch.Tensor:
    if output.ndim != 2:
        raise TargetError(
            f"a class target needs classifier logits of shape (B, C); the model returned "
            f"{tuple(output.shape)} (for a segmentation network use RegionTarget)"
        )
    return output


def _class_vector(classes: torch.Tensor | Sequence[int] | int, batch: int, n_classes: int) -> torch.Tensor:
    idx = torch.as_tensor(classes, dtype=torch.long).flatten()
    if idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() != batch:
        raise TargetError(f"{idx.numel()} target classes were given for a batch of {batch}")
    bad = (idx < 0) | (idx >= n_classes)
    if bool(bad.any()):
        raise TargetError(f"class {int(idx[bad][0])} is out of range: the model has classes 0..{n_classes - 1}")
    return idx


@dataclass(frozen=True)
class ClassTarget:
    """The pre-softmax logit of one class per sample (``-logit`` for class 0 of a single-logit model).

    Args:
        classes: one index for the whole batch, or one per sample.
    """

    classes: int | Sequence[int] | torch.Tensor

    def class_indices(self, output: torch.Tensor) -> torch.Tensor:
        """The class per sample ``(B,)``, checked against the output."""
        logits = _flat_logits(output)
        return _class_vector(self.classes, logits.shape[0], num_classes(logits)).to(logits.device)

    def grad_outputs(self, output: torch.Tensor) -> torch.Tensor:
        """``d score / d output`` as a ``(B, C)`` tensor: a signed one-hot (the score is linear)."""
        idx = self.class_indices(output)
        weights = torch.zeros_like(output)
        if output.shape[1] == 1:
            weights[:, 0] = idx.to(output.dtype) * 2 - 1
        else:
            weights.scatter_(1, idx[:, None], 1.0)
        return weights

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output * self.grad_outputs(output)).sum(dim=1)


@dataclass(frozen=True)
class ClassProbability:
    """The probability of one class per sample (softmax, or sigmoid for a single logit).

    Gradients of a probability shrink as the model grows confident, so maps of saturated
    predictions are weak; prefer :class:`ClassTarget` unless the probability is what is studied.
    """

    classes: int | Sequence[int] | torch.Tensor

    def class_indices(self, output: torch.Tensor) -> torch.Tensor:
        return ClassTarget(self.classes).class_indices(output)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        idx = self.class_indices(output)
        return probabilities(output).gather(1, idx[:, None])[:, 0]


@dataclass(frozen=True)
class RegionTarget:
    """Sum of one class's logits inside a region, for segmentation outputs ``(B, C, *S)``.

    Explains a UNet: which input evidence makes it call this region this class.

    Args:
        class_index: the output channel.
        mask: ``(*S)``, ``(B, *S)`` or ``(B, 1, *S)``, boolean or weights, on the output grid.
        rows: for a batch of perturbed copies, the sample each row belongs to (set by
            :func:`target_rows`); ``None`` when rows are the samples themselves.
    """

    class_index: int
    mask: torch.Tensor
    rows: torch.Tensor | None = None

    def class_indices(self, output: torch.Tensor) -> torch.Tensor:
        return torch.full((output.shape[0],), self.class_index, dtype=torch.long, device=output.device)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim < 3:
            raise TargetError(
                f"a region target needs a dense output (B, C, *S); the model returned {tuple(output.shape)}"
            )
        if not 0 <= self.class_index < output.shape[1]:
            raise TargetError(f"class {self.class_index} is out of range: the output has {output.shape[1]} channels")
        spatial = output.shape[2:]
        mask = torch.as_tensor(self.mask, device=output.device)
        if mask.shape[-len(spatial) :] != spatial:
            raise TargetError(
                f"the region mask has shape {tuple(mask.shape)}; the output's spatial shape is {tuple(spatial)}"
            )
        mask = mask.reshape(-1, *spatial).to(output.dtype)
        if self.rows is not None and mask.shape[0] > 1:
            mask = mask[self.rows.to(mask.device)]
        return (output[:, self.class_index] * mask).flatten(1).sum(dim=1)


def resolve_target(
    target: TargetSpec,
    output: torch.Tensor,
    labels: Sequence[str] | None = None,
) -> tuple[Target, torch.Tensor]:
    """Turn what the user asked for into a :class:`Target` and the class per sample ``(B,)``.

    ``None`` means the predicted class; strings are looked up in ``labels``.
    """
    if target is None:
        target = ClassTarget(predicted_classes(output))
    elif isinstance(target, str):
        target = ClassTarget([_label_index(target, labels)])
    elif isinstance(target, Sequence) and not isinstance(target, torch.Tensor):
        indices = [t for t in target if not isinstance(t, str)]
        if len(indices) < len(target):  # labels among them: look each one up
            indices = [_label_index(name, labels) for name in target]
        target = ClassTarget(indices)
    elif isinstance(target, (int, torch.Tensor)):
        target = ClassTarget(target)
    elif not callable(target):
        raise TargetError(f"target must be a class index, a label or a Target, not {type(target).__name__}")
    if hasattr(target, "class_indices"):
        classes = target.class_indices(output)
    else:
        classes = torch.full((output.shape[0],), -1, dtype=torch.long, device=output.device)
    return target, classes


def _label_index(name: str | int, labels: Sequence[str] | None) -> int:
    if isinstance(name, int):
        return name
    if not labels:
        raise TargetError(f"target {name!r} is a label, but the model has no class labels: give a class index")
    if name not in labels:
        raise TargetError(f"unknown class label {name!r}; the model's labels are {', '.join(map(repr, labels))}")
    return list(labels).index(name)


def target_rows(target: Target, sample: torch.Tensor) -> Target:
    """The target for a batch whose row ``i`` is a perturbed copy of sample ``sample[i]``.

    Perturbation methods score many copies of each sample at once; each copy must be scored for
    its own sample's class (or region).
    """
    if isinstance(target, (ClassTarget, ClassProbability)):
        classes = torch.as_tensor(target.classes, dtype=torch.long).flatten()
        if classes.numel() > 1:
            classes = classes.to(sample.device)[sample]
        return type(target)(classes)
    if isinstance(target, RegionTarget):
        return RegionTarget(target.class_index, target.mask, rows=sample)
    return target  # a custom target sees the copies as its batch


# -- which output is explained --------------------------------------------------------------------

OutputSpec = str | int | Callable[[Any], torch.Tensor] | None
"""What ``output=`` accepts: a key of a dict output (or a field of a named tuple), an index of a
tuple or list output, a callable ``raw output -> tensor``, or ``None`` (the model's only tensor)."""

_HINT = 'choose the tensor to explain with output= (a key, an index or a callable; a card\'s "output")'


def select_output(output: Any, spec: OutputSpec = None) -> torch.Tensor:
    """The tensor of a model's ``output`` that is explained, as ``spec`` picks it.

    With ``spec=None`` a tensor is itself, and a dict, tuple or list whose top level holds exactly
    one tensor gives that one (MONAI's ``ViT`` returns ``(logits, hidden_states)``); with more than
    one there is no safe guess (an auxiliary head may come first), so that is one
    :class:`InputError` listing what the model returned, keys or indices with shapes.

    Example::

        >>> out = {"aux": torch.zeros(1, 3), "logits": torch.zeros(1, 2)}
        >>> select_output(out, "logits").shape
        torch.Size([1, 2])
    """
    if callable(spec):
        picked = spec(output)
        if not torch.is_tensor(picked):
            raise InputError(
                f"output= returned a {type(picked).__name__}, not a tensor, from {describe_output(output)}"
            )
        return picked
    if spec is None:
        if torch.is_tensor(output):
            return output
        items = _top_level(output)
        tensors = [v for _, v in items if torch.is_tensor(v)]
        if len(tensors) == 1:
            return tensors[0]
        if items:
            raise InputError(f"the model returned {describe_output(output)}; {_HINT}")
        raise InputError(f"the model returned {describe_output(output)}, not a tensor")
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise InputError(f"output={spec!r}: give a key, an index or a callable")
    if torch.is_tensor(output):
        raise InputError(f"output={spec!r}: the model returned one tensor {tuple(output.shape)}; leave output= out")
    if isinstance(spec, int) and isinstance(output, (tuple, list)) and -len(output) <= spec < 0:
        spec += len(output)  # the last head as -1
    picked = dict(_top_level(output)).get(spec, _MISSING)
    if picked is _MISSING:
        raise InputError(f"output={spec!r}: the model returned {describe_output(output)}")
    if not torch.is_tensor(picked):
        raise InputError(f"output={spec!r} is a {type(picked).__name__}, not a tensor, in {describe_output(output)}")
    return picked


_MISSING = object()


def _top_level(output: Any) -> list[tuple[Any, Any]]:
    """``(key or index, value)`` of a dict, a named tuple (by field and by index), a tuple or a list."""
    if isinstance(output, Mapping):
        return list(output.items())
    if isinstance(output, (tuple, list)):
        items: list[tuple[Any, Any]] = list(enumerate(output))
        fields = getattr(output, "_fields", None)  # a named tuple answers by name too
        if fields:
            items += list(zip(fields, output, strict=False))
        return items
    return []


def describe_output(output: Any, limit: int = 8) -> str:
    """What a model returned, for one line: ``"a dict of 'aux' (1, 3), 'logits' (1, 2)"``."""
    if torch.is_tensor(output):
        return f"a tensor {tuple(output.shape)}"
    if isinstance(output, Mapping):
        items = [(repr(k), v) for k, v in output.items()]
    elif isinstance(output, (tuple, list)):
        fields = getattr(output, "_fields", None)
        items = [(f"[{i}]" + (f" {fields[i]!r}" if fields else ""), v) for i, v in enumerate(output)]
    else:
        return f"a {type(output).__name__}"

    def what(value: Any) -> str:
        if torch.is_tensor(value):
            return str(tuple(value.shape))
        if isinstance(value, (tuple, list)):
            return f"a {type(value).__name__} of {len(value)}"
        return f"a {type(value).__name__}"

    shown = ", ".join(f"{k} {what(v)}" for k, v in items[:limit])
    more = f", … ({len(items)} in all)" if len(items) > limit else ""
    return f"a {type(output).__name__} of {shown}{more}" if items else f"an empty {type(output).__name__}"


_OWN_TARGETS = (ClassTarget, ClassProbability, RegionTarget)


def target_score(target: Target, output: Any, select: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """``(B,)`` the score of ``target`` on a model's raw ``output``: volcam's own targets score the
    explained tensor ``select(output)``; any other callable receives ``output`` as the model
    returned it (a dict, a tuple), so it can read any head."""
    if isinstance(target, _OWN_TARGETS):
        return target(select(output))
    return target(output)
