"""A cohort's records: one per case (its ``case.json`` and its row of the results table), one per method's
map of a case, the settings every case is done with, and the fingerprint that says when a case is done.

The fields of :class:`CaseRecord` and :class:`MapRecord` are the results table's columns, in order, each
described in its metadata (:func:`column_descriptions`; ``summary.md`` lists them); ``case.json`` is
:meth:`CaseRecord.to_json` and reads back with :func:`read_record`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volcam.errors import one_line, scrub
from volcam.io.jsondata import parse_json
from volcam.io.tables import Case
from volcam.workflows.scoring import MapScores, column, column_name, columns
from volcam.workflows.specs import CohortSpec

if TYPE_CHECKING:
    from volcam.model.model import Model

__all__ = [
    "CASE_FILE",
    "FORMAT",
    "METRICS",
    "TIMINGS",
    "CaseRecord",
    "MapRecord",
    "Settings",
    "column_descriptions",
    "fingerprint",
    "is_case_folder",
    "read_record",
    "true_label",
]

CASE_FILE = "case.json"
# case.json's layout and what a case's outputs mean; a new value changes every fingerprint, so every case
# is redone. 3: each map's scores add VxAP/MaxF1 and the voxel histograms a cohort pools; 2: case.json
# is a CaseRecord (1: a dict with "metrics" and "timings"; read as not done).
FORMAT = 3
#: The per-method score columns, in order (``<method>.<metric>``): the per-map scores'.
METRICS = tuple(columns(MapScores))


def _seconds(doc: str) -> Any:
    """A timing column: wall seconds of one step of the case; ``None`` where the step did not run."""
    return field(default=None, metadata={"doc": doc, "column": None, "timing": True})


def _kept(doc: str, default: Any = None, factory: Any = None) -> Any:
    """A field ``case.json`` keeps to resume and to list the case's files, not a column of the table."""
    given = {"default_factory": factory} if factory is not None else {"default": default}
    return field(metadata={"doc": doc, "kept": True}, **given)


@dataclass(frozen=True)
class Settings:
    """What a worker needs to do a case; pickled to Dask workers. ``fingerprint``: see :func:`fingerprint`."""

    spec: CohortSpec
    model: Path  # the card or bundle, absolute: workers load it themselves
    out: Path  # the cohort's folder, absolute
    fingerprint: str
    trust: bool = False
    device: str | None = None


@dataclass(frozen=True)
class MapRecord:
    """One method's map of one case, scored: the case's ``<method>.<metric>`` columns."""

    method: str = column("the CAM method")
    scores: MapScores = field(default_factory=MapScores, metadata={"record": MapScores})


@dataclass(frozen=True)
class CaseRecord:
    """One case: what ``case.json`` holds and, with its manifest row (:meth:`on`), its row of the table.

    ``status`` is ``ok``, ``error`` or ``not run`` (no record: the run stopped first).
    """

    case: str = column("the manifest's case id; its folder is OUT/<case>/", default="")
    image: str = column("the scan: a file, a DICOM folder or a DICOMweb address", default="")
    mask: str = column("the lesion mask; empty without one", default="")
    region: str = column(
        "the body or lung mask the energy, VxAP, MaxF1 and deletion/insertion stay within; empty without one",
        default="",
    )
    label: str = column("the manifest's label as the model names it (an index becomes its class)", default="")
    status: str = column("ok, error, or not run", default="not run")
    error: str = column(
        "'<stage>: <why>' when the case failed (load, explain, metrics, write, store, worker)", default=""
    )
    prediction: str = column("the predicted class (ok cases)", default="")
    target: str = column("the class explained (ok cases)", default="")
    correct: bool | None = column("prediction == label, for ok cases labelled with one of the model's classes")
    probabilities: Mapping[str, float] = field(
        default_factory=dict, metadata={"doc": "the model's probability of each class", "column": "p_<class>"}
    )
    maps: tuple[MapRecord, ...] = field(
        default=(), metadata={"doc": "each method's scores of its map (below)", "column": "<method>.<metric>"}
    )
    load_s: float | None = _seconds("seconds reading the scan and the mask")
    explain_s: float | None = _seconds("seconds explaining: one forward, every method's map")
    metrics_s: float | None = _seconds("seconds scoring the maps")
    write_s: float | None = _seconds("seconds writing the case's folder (maps, montages, DICOM)")
    fingerprint: str = _kept("the run's fingerprint (fingerprint())", "")
    inputs: str = _kept("the signature of the input files (volcam.io.tables.input_signature)", "")
    transient: bool = _kept("the failure may pass on another try (not recorded as done)", False)
    files: tuple[str, ...] = _kept("the case's files, relative to its folder", ())
    stored: int | None = _kept("DICOM instances the store took")

    def __post_init__(self) -> None:
        """The error a row holds has passed the one scrubbing path (:func:`volcam.errors.scrub`, on one
        line), whoever worded it and wherever the record was made (a Dask worker scrubs with the values
        it read): no writer of the row (``case.json``, the table, ``summary.md``) can show an identifier."""
        if self.error:
            object.__setattr__(self, "error", scrub(one_line(self.error)))

    def on(self, case: Case, labels: Sequence[str]) -> CaseRecord:
        """This record with the manifest's facts about ``case`` (``labels``: the model's classes)."""
        label = true_label(case.label, labels) or ""
        ok = self.status == "ok"
        return replace(
            self, case=case.case_id, image=str(case.image), mask="" if case.mask is None else str(case.mask),
            region="" if case.region is None else str(case.region), label=label,
            correct=(self.prediction == label) if ok and label in labels else None,
        )  # fmt: skip

    def row(self, methods: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
        """The table's row: every column, ``NaN`` for a number not measured."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("kept"):
                continue
            if f.name == "probabilities":
                out.update({f"p_{name}": value.get(name, math.nan) for name in labels})
            elif f.name == "maps":
                scores = {one.method: one.scores.row() for one in value}
                for method in methods:
                    out.update({f"{method}.{m}": scores.get(method, {}).get(m, math.nan) for m in METRICS})
            else:
                out[f.name] = math.nan if value is None and f.metadata.get("timing") else value
        return out

    def to_json(self) -> str:
        """``case.json``'s text (a list of numbers, such as a voxel histogram, on one line)."""
        text = json.dumps({"format": FORMAT, **asdict(self)}, indent=1)
        return _NUMBERS.sub(lambda found: "[" + "".join(found.group(1).split()) + "]", text) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseRecord:
        """The record ``case.json`` holds (a TypeError, KeyError or ValueError if it holds none)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"case.json format {data.get('format')}, not {FORMAT}")
        given = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        maps = tuple(MapRecord(one["method"], MapScores(**one["scores"])) for one in given.pop("maps", ()))
        return cls(**{**given, "maps": maps, "files": tuple(given.get("files", ()))})


# a JSON list of integers as json.dumps(indent=...) writes it: one number a line
_NUMBERS = re.compile(r"\[\n\s*(-?\d+(?:,\n\s*-?\d+)*)\n\s*\]")


def column_descriptions() -> dict[str, str]:
    """Header → description of the results table's columns, in order. ``p_<class>`` stands for one column
    per class, ``<method>.<metric>`` for one per method and score (:data:`METRICS`)."""
    return {column_name(f): f.metadata["doc"] for f in fields(CaseRecord) if not f.metadata.get("kept")}


#: The timing columns (seconds per step of a case), in order.
TIMINGS = tuple(f.name for f in fields(CaseRecord) if f.metadata.get("timing"))


def true_label(label: str | None, labels: Sequence[str]) -> str | None:
    """The manifest's label as the model names it: a class name as is, a class index → its name."""
    if label is None or label in labels:
        return label
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(labels):
        return labels[int(label)]
    return label


def _read(folder: Path) -> Any:
    try:
        return parse_json((folder / CASE_FILE).read_bytes(), folder / CASE_FILE, "case record")
    except (OSError, ValueError):  # no case.json, or not JSON (FileFormatError is a ValueError): not done
        return None


def read_record(folder: Path) -> CaseRecord | None:
    """The record in ``folder``'s ``case.json``; ``None`` when there is none of this format."""
    data = _read(folder)
    try:
        return CaseRecord.from_json(data) if isinstance(data, dict) else None
    except (TypeError, KeyError, ValueError):
        return None


def is_case_folder(folder: Path, case_id: str) -> bool:
    """Whether ``folder`` is one a cohort run wrote for ``case_id`` (its ``case.json``, of any format, says so)."""
    data = _read(folder)
    return isinstance(data, dict) and data.get("case") == case_id and "fingerprint" in data


# -- fingerprint ------------------------------------------------------------------------------------


def model_fingerprint(model: Model) -> str:
    """A hash of what the model computes: its card's fields (not its path) and every weight tensor."""
    import torch

    card = model.card
    digest = hashlib.sha256()
    found = {k: getattr(card, k) for k in ("name", "kind", "labels", "layer", "in_channels", "network")}
    found["preprocessing"] = card.preprocessing
    found["modality"] = card.modality
    digest.update(json.dumps(found, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.network.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(model: Model, spec: CohortSpec) -> str:
    """What a case's outputs depend on: the model, the record format and every choice of ``spec`` but
    where and how fast it runs (``spec.choices(outputs_only=True)``). A case recorded with another one is
    done again."""
    choices = spec.choices(outputs_only=True)
    text = json.dumps({"format": FORMAT, "model": model_fingerprint(model), **choices}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
