"""A model card's preprocessing as invertible MONAI transforms: scan → network input → map back.

A card lists its steps as data, e.g. ``{"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0]}}``;
each name is a MONAI array transform (``monai.transforms.<name>``). The scan goes through them as a
``MetaTensor``, which records every geometric step (``applied_operations``), so a map computed on
the network's grid is carried back through the inverse steps to the scan's own voxel grid and
affine: it overlays the original voxel for voxel. Intensity steps have no inverse and need none.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from volcam.errors import CardError, InputError

__all__ = ["CardError", "Preprocessing"]

# Transforms that take or run code, or write files: a card is data and may come from anyone.
_REFUSED = {"Lambda", "RandLambda", "SaveImage", "LoadImage", "ToDevice", "CuCIM", "RandCuCIM", "TorchVision"}


def _build(step: Mapping[str, Any], where: str) -> Any:
    import monai.transforms as mt
    from monai.transforms import MapTransform, Transform

    if not isinstance(step, Mapping) or "name" not in step:
        raise CardError(f"{where}: each preprocessing step needs a 'name' (a MONAI transform) and optional 'args'")
    name = str(step["name"])
    cls = getattr(mt, name, None)
    if name in _REFUSED or not isinstance(cls, type) or not issubclass(cls, Transform) or issubclass(cls, MapTransform):
        raise CardError(f"{where}: preprocessing step {name!r} is not a MONAI array transform volcam can use")
    try:
        return cls(**dict(step.get("args") or {}))
    except (TypeError, ValueError) as error:
        raise CardError(f"{where}: preprocessing step {name!r}: {error}") from None


class Preprocessing:
    """The card's steps as one MONAI ``Compose``, with the inverse for maps.

    Args:
        steps: ``[{"name": ..., "args": {...}}, ...]`` in the order they run.
        channels: channels the network takes; a scan with 3 (RGB ultrasound) is averaged to 1.
        where: the card's path, for error messages.
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]], channels: int = 1, where: str = "model card") -> None:
        from monai.transforms import Compose

        self.steps = [dict(s) for s in steps]
        self.channels = int(channels)
        self.where = where
        self.compose = Compose([_build(s, where) for s in self.steps])
        self._geometric: Any = None  # the geometric steps alone, built on first use by mask()

    def __call__(self, image: torch.Tensor) -> Any:
        """``(C, *S)`` scan (a ``MetaTensor`` from :func:`volcam.load`) → ``(C', *S')`` network input.

        The result is a ``MetaTensor`` that remembers the geometric steps for :meth:`invert`.
        """
        from monai.data import MetaTensor

        if not isinstance(image, MetaTensor):
            image = MetaTensor(torch.as_tensor(image))
        image = image.float()
        if image.shape[0] != self.channels:
            if self.channels == 1 and image.shape[0] == 3:
                image = image.mean(0, keepdim=True)  # colour ultrasound → grey, as the network was trained
            else:
                raise InputError(
                    f"the model takes {self.channels} channel(s); the scan has {image.shape[0]} ({tuple(image.shape)})"
                )
        try:
            out = self.compose(image)
        except (RuntimeError, ValueError) as error:
            message = str(error).strip().splitlines()
            raise InputError(f"preprocessing failed on a scan of shape {tuple(image.shape)}: {message[-1]}") from None
        return out

    def invert(self, cam: torch.Tensor, prepared: Any) -> Any:
        """A map on the network's grid ``(1, *S')`` → the scan's grid ``(1, *S)`` with the scan's affine.

        ``prepared`` is what :meth:`__call__` returned for the scan (it holds the steps to undo).
        """
        from monai.data import MetaTensor

        plain = cam.as_tensor() if isinstance(cam, MetaTensor) else cam
        plain = plain.detach().float().cpu()
        if plain.ndim == prepared.ndim + 1 and plain.shape[0] == 1:
            plain = plain[0]
        # The inverse consumes the records it reads, so it gets its own copy: a scan explained by several
        # methods is inverted once per map.
        carried = MetaTensor(
            plain, meta=dict(prepared.meta), applied_operations=copy.deepcopy(list(prepared.applied_operations))
        )
        back = self.compose.inverse(carried)
        return back.clamp_(0.0, 1.0)  # interpolation may overshoot [0, 1] a hair

    def mask(self, mask: torch.Tensor, like: Any | None = None) -> torch.Tensor:
        """A mask on the scan's grid ``(*S)`` or ``(1, *S)`` → the network's grid ``(*S')``, boolean.

        Only the card's geometric steps run (those MONAI can invert: orientation, resampling,
        cropping, padding); intensity steps would turn 0/1 into something else. The mask is resampled
        as a float with each step's own interpolation and kept where it is at least one half, so a
        lung or body mask lands where the scan's voxels land. ``like`` (the scan, a ``MetaTensor``)
        gives the affine when ``mask`` is a plain tensor.
        """
        from monai.data import MetaTensor
        from monai.transforms import Compose, InvertibleTransform

        if self._geometric is None:
            self._geometric = Compose([t for t in self.compose.transforms if isinstance(t, InvertibleTransform)])
        plain = mask.as_tensor() if isinstance(mask, MetaTensor) else torch.as_tensor(mask)
        # the meta holds the affine the geometric steps read
        meta = dict(mask.meta if isinstance(mask, MetaTensor) else getattr(like, "meta", None) or {})
        spatial = like.ndim - 1 if like is not None else plain.ndim - int(plain.shape[0] == 1 and plain.ndim > 1)
        if plain.ndim == spatial:
            plain = plain[None]
        image = MetaTensor((plain != 0).float(), meta=meta)
        try:
            out = self._geometric(image)
        except (RuntimeError, ValueError) as error:
            message = str(error).strip().splitlines()
            raise InputError(f"preprocessing failed on a mask of shape {tuple(plain.shape)}: {message[-1]}") from None
        out = out.as_tensor() if isinstance(out, MetaTensor) else out
        return out[0] >= 0.5
