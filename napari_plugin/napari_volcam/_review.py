"""The review of the map shown last, without Qt: profile, top slices, peak, slice ↔ world, localization.

The numbers are computed with the map, in the worker (:func:`review_of`); what the GUI thread asks
here is a lookup. A map on the network's grid is reviewed on that grid, a lesion mask carried onto it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_volcam._images import NO_MASK

TOP_K = 5  # top slices the review steps through

#: A scan-grid mask → the reviewed map's grid (``None``: it does not fit).
Onto = Callable[[Any], "np.ndarray | None"]


def same_grid(mask: Any) -> np.ndarray | None:
    """A mask for a map on the scan's own grid: as it is."""
    return None if mask is None else np.asarray(mask)


def map_spacing(scale: Sequence[float], clip: bool) -> tuple[float, ...]:
    """Distances for localization: mm in plane; on a clip never across frames (:mod:`volcam.metrics.localization`)."""
    from volcam.metrics.localization import within_frames

    spacing = tuple(float(v) for v in scale)
    return within_frames(spacing) if clip else spacing


@dataclass
class Review:
    """What the review panel shows for one map, computed off the GUI thread."""

    data: np.ndarray  # the map in display order, as the layer holds it
    profile: np.ndarray  # mean activation per slice (frame) along the slider axis
    top: list[int]  # the slices with the most activation, highest first
    peak: int  # the slice holding the map's maximum
    localization: dict[str, Any] | None  # against the lesion mask, when one is chosen and fits


def review_of(data: np.ndarray, mask: np.ndarray | None, spacing: Sequence[float], tolerance_mm: float) -> Review:
    """Profile, top slices, peak and localization of a displayed map (:mod:`volcam.viz.review`; for a worker)."""
    from volcam.viz.review import localization, peak, slice_profile, top_slices

    numbers = None
    if mask is not None and mask.shape == data.shape and mask.any():
        numbers = localization(data, mask, spacing, tolerance_mm=tolerance_mm)
    return Review(data, slice_profile(data, axis=0), top_slices(data, axis=0, k=TOP_K), peak(data)[0], numbers)


@dataclass
class ProfileView:
    """The profile plot: activation per slice, its axis label and the slice shown now; for a clip also
    the explained class's probability in each frame (``(T,)``, the curve a reader looks at to find the
    decisive frames) and that class's name."""

    profile: np.ndarray
    label: str
    current: int | None
    probability: np.ndarray | None = None
    probability_label: str = ""


def frame_probability(explanation: Any) -> tuple[np.ndarray, str] | None:
    """The explained class's probability per frame ``(T,)`` of a clip's explanation and the class's name;
    ``None`` for a volume (no frames) or a custom target (no class of its own)."""
    result = getattr(explanation, "result", None)
    frames = getattr(result, "frame_probabilities", None)
    labels = list(getattr(explanation, "probabilities", {}) or {})
    if frames is None or explanation.target not in labels:
        return None
    return np.asarray(frames[:, labels.index(explanation.target)].detach().cpu().float()), explanation.target


@dataclass(eq=False)
class Reviewing:
    """The map under review (its numbers and where its slices lie in the viewer's world) and the lesion mask;
    the pointing game hits within ``tolerance_mm``."""

    tolerance_mm: float
    mask_name: str = NO_MASK
    mask: Any = None  # the chosen Labels layer's data, as the layer holds it (read in a worker)
    review: Review | None = None
    explanation: Any = None  # volcam.ScanExplanation of the map under review
    scale: tuple[float, ...] = ()  # the map's voxel size and first voxel in the viewer's world
    translate: tuple[float, ...] = ()
    axes: str = "zyx"
    onto: Onto = same_grid
    top_at: int = -1

    def set_mask(self, name: str, data: Any) -> None:
        """The lesion mask chosen for the localization numbers (``None`` data: no mask)."""
        self.mask_name = name or NO_MASK
        self.mask = None if data is None or self.mask_name == NO_MASK else data

    def take(self, review: Review, explanation: Any, axes: str, onto: Onto, affine: Any, image: Any) -> None:
        """Review a new map, placed by ``affine`` (network grid) or, when ``None``, on ``image``'s grid."""
        self.review, self.explanation, self.axes, self.onto, self.top_at = review, explanation, axes, onto, -1
        if affine is None:
            self.scale = tuple(float(v) for v in image.scale)
            self.translate = tuple(float(v) for v in image.translate)
        else:  # the network grid in the scan layer's world: its voxel size and first voxel along each axis
            n = affine.shape[0] - 1
            self.scale = tuple(float(v) for v in np.diag(affine)[:n])
            self.translate = tuple(float(v) for v in affine[:n, n])

    def world_of(self, index: int) -> float | None:
        """The slider position (world units) of slice ``index`` of the map under review."""
        return None if self.review is None else float(self.translate[0] + index * self.scale[0])

    def index_of(self, point: float) -> int:
        """The slice of the map under review at slider position ``point``."""
        return 0 if self.review is None else int(np.rint((point - self.translate[0]) / self.scale[0]))

    def profile_view(self, current: int | None = None) -> ProfileView | None:
        if self.review is None:
            return None
        clip = self.axes == "tyx"
        curve = frame_probability(self.explanation) if clip else None
        if curve is not None and len(curve[0]) != len(self.review.profile):
            curve = None  # frames the map does not have one-to-one: no curve rather than a shifted one
        view = ProfileView(self.review.profile, "frame" if clip else "axial slice", current)
        if curve is not None:
            view.probability, view.probability_label = curve
        return view

    def peak(self) -> int | None:
        """The slice (frame) holding the map's maximum."""
        return None if self.review is None else self.review.peak

    def step_top(self, step: int) -> int | None:
        """The next (``step`` = 1) or previous (-1) of the top slices by mean activation."""
        if self.review is None or not self.review.top:
            return None
        top = self.review.top
        self.top_at = (self.top_at + step) % len(top)
        return top[self.top_at]

    def pick(self, x: float | None) -> int | None:
        """The slice at ``x`` on the profile plot (a click), or ``None`` off the plot."""
        if x is None or self.review is None or not len(self.review.profile):
            return None
        return int(np.clip(round(x), 0, len(self.review.profile) - 1))

    def localize(self) -> Callable[[], Review] | None:
        """The recomputation of the review numbers for the chosen mask (for a worker), or ``None`` if none is due."""
        if self.review is None or self.mask is None:
            return None
        data, mask, onto, scale, clip = self.review.data, self.mask, self.onto, self.scale, self.axes == "tyx"
        return lambda: review_of(data, onto(mask), map_spacing(scale, clip), self.tolerance_mm)

    def accept(self, new: Review) -> str | None:
        """Take recomputed numbers if they are still of the map under review; the localization line, else ``None``."""
        if self.review is None or self.review.data is not new.data:
            return None
        self.review = new
        return self.localization_text()

    def localization_text(self) -> str:
        """The localization line: pointing game and energy in the mask, or why there are none."""
        numbers = None if self.review is None or self.mask is None else self.review.localization
        if numbers is None:
            if self.mask_name in ("", NO_MASK) or self.review is None:
                return ""
            return f"{self.mask_name}: not on the map's grid, or empty"
        return (
            f"pointing game ({self.tolerance_mm:g} mm): {'hit' if numbers['pointing_hit'] else 'miss'} "
            f"({numbers['distance_mm']:.1f} mm) · energy in mask {numbers['energy_in_mask']:.1%} "
            f"(uniform map: {numbers['energy_baseline']:.1%})"
        )
