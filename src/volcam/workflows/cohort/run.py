"""Many cases: a manifest in, maps + a table + a summary out; resumable, fault-isolated, local or on Dask.

:func:`run_cohort` is what ``volcam cohort`` runs. For each case of the manifest (see
:mod:`volcam.io.tables`): load the scan (and mask) → explain it with every method (one shared
forward) → score the maps (localization against the mask, deletion/insertion faithfulness) → write
``OUT/<case id>/``: the maps as NIfTI on the scan's grid (PNG montages with ``png``, DICOM objects of
each kind in ``dicom``, sent to a PACS with ``store`` before the folder appears) and ``case.json``
(:mod:`volcam.workflows.cohort.case`). Then ``results.parquet``/``results.csv``, ``summary.md`` and
``distributions.png`` for the whole cohort (:mod:`volcam.workflows.cohort.report`).

Resuming: a case folder is written as a whole (a temporary folder renamed when complete), and
``case.json`` records the run's fingerprint (the model's card and weights and every choice that
changes an output: :func:`volcam.workflows.cohort.records.fingerprint`) and a signature of the input
files. A rerun skips a case whose folder has its ``case.json`` with the same fingerprint and
signature and every file it lists; anything else is done again. A case that fails records its
error (a corrupt file, a wrong shape, a mask on another grid) and the run goes on; failures that may
pass (out of memory, a worker that died, a PACS that is down) are not recorded as finished, so the
next run tries them again. Ctrl-C or a kill leaves finished cases and nothing half-written; leftover
temporaries are removed on the next run.

Speed: on one machine a background thread loads the next case while the model works on the
current one (``prefetch``). ``scheduler="local"`` starts a ``dask.distributed.LocalCluster`` of
``workers`` processes; any other ``scheduler`` is the address of a running Dask scheduler whose
workers see the same files (:mod:`volcam.workflows.cohort.executors`). Each worker (thread) loads
the model once. Outputs are the same whichever way a case runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from volcam._version import __version__
from volcam.errors import InputError, OutputError
from volcam.io.atomic import atomic_file, check_output_folder, remove_stale
from volcam.io.tables import Case, input_signature, read_cases
from volcam.workflows.cohort.case import Task, cached_model
from volcam.workflows.cohort.executors import run_dask, run_here
from volcam.workflows.cohort.records import CaseRecord, Settings, fingerprint, is_case_folder, read_record
from volcam.workflows.cohort.report import write_report
from volcam.workflows.specs import CohortSpec, option_name

if TYPE_CHECKING:
    from volcam.model.model import Model

__all__ = ["check_cohort_folder", "finished_record", "run_cohort"]

_LOCK = ".volcam-cohort.lock"  # with cohort.json, what marks a folder as a cohort run's


def run_cohort(
    manifest: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike,
    spec: CohortSpec | None = None,
    *,
    trust: bool = False,
    device: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **choices: Any,
) -> Any:
    """Explain and score every case of a manifest; write maps, a table and a summary; return the table.

    Args:
        manifest: a ``.csv``/``.parquet`` manifest or a folder of scans (see :mod:`volcam.io.tables`);
            images may be DICOMweb addresses (credentials: :mod:`volcam.io.dicom.web`).
        model: a model card (``.json``) or a MONAI bundle folder.
        out: the output folder: ``<case id>/`` per case, ``results.parquet``, ``results.csv``,
            ``summary.md``, ``distributions.png``, ``cohort.json`` (the choices).
        spec: what to do with every case and how the cases run (:class:`~volcam.workflows.specs.CohortSpec`:
            methods, target, layer, png, faithfulness_steps, tolerance_mm, dicom, store, prefetch,
            scheduler, workers); ``choices`` as keywords (``methods=["gradcam"], workers=2``) change
            it, other keywords are method options (``gradient_sigma_mm=2``). A ``store`` is checked
            before any case runs; a case whose store fails is an error row the next run tries again.
        trust, device: as for :func:`volcam.load_model`.
        progress: a progress bar (cases/min, ETA) on stderr.
        echo: where to say what is skipped (e.g. ``print``); silent by default.

    Returns:
        a pandas DataFrame, one row per case in manifest order (as ``results.parquet``; columns:
        :func:`volcam.workflows.cohort.records.column_descriptions`), with ``attrs["computed"]`` and
        ``attrs["skipped"]``: the case ids done by this run and those found finished;
        ``attrs["seconds"]``: the whole run, ``attrs["cases_seconds"]``: its cases.

    Raises:
        VolcamError: a bad choice, manifest, card, layer, target or output folder, before any case
            runs. A problem of one case never raises: it is that case's row.
    """
    spec = CohortSpec.of(spec, **choices)
    say = echo or (lambda _: None)
    cases = read_cases(manifest)
    check_cohort_folder(Path(out), cases, manifest, model)  # before the model loads
    settings, loaded_model = _settings(spec, model, out, trust, device)
    started = time.perf_counter()
    with _exclusive(settings.out):
        _write_choices(settings, loaded_model, manifest)
        tasks = [Task(case, input_signature(case)) for case in cases]
        records: dict[str, CaseRecord] = {}
        pending = []
        for task in tasks:
            found = finished_record(task, settings)
            if found is None:
                pending.append(task)
            else:
                records[task.case.case_id] = found
        if records:
            say(f"{len(records)} finished cases skipped; {len(pending)} to do")
        loop_started = time.perf_counter()
        computed = _run_cases(pending, settings, loaded_model, records, progress)
        loop = time.perf_counter() - loop_started
        wall = time.perf_counter() - started
        table = write_report(cases, records, settings, loaded_model, manifest, computed=computed, seconds=wall)
    table.attrs["computed"] = computed
    table.attrs["skipped"] = [c.case_id for c in cases if c.case_id not in computed]
    table.attrs["seconds"] = time.perf_counter() - started  # with the report
    table.attrs["cases_seconds"] = loop
    return table


def _settings(
    spec: CohortSpec, model: str | os.PathLike, out: str | os.PathLike, trust: bool, device: str | None
) -> tuple[Settings, Model]:
    """The checks that need the card or the store, then the run's settings and the model (loaded here)."""
    from volcam.model.model import load_model

    if spec.store is not None:
        from volcam.io.dicom.web import check_store

        # a wrong address or a PACS that does not answer: before any case
        spec = CohortSpec.of(spec, store=check_store(spec.store).root)
    here = spec.scheduler is None
    loaded = cached_model(Path(model), trust, device) if here else load_model(model, trust=trust, device=device)
    if spec.layer is not None:
        loaded.check_layer(spec.layer)
    loaded.check_target(spec.target)
    if spec.dicom and loaded.card.kind != "volume":
        raise InputError(f"{option_name(spec, 'dicom')}: {loaded.name} explains clips; DICOM objects hold volumes")
    settings = Settings(
        spec=spec, model=Path(model).absolute(), out=Path(out).absolute(),  # workers write there, wherever they start
        fingerprint=fingerprint(loaded, spec), trust=trust, device=device,
    )  # fmt: skip
    return settings, loaded


def finished_record(task: Task, settings: Settings) -> CaseRecord | None:
    """The case's record when its folder shows it done with these settings and these inputs, else None."""
    folder = settings.out / task.case.case_id
    record = read_record(folder)
    if record is None or record.fingerprint != settings.fingerprint:
        return None
    if record.inputs != task.signature or record.transient:
        return None
    if not all((folder / name).is_file() for name in record.files):
        return None
    return record


def _run_cases(
    pending: Sequence[Task], settings: Settings, model: Model, records: dict[str, CaseRecord], progress: bool
) -> list[str]:
    """Do the pending cases (here or on Dask) with a progress bar; their records go into ``records``.
    Returns the case ids done, in the order they finished."""
    bar = tqdm(total=len(pending), unit="case", desc="cohort", disable=not progress or not pending, smoothing=0.1)
    computed: list[str] = []
    errors = 0

    def done(record: CaseRecord) -> None:
        nonlocal errors
        records[record.case] = record
        computed.append(record.case)
        errors += record.status != "ok"
        bar.update(1)
        minutes = bar.format_dict["elapsed"] / 60
        bar.set_postfix_str(f"{len(computed) / minutes if minutes else 0:.1f} cases/min, {errors} errors")

    try:
        if settings.spec.scheduler is None:
            run_here(pending, settings, model, done)
        elif pending:  # nothing to do: no cluster to start
            run_dask(pending, settings, done)
    finally:
        bar.close()
    return computed


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One run per output folder at a time (POSIX advisory lock); then clear what a killed run left."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / _LOCK, "a")  # noqa: SIM115 (held open for the whole run)
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory locks; one run per folder is up to the user
            pass
        except OSError:
            raise OutputError(f"{out}: another volcam cohort run is writing there") from None
        remove_stale(out)
        yield
    finally:
        handle.close()


def check_cohort_folder(
    out: Path, cases: Sequence[Case], manifest: str | os.PathLike, model: str | os.PathLike
) -> None:
    """Refuse, with one line and before anything runs, an output folder a cohort run must not write into.

    ``out`` may not be, hold or lie inside the manifest, a scan, a mask or the model; it is new, empty
    or a cohort folder (``cohort.json``); and each case folder that exists is one a cohort wrote
    (``case.json`` naming that case), so a folder of the user's that happens to bear a case's name is
    never replaced. (Case ids are plain folder names: :func:`volcam.io.tables.read_cases` checks.)
    """
    inputs: list[Any] = [manifest, model]
    for case in cases:
        inputs += [case.image, case.mask, case.region]
    _check_no_nul(cases, manifest)
    out = check_output_folder(
        out, inputs, ours=lambda folder: any((folder / name).is_file() for name in ("cohort.json", _LOCK)),
        maker="a cohort run",
    )  # fmt: skip
    if not out.is_dir():
        return
    for case in cases:
        folder = out / case.case_id
        if folder.is_symlink() or (folder.exists() and not (folder.is_dir() and is_case_folder(folder, case.case_id))):
            raise OutputError(
                f"{folder}: exists and was not written by volcam for case {case.case_id!r}; "
                "move it away or choose another --out (volcam never replaces a folder it did not make)"
            )


def _check_no_nul(cases: Sequence[Case], manifest: str | os.PathLike) -> None:
    """A one-line :class:`InputError` for a case path holding a NUL character (a manifest cell with a
    stray byte): no system call can name such a file, and Python's raise ``ValueError`` on it."""
    for case in cases:
        for column, path in (("image", case.image), ("mask", case.mask), ("region", case.region)):
            if path is not None and "\x00" in str(path):
                raise InputError(f"{manifest}: case {case.case_id!r}: its {column} path holds a NUL character")


def _write_choices(settings: Settings, model: Model, manifest: str | os.PathLike) -> None:
    """``cohort.json``: what this folder holds (model, the spec's choices, fingerprint), for people and reruns."""
    found = {
        "volcam": __version__,
        "manifest": str(manifest),
        "model": {"name": model.name, "card": str(settings.model), "labels": list(model.labels)},
        **settings.spec.choices(),
        "fingerprint": settings.fingerprint,
    }
    with atomic_file(settings.out / "cohort.json") as temporary:
        temporary.write_text(json.dumps(found, indent=2, default=str) + "\n")
