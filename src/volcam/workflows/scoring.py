"""One map scored on one case: localization against the lesions and faithfulness for the class explained.

The one home of the per-map metric columns (the fields of :class:`MapScores`, each described in its
metadata: the tables' headers and the docs read them) and of how they are computed, for
``volcam evaluate`` (:mod:`volcam.workflows.evaluate`), cohorts (:mod:`volcam.workflows.cohort`)
and any later report.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from volcam.defaults import TOLERANCE_MM

if TYPE_CHECKING:
    import torch

    from volcam.metrics.faithfulness import Baseline, DeletionInsertion
    from volcam.metrics.voxel_precision import VoxelHistograms
    from volcam.model.model import Model, ScanExplanation

__all__ = [
    "MapScores",
    "column",
    "column_descriptions",
    "column_name",
    "columns",
    "compared_columns",
    "hit_columns",
    "kept",
    "score_map",
]


def column(
    doc: str, name: str | None = None, default: Any = None, *, hits: float | None = None, compared: bool = True
) -> Any:
    """A field of a record that is a table column: its description and, where it is no Python name,
    its header (:func:`columns` reads them). ``hits``: the column holds a hit per case, 0 or this value
    (1, or 100 for a percentage): its interval is a proportion's. ``compared=False``: no score to rank
    methods by (the same for every method, or one side of a trade-off): left out of the comparisons."""
    metadata = {"doc": doc, "column": name, **({"hits": hits} if hits is not None else {})}
    return field(default=default, metadata={**metadata, **({} if compared else {"compared": False})})


def kept(doc: str, default: Any = None) -> Any:
    """A field a record keeps (in ``case.json``) that is no column of a table."""
    return field(default=default, metadata={"doc": doc, "kept": True})


def column_name(f: Field[Any]) -> str:
    """The header of a record's field in a table."""
    return f.metadata.get("column") or f.name


def columns(record: type) -> dict[str, str]:
    """Header → description of a record type's columns, in field order; a field holding a record of
    its own (e.g. :class:`MapScores`) stands for that record's columns."""
    out: dict[str, str] = {}
    for f in fields(record):
        nested = f.metadata.get("record")
        if nested:
            out.update(columns(nested))
        elif not f.metadata.get("kept"):
            out[column_name(f)] = f.metadata.get("doc", "")
    return out


def hit_columns(record: type) -> dict[str, float]:
    """Header → the value of a hit, for the columns of ``record`` that hold one hit per case."""
    return {column_name(f): f.metadata["hits"] for f in fields(record) if "hits" in f.metadata}


def compared_columns(record: type) -> tuple[str, ...]:
    """The headers of ``record``'s columns that methods are compared by (``column(compared=...)``)."""
    return tuple(column_name(f) for f in fields(record) if "doc" in f.metadata and f.metadata.get("compared", True)
                 and not f.metadata.get("kept"))  # fmt: skip


@dataclass(frozen=True)
class MapScores:
    """What one map scores on one case; ``None`` where it was not measured (no lesion mask, no
    faithfulness steps). The fields are the tables' columns, in order."""

    pointing_hit: int | None = column("pointing game hit (argmax within the tolerance of a lesion; 1 or 0)", hits=1)
    energy_in_mask: float | None = column("share of the map's energy inside the lesions")
    energy_random: float | None = column(
        "what a uniform map scores: the lesions' share of the volume (of the region, when one is given)",
        compared=False,
    )
    dice_matched: float | None = column("Dice of the map's top-n voxels (n = lesion volume) with the lesions")
    iou_at_half: float | None = column("IoU of the map >= 0.5 · max with the lesions", "iou_at_0.5")
    lesion_hit_rate: float | None = column("lesions where the map reaches half its maximum")
    vxap: float | None = column(
        "voxel average precision (SE3D): Σ precision · Δrecall of the min-max normalised map over lesion and "
        "other voxels, thresholds 0, 0.01, …, 1"
    )
    max_f1: float | None = column("the best voxel F1 of the normalised map over the same thresholds (SE3D's MaxF1)")
    precision_at_max_f1: float | None = column("voxel precision at the MaxF1 threshold", compared=False)
    recall_at_max_f1: float | None = column("voxel recall at the MaxF1 threshold", compared=False)
    deletion_auc: float | None = column("deletion AUC of the class probability (lower is better)")
    insertion_auc: float | None = column("insertion AUC (higher is better)")
    average_drop: float | None = column("Average Drop in %, lower is better")
    increase_in_confidence: float | None = column("Increase in Confidence in %, higher is better", hits=100)
    lesion_histogram: tuple[int, ...] | None = kept(
        "lesion voxels per bin of the normalised map (VoxelHistograms: bins [k/100, (k+1)/100), then the maximum)"
    )
    background_histogram: tuple[int, ...] | None = kept("the other voxels per bin, as lesion_histogram")

    def __post_init__(self) -> None:
        for name in ("lesion_histogram", "background_histogram"):  # lists when read back from case.json
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))

    def row(self) -> dict[str, Any]:
        """The measured scores by column name, in column order."""
        return {
            column_name(f): getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and not f.metadata.get("kept")
        }

    def histograms(self) -> VoxelHistograms | None:
        """The map's voxel histograms (what a cohort pools for VxAP and MaxF1); ``None`` without lesions."""
        from volcam.metrics.voxel_precision import VoxelHistograms

        if self.lesion_histogram is None or self.background_histogram is None:
            return None
        return VoxelHistograms(np.asarray(self.lesion_histogram), np.asarray(self.background_histogram))


def column_descriptions() -> dict[str, str]:
    """Column name → description of every per-map score, in column order."""
    return columns(MapScores)


def score_map(
    explained: ScanExplanation,
    lesions: torch.Tensor | None,
    spacing: tuple[float, ...],
    *,
    tolerance_mm: float = TOLERANCE_MM,
    region: torch.Tensor | None = None,
    model: Model | None = None,
    x: torch.Tensor | None = None,
    steps: int = 10,
    baseline: Baseline = "zero",
    insertion_baseline: Baseline = "blur",
    network_region: torch.Tensor | None = None,
) -> tuple[MapScores, DeletionInsertion | None]:
    """Score one explanation of a scan.

    Args:
        explained: the explanation (its map on the scan's grid ``(1, X, Y, Z)``, and on the
            network's grid for faithfulness).
        lesions: ``(X, Y, Z)`` boolean lesion mask on the scan's grid, or ``None`` (no localization).
        spacing: the scan's voxel size in mm.
        tolerance_mm: the pointing game's and the lesion hits' tolerance.
        region: a body or lung mask on the scan's grid: the energy, VxAP and MaxF1 count its voxels only.
        model, x: the card's model and the network's input ``(1, C, *S)``; ``None`` (or ``steps=0``):
            no faithfulness.
        steps, baseline, insertion_baseline: deletion/insertion (:func:`volcam.metrics.deletion_insertion`).
        network_region: ``region`` on the network's grid: deletion and insertion change only its voxels.

    Returns:
        the scores, and the deletion/insertion curves (``None`` without faithfulness). Faithfulness
        scores the tensor the engine explained (the card's ``"output"``).
    """
    found: dict[str, Any] = {}
    if lesions is not None and bool(lesions.any()):
        cam = explained.map.as_tensor() if hasattr(explained.map, "as_tensor") else explained.map
        found.update(_localization(cam[0], lesions, spacing, tolerance_mm, region))  # (X, Y, Z)
    found.update(_faithfulness(explained, model, x, steps, baseline, insertion_baseline, network_region))
    curves = found.pop("curves", None)
    return MapScores(**found), curves


def _localization(
    cam: torch.Tensor, lesions: torch.Tensor, spacing: tuple[float, ...], tolerance_mm: float, region: Any
) -> dict[str, Any]:
    """The localization columns of a map ``(X, Y, Z)`` against a lesion mask that is not empty."""
    from volcam.metrics import localization, voxel_precision

    hit = localization.pointing_game(cam, lesions, tolerance_mm=tolerance_mm, spacing=spacing)
    energy = localization.energy_pointing_game(cam, lesions, region=region)
    overlap = localization.overlap(cam, lesions, thresholds=(0.5,))
    lesion = localization.lesion_hits(cam, lesions, tolerance_mm=tolerance_mm, spacing=spacing)
    found: dict[str, Any] = {
        "pointing_hit": int(hit.hits[0]),
        "energy_in_mask": float(energy.energy[0]),
        "energy_random": float(energy.baseline[0]),
        "dice_matched": float(overlap.matched_dice[0]),
        "iou_at_half": float(overlap.iou[0, 0]),
        "lesion_hit_rate": float(lesion.hit_rate),
    }
    (histograms,) = voxel_precision.voxel_histograms(cam, lesions, region=region)
    if histograms.lesion.any():  # lesions outside the region count nothing
        scores = voxel_precision.precision_recall(histograms)
        found.update(
            vxap=scores.vxap, max_f1=scores.max_f1, precision_at_max_f1=scores.precision_at_max_f1,
            recall_at_max_f1=scores.recall_at_max_f1, lesion_histogram=tuple(histograms.lesion.tolist()),
            background_histogram=tuple(histograms.background.tolist()),
        )  # fmt: skip
    return found


def _faithfulness(
    explained: ScanExplanation,
    model: Model | None,
    x: torch.Tensor | None,
    steps: int,
    baseline: Baseline,
    insertion_baseline: Baseline,
    network_region: torch.Tensor | None,
) -> dict[str, Any]:
    """The faithfulness columns (and ``curves``: the deletion/insertion curves); none without a model."""
    from volcam.metrics import faithfulness

    if model is None or x is None or steps <= 0:
        return {}
    on_net = explained.result.map
    on_net = on_net.as_tensor() if hasattr(on_net, "as_tensor") else on_net
    target = int(explained.result.classes[0])
    curves = faithfulness.deletion_insertion(
        model.network, x, on_net, target=target, steps=steps, baseline=baseline,
        insertion_baseline=insertion_baseline, region=network_region, output=model.output_of,
    )  # fmt: skip
    confidence = faithfulness.average_drop_increase(model.network, x, on_net, target=target, output=model.output_of)
    return {
        "deletion_auc": float(curves.deletion.auc[0]),
        "insertion_auc": float(curves.insertion.auc[0]),
        "average_drop": float(confidence.average_drop),
        "increase_in_confidence": float(confidence.increase),
        "curves": curves,
    }
