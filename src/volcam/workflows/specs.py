"""What a job is asked to do: one frozen spec per job, the one home of its defaults, allowed values and checks.

A spec is a frozen dataclass of the choices that change a job's output (methods, class, layer,
DICOM kinds, steps, ...), not of its inputs (the scan, the card, the output folder) nor of how it
runs (progress, device). Every front door builds one the same way:

* the command line declares each option's default and help from the spec's field
  (:func:`default` and :func:`help_text`; ``volcam explain --help`` shows them), then builds the
  spec from what was typed;
* the Python API takes a spec or keyword choices (``run_cohort(..., methods=["gradcam"])``,
  :meth:`JobSpec.of`);
* the napari dock builds an :class:`ExplainSpec` from its form.

The spec normalises what it is given (``"gradcam,hirescam"`` → ``("gradcam", "hirescam")``, ``"1"`` →
class 1) and checks it when it is made, so a wrong choice fails with one line naming its option
before anything is read. This module imports no torch (the CLI reads it for ``--help``); checks that
need a registry (method names, DICOM kinds, baselines) import it when a spec is made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

from volcam.defaults import LCAM_LOSS, TOLERANCE_MM, LCamLossWeights
from volcam.errors import InputError, MethodError, VolcamError, one_line

__all__ = [
    "LCAM_TARGETS",
    "CohortSpec",
    "EvaluateSpec",
    "ExplainSpec",
    "JobSpec",
    "LCamSpec",
    "ValidateSpec",
    "default",
    "help_text",
    "option_name",
    "split_list",
]

_Spec = TypeVar("_Spec", bound="JobSpec")

#: What L-CAM learns to explain: the network's decision, or the label the data gives.
LCAM_TARGETS = ("prediction", "label")


def _choice(default: Any, help: str, option: str | None = None, *, output: bool = True) -> Any:
    """A field of a spec: its default, the help line the CLI shows, its option's name when that is not
    ``--<field-name>``, and whether it changes what the job gives (``output=False``: only where or how
    fast it runs, e.g. Dask workers)."""
    return field(default=default, metadata={"help": help, "option": option, "output": output})


def _fields_of(spec: type[JobSpec] | JobSpec) -> dict[str, Field[Any]]:
    return {f.name: f for f in fields(spec)}


def help_text(spec: type[JobSpec], name: str) -> str:
    """The help line of ``spec``'s choice ``name`` (what ``--help`` shows)."""
    return str(_fields_of(spec)[name].metadata["help"])


def default(spec: type[JobSpec], name: str) -> Any:
    """The default of ``spec``'s choice ``name``."""
    found = _fields_of(spec)[name]
    if found.default is MISSING and callable(found.default_factory):
        return found.default_factory()
    return found.default


def option_name(spec: type[JobSpec] | JobSpec, name: str) -> str:
    """The command-line option of a choice (``methods`` → ``--method``), which errors name."""
    return _fields_of(spec)[name].metadata.get("option") or "--" + name.replace("_", "-")


def split_list(given: str | Sequence[str] | None) -> tuple[str, ...]:
    """Values given as a list and/or comma-separated (``["a,b", "c"]`` → ``("a", "b", "c")``), blanks
    and repeats dropped, order kept."""
    texts = [] if given is None else [given] if isinstance(given, str) else [str(g) for g in given]
    return tuple(dict.fromkeys(item.strip() for text in texts for item in text.split(",") if item.strip()))


@dataclass(frozen=True)
class JobSpec:
    """What all specs share: building from keyword choices and failing with the option's name."""

    #: The choices keyword arguments of the API may give that are method options, not fields.
    method_options: ClassVar[bool] = False

    @classmethod
    def of(cls: type[_Spec], spec: _Spec | None = None, **choices: Any) -> _Spec:
        """``spec`` (the defaults when ``None``) with ``choices`` changed and checked. Keywords that are
        no choice of the job are method options (``gradient_sigma_mm=2``) where the job takes them."""
        if spec is not None and not isinstance(spec, cls) and type(spec).__qualname__ == cls.__qualname__:
            # the same spec made by a reloaded copy of this module (IPython's autoreload, importlib.reload)
            spec = cls(**{f.name: getattr(spec, f.name) for f in fields(spec)})
        if spec is not None and not isinstance(spec, cls):
            raise InputError(f"{one_line(repr(spec))[:60]}: not a {cls.__name__}; give one, or the choices as keywords")
        names = set(_fields_of(cls))
        unknown = {k: v for k, v in choices.items() if k not in names}
        known = {k: v for k, v in choices.items() if k in names}
        if unknown and not cls.method_options:
            raise InputError(f"{', '.join(sorted(unknown))}: not a choice of this job ({', '.join(sorted(names))})")
        if spec is None and not unknown:
            return cls(**known)
        base = spec if spec is not None else cls()
        if unknown:
            known["options"] = {**getattr(base, "options", {}), **unknown}
        return replace(base, **known)

    def _fail(self, name: str, problem: str, kind: type[VolcamError] = InputError) -> VolcamError:
        """The error for a wrong choice: one line naming its option."""
        return kind(f"{option_name(self, name)}: {problem}")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen spec while it is made

    def choices(self, *, outputs_only: bool = False) -> dict[str, Any]:
        """The choices as plain values (a job's record of what it was asked; JSON-ready); with
        ``outputs_only``, those that change what the job gives (what a resumable job fingerprints)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if outputs_only and not f.metadata.get("output", True):
                continue
            value = getattr(self, f.name)
            out[f.name] = (
                list(value)
                if isinstance(value, tuple)
                else dict(value)
                if isinstance(value, Mapping)
                else vars(value).copy()
                if hasattr(value, "__dataclass_fields__")
                else value
            )
        return out


# -- the choices several jobs share -----------------------------------------------------------------

_METHODS_HELP = (
    "CAM method; repeat the option or give a comma-separated list (gradcam,gradcam++); see `volcam methods`."
)
_TARGET_HELP = "Class label or index to explain (default: predicted)."
_LAYER_HELP = "Target layer; repeat it or give a comma-separated list to fuse several; default: the card's."
_DICOM_HELP = (
    "DICOM objects to write on the scan's study and frame of reference (OHIF, 3D Slicer overlay them); repeat or "
    "comma-separate: parametric-map (the map 0-1), segmentation (the map above 0.5), overlay (RGB, one per slice)."
)
_STORE_HELP = (
    "Send the DICOM results to this DICOMweb server (STOW-RS), e.g. http://pacs:8042/dicom-web; the parametric map "
    "unless --dicom names kinds. Credentials: VOLCAM_DICOMWEB_TOKEN (Bearer), or VOLCAM_DICOMWEB_USER and "
    "VOLCAM_DICOMWEB_PASSWORD."
)
_TOLERANCE_HELP = "Pointing-game tolerance in mm."


def _methods(spec: JobSpec, given: Any) -> tuple[str, ...]:
    from volcam.methods.registry import get_method

    names = split_list(given)
    if not names:
        raise spec._fail("methods", "no method named; e.g. --method gradcam (volcam methods lists them)")
    for name in names:
        try:
            get_method(name)
        except MethodError as error:
            raise spec._fail("methods", str(error), MethodError) from None
    return names


def _target(given: Any) -> str | int | None:
    """A class index when it is a number (``"1"`` too), else a label; ``None``: the predicted class."""
    if isinstance(given, str) and given.strip().isdigit():
        return int(given)
    return given if given != "" else None


def _layer(given: Any) -> str | tuple[str, ...] | None:
    """``None`` (the card's), one layer, or several to fuse."""
    names = split_list(given)
    return None if not names else names[0] if len(names) == 1 else names


def _dicom(spec: JobSpec, given: Any, store: str | None) -> tuple[str, ...]:
    """The DICOM kinds asked for; a store with none named sends the parametric map."""
    from volcam.io.write import dicom_kinds

    try:
        kinds = dicom_kinds(split_list(given))
    except InputError as error:
        raise spec._fail("dicom", str(error)) from None
    return kinds or (("parametric-map",) if store else ())


def _non_negative(spec: JobSpec, name: str, value: Any, unit: str = "") -> float:
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise spec._fail(name, f"{value} is not {unit or 'a number'} (0 or more)")
    return number


def _at_least(spec: JobSpec, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < low:
        raise spec._fail(name, f"{value!r}; give a whole number of {low} or more")
    return int(value)


# -- the jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainSpec(JobSpec):
    """What ``volcam explain`` (:func:`volcam.workflows.explain_folder.explain_to_folder`) and the napari
    dock are asked: which maps, and which files beside the NIfTI and the montage."""

    method_options: ClassVar[bool] = True

    methods: tuple[str, ...] = _choice(("gradcam",), _METHODS_HELP, "--method")
    target: str | int | None = _choice(None, _TARGET_HELP)
    layer: str | tuple[str, ...] | None = _choice(None, _LAYER_HELP)
    gradient_sigma_mm: float | None = _choice(None, "Smooth gradients with a Gaussian of this σ in mm first.")
    dicom: tuple[str, ...] = _choice((), _DICOM_HELP)
    store: str | None = _choice(None, _STORE_HELP)
    decisive_threshold: float = _choice(
        0.5,
        "A clip's decisive frames: those whose probability of the explained class is above this (0-1); listed in "
        "summary.json and shaded under the clip's video.",
    )
    options: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "method options"})

    def __post_init__(self) -> None:
        self._set("methods", _methods(self, self.methods))
        self._set("target", _target(self.target))
        self._set("layer", _layer(self.layer))
        if self.gradient_sigma_mm is not None:
            sigma = _non_negative(self, "gradient_sigma_mm", self.gradient_sigma_mm, "a width in mm")
            self._set("gradient_sigma_mm", sigma)
        self._set("dicom", _dicom(self, self.dicom, self.store))
        threshold = _non_negative(self, "decisive_threshold", self.decisive_threshold, "a probability")
        if threshold > 1:
            raise self._fail("decisive_threshold", f"{self.decisive_threshold} is not a probability (0 to 1)")
        self._set("decisive_threshold", threshold)
        self._set("options", dict(self.options))

    def method_kwargs(self) -> dict[str, Any]:
        """The options every method of the job gets (``ScanSession.explain(method, **...)``)."""
        sigma = {} if self.gradient_sigma_mm is None else {"gradient_sigma_mm": self.gradient_sigma_mm}
        return {**self.options, **sigma}


@dataclass(frozen=True)
class EvaluateSpec(JobSpec):
    """What ``volcam evaluate`` (:func:`volcam.workflows.evaluate.evaluate_to_folder`) measures."""

    methods: tuple[str, ...] = _choice(("gradcam", "gradcam++"), _METHODS_HELP, "--method")
    target: str | int | None = _choice(None, _TARGET_HELP)
    layer: str | tuple[str, ...] | None = _choice(None, _LAYER_HELP)
    tolerance_mm: float = _choice(TOLERANCE_MM, _TOLERANCE_HELP)
    steps: int = _choice(100, "Deletion/insertion steps (100 = 1% each).")
    road: bool = _choice(False, "Also ROAD (noisy linear imputation; slower).")
    robustness: bool = _choice(False, "Also max-sensitivity to input noise.")
    baseline: str | float = _choice(
        "zero", "What deletion turns voxels into: zero, mean, blur or a number (network input units)."
    )
    insertion_baseline: str | float = _choice("blur", "What insertion starts from (same choices).")

    def __post_init__(self) -> None:
        self._set("methods", _methods(self, self.methods))
        self._set("target", _target(self.target))
        self._set("layer", _layer(self.layer))
        self._set("tolerance_mm", _non_negative(self, "tolerance_mm", self.tolerance_mm, "a distance in mm"))
        steps = _at_least(self, "steps", self.steps, 2)
        if steps > 10000:
            raise self._fail("steps", f"{steps}; give 2 to 10000")
        self._set("steps", steps)
        for name in ("baseline", "insertion_baseline"):
            self._set(name, self._baseline(name, getattr(self, name)))

    def _baseline(self, name: str, given: str | float) -> str | float:
        """A named baseline (:data:`volcam.metrics.faithfulness.BASELINES`) or a finite number."""
        from volcam.metrics.faithfulness import BASELINES

        named = ", ".join(BASELINES)
        if isinstance(given, str) and given in BASELINES:
            return given
        try:
            value = float(given)
        except (TypeError, ValueError):
            raise self._fail(name, f"{one_line(str(given))[:40]!r}; give {named} or a number") from None
        if not math.isfinite(value):
            raise self._fail(name, f"{given!r}; give {named} or a finite number")
        return value


# How a cohort's cases run (the cohort's and validate's): where and how fast, never an output.
_PREFETCH_HELP = "Load the next case while this one computes."
_SCHEDULER_HELP = "'local' for a Dask LocalCluster, or a Dask scheduler address (tcp://...)."
_WORKERS_HELP = "Worker processes with --scheduler local (default 2)."


@dataclass(frozen=True)
class CohortSpec(JobSpec):
    """What ``volcam cohort`` (:func:`volcam.workflows.cohort.run.run_cohort`) does with every case, and how
    the cases run. ``scheduler``/``workers``/``prefetch`` change where and how fast, never an output."""

    method_options: ClassVar[bool] = True

    methods: tuple[str, ...] = _choice(("gradcam",), _METHODS_HELP, "--method")
    target: str | int | None = _choice(None, _TARGET_HELP)
    layer: str | tuple[str, ...] | None = _choice(None, _LAYER_HELP)
    png: bool = _choice(False, "Also a PNG montage per map.")
    faithfulness_steps: int = _choice(10, "Deletion/insertion steps per map (0: no faithfulness, the slow part).")
    tolerance_mm: float = _choice(TOLERANCE_MM, _TOLERANCE_HELP + " (cases with a mask)")
    dicom: tuple[str, ...] = _choice((), _DICOM_HELP)
    store: str | None = _choice(None, _STORE_HELP)
    prefetch: bool = _choice(True, _PREFETCH_HELP, output=False)
    scheduler: str | None = _choice(None, _SCHEDULER_HELP, output=False)
    workers: int | None = _choice(None, _WORKERS_HELP, output=False)
    options: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "method options"})

    def __post_init__(self) -> None:
        self._set("methods", _methods(self, self.methods))
        self._set("target", _target(self.target))
        self._set("layer", _layer(self.layer))
        self._set("faithfulness_steps", _at_least(self, "faithfulness_steps", self.faithfulness_steps, 0))
        self._set("tolerance_mm", _non_negative(self, "tolerance_mm", self.tolerance_mm, "a distance in mm"))
        self._set("dicom", _dicom(self, self.dicom, self.store))
        if self.workers is not None:
            self._set("workers", _at_least(self, "workers", self.workers, 1))
            if self.scheduler is None and self.workers != 1:
                raise self._fail("workers", "needs --scheduler local (or the address of a Dask scheduler)")
        self._set("options", dict(self.options))


@dataclass(frozen=True)
class ValidateSpec(JobSpec):
    """What ``volcam validate`` (:func:`volcam.workflows.validate.validate_to_folder`) measures and reports:
    the cohort's choices (:meth:`cohort`), the checks on a few cases, and how the intervals are drawn."""

    method_options: ClassVar[bool] = True

    methods: tuple[str, ...] = _choice(("gradcam", "gradcam++"), _METHODS_HELP, "--method")
    target: str | int | None = _choice(None, _TARGET_HELP)
    layer: str | tuple[str, ...] | None = _choice(None, _LAYER_HELP)
    tolerance_mm: float = _choice(TOLERANCE_MM, _TOLERANCE_HELP)
    faithfulness_steps: int = _choice(
        20, "Deletion/insertion steps per map, within the manifest's region (lungs) where a case has one (0: none)."
    )
    sanity_cases: int = _choice(
        5,
        "Cases (the first ok ones) on which each method is checked by cascading weight randomisation and for "
        "max-sensitivity to input noise (0: none).",
    )
    road: bool = _choice(False, "Also ROAD (noisy linear imputation; slower) on those cases.")
    resamples: int = _choice(
        10000, "Bootstrap resamples of the cases for every interval and p-value (the smallest p is 2/(N+1))."
    )
    seed: int = _choice(0, "The bootstrap's seed.")
    misses: int = _choice(3, "Pictures per method of the cases its map misses (pointing game), worst first.")
    prefetch: bool = _choice(True, _PREFETCH_HELP, output=False)
    scheduler: str | None = _choice(None, _SCHEDULER_HELP, output=False)
    workers: int | None = _choice(None, _WORKERS_HELP, output=False)
    options: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "method options"})

    def __post_init__(self) -> None:
        self._set("methods", _methods(self, self.methods))
        self._set("target", _target(self.target))
        self._set("layer", _layer(self.layer))
        self._set("tolerance_mm", _non_negative(self, "tolerance_mm", self.tolerance_mm, "a distance in mm"))
        for name, low in (("faithfulness_steps", 0), ("sanity_cases", 0), ("resamples", 100), ("misses", 0)):
            self._set(name, _at_least(self, name, getattr(self, name), low))
        self._set("seed", _at_least(self, "seed", self.seed, 0))
        self._set("options", dict(self.options))
        self.cohort()  # the cohort's own checks (--workers without --scheduler), named by their options

    def cohort(self) -> CohortSpec:
        """The cohort the report is made from: every case explained and scored (no PNG, no DICOM)."""
        shared = ("methods", "target", "layer", "faithfulness_steps", "tolerance_mm", "prefetch", "scheduler")
        return CohortSpec(workers=self.workers, options=self.options, **{name: getattr(self, name) for name in shared})


@dataclass(frozen=True)
class LCamSpec(JobSpec):
    """How ``volcam train-lcam`` (:func:`volcam.workflows.lcam_training.train_lcam`) trains an L-CAM module."""

    variant: str = _choice("fm", "fm: map × feature maps; img: upsampled map × input.")
    epochs: int = _choice(10, "At most this many epochs (early stopping on the validation loss).")
    layer: str | None = _choice(None, "Target layer; default: the card's.")
    target: str = _choice("prediction", "prediction (the model's decision) or label (the manifest's).")
    batch_size: int = _choice(8, "Images per step.")
    lr: float = _choice(0.01, "Adam learning rate.")
    validation: float = _choice(0.2, "Fraction held out for the validation loss (0 to 0.9).")
    patience: int = _choice(3, "Stop after this many epochs without improvement.")
    seed: int = _choice(0, "Split, shuffling and initial weights.")
    loss: LCamLossWeights = field(default=LCAM_LOSS, metadata={"help": "The loss's weights (the paper's by default)."})

    def __post_init__(self) -> None:
        from volcam.methods.learned import VARIANTS

        for name, allowed in (("variant", VARIANTS), ("target", LCAM_TARGETS)):
            if getattr(self, name) not in allowed:
                given = one_line(str(getattr(self, name)))[:20]
                raise self._fail(name, f"{given!r}; give {' or '.join(allowed)}")
        for name in ("epochs", "batch_size", "patience"):
            self._set(name, _at_least(self, name, getattr(self, name), 1))
        self._set("lr", _non_negative(self, "lr", self.lr, "a learning rate"))
        if not 0.0 <= float(self.validation) <= 0.9:
            raise self._fail("validation", f"{self.validation}; give a fraction from 0 to 0.9")
        self._set("layer", _layer(self.layer) if self.layer else None)
        if isinstance(self.layer, tuple):
            raise self._fail("layer", "L-CAM trains at one layer")
