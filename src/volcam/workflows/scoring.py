"""One map scored on one case: localization against the lesions and faithfulness for the class explained.

The one home of the per-map metric columns (the fields of :class:`MapScores`, each described in its
metadata: the tables' headers and the docs read them) and of how they are computed, for
``volcam evaluate`` (:mod:`volcam.workflows.evaluate`), cohorts (:mod:`volcam.workflows.cohort`)
and any later report.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from volcam.defaults import TOLERANCE_MM

if TYPE_CHECKING:
    import torch

    from volcam.metrics.faithfulness import Baseline, DeletionInsertion
    from volcam.model.model import Model, ScanExplanation

__all__ = ["MapScores", "column", "column_descriptions", "column_name", "columns", "score_map"]


def column(doc: str, name: str | None = None, default: Any = None) -> Any:
    """A field of a record that is a table column: its description and, where it is no Python name,
    its header (:func:`columns` reads them)."""
    return field(default=default, metadata={"doc": doc, "column": name})


def column_name(f: Field[Any]) -> str:
    """The header of a record's field in a table."""
    return f.metadata.get("column") or f.name


def columns(record: type) -> dict[str, str]:
    """Header → description of a record type's columns, in field order; a field holding a record of
    its own (e.g. :class:`MapScores`) stands for that record's columns."""
    out: dict[str, str] = {}
    for f in fields(record):
        nested = f.metadata.get("record")
        out.update(columns(nested) if nested else {column_name(f): f.metadata.get("doc", "")})
    return out


@dataclass(frozen=True)
class MapScores:
    """What one map scores on one case; ``None`` where it was not measured (no lesion mask, no
    faithfulness steps). The fields are the tables' columns, in order."""

    pointing_hit: int | None = column("pointing game hit (argmax within the tolerance of a lesion; 1 or 0)")
    energy_in_mask: float | None = column("share of the map's energy inside the lesions")
    energy_random: float | None = column(
        "what a uniform map scores: the lesions' share of the volume (of the region, when one is given)"
    )
    dice_matched: float | None = column("Dice of the map's top-n voxels (n = lesion volume) with the lesions")
    iou_at_half: float | None = column("IoU of the map >= 0.5 · max with the lesions", "iou_at_0.5")
    lesion_hit_rate: float | None = column("lesions where the map reaches half its maximum")
    deletion_auc: float | None = column("deletion AUC of the class probability (lower is better)")
    insertion_auc: float | None = column("insertion AUC (higher is better)")
    average_drop: float | None = column("Average Drop in %, lower is better")
    increase_in_confidence: float | None = column("Increase in Confidence in %, higher is better")

    def row(self) -> dict[str, Any]:
        """The measured scores by column name, in column order."""
        return {column_name(f): getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


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
        region: a body or lung mask on the scan's grid: the energy is counted within it.
        model, x: the card's model and the network's input ``(1, C, *S)``; ``None`` (or ``steps=0``):
            no faithfulness.
        steps, baseline, insertion_baseline: deletion/insertion (:func:`volcam.metrics.deletion_insertion`).
        network_region: ``region`` on the network's grid: deletion and insertion change only its voxels.

    Returns:
        the scores, and the deletion/insertion curves (``None`` without faithfulness). Faithfulness
        scores the tensor the engine explained (the card's ``"output"``).
    """
    from volcam.metrics import faithfulness, localization

    found: dict[str, Any] = {}
    if lesions is not None and bool(lesions.any()):
        cam = explained.map.as_tensor() if hasattr(explained.map, "as_tensor") else explained.map
        cam = cam[0]  # (X, Y, Z)
        hit = localization.pointing_game(cam, lesions, tolerance_mm=tolerance_mm, spacing=spacing)
        energy = localization.energy_pointing_game(cam, lesions, region=region)
        overlap = localization.overlap(cam, lesions, thresholds=(0.5,))
        lesion = localization.lesion_hits(cam, lesions, tolerance_mm=tolerance_mm, spacing=spacing)
        found.update(
            pointing_hit=int(hit.hits[0]),
            energy_in_mask=float(energy.energy[0]),
            energy_random=float(energy.baseline[0]),
            dice_matched=float(overlap.matched_dice[0]),
            iou_at_half=float(overlap.iou[0, 0]),
            lesion_hit_rate=float(lesion.hit_rate),
        )
    curves = None
    if model is not None and x is not None and steps > 0:
        on_net = explained.result.map
        on_net = on_net.as_tensor() if hasattr(on_net, "as_tensor") else on_net
        target = int(explained.result.classes[0])
        curves = faithfulness.deletion_insertion(
            model.network, x, on_net, target=target, steps=steps, baseline=baseline,
            insertion_baseline=insertion_baseline, region=network_region, output=model.output_of,
        )  # fmt: skip
        confidence = faithfulness.average_drop_increase(model.network, x, on_net, target=target, output=model.output_of)
        found.update(
            deletion_auc=float(curves.deletion.auc[0]),
            insertion_auc=float(curves.insertion.auc[0]),
            average_drop=float(confidence.average_drop),
            increase_in_confidence=float(confidence.increase),
        )
    return MapScores(**found), curves
