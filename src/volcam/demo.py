"""``volcam demo``: the shipped models on the shipped scans, through :func:`explain_to_folder`.

:func:`run_demo` is ``volcam demo``: the demo CT model on the sample chest CT (loaded from its DICOM
series) and the demo ultrasound model on the sample clip, with several methods each, scored against
the lesion masks that come with them.
Nothing is trained or downloaded: the weights are in ``sample_data/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from volcam.errors import FileFormatError

__all__ = ["CT_METHODS", "CT_VIT_METHODS", "LUS_METHODS", "run_demo"]

CT_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam")
CT_VIT_METHODS = ("gradcam", "rollout")  # the transformer's tokens laid back on its patch grid
LUS_METHODS = ("gradcam", "gradcam++", "layercam")


def _mask(path: Path) -> np.ndarray:
    import nibabel as nib

    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):  # the sample data's masks are .nii.gz
        raise FileFormatError(f"{path}: not a NIfTI mask (nibabel reads it as {type(image).__name__})")
    return np.asarray(image.dataobj)


def run_demo(out: str | Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The shipped demo: CT (a CNN and a vision transformer) and ultrasound, several methods each, into
    ``out/ct``, ``out/ct-transformer`` and ``out/ultrasound``."""
    import volcam
    from volcam import sample_data as sd
    from volcam.workflows.explain_folder import explain_to_folder

    out = Path(out)
    start = time.perf_counter()
    results = {}
    ct_model = volcam.load_model(sd.file(sd.CT_CARD))
    ct = volcam.load(sd.file(sd.CT_DICOM))
    probabilities = ct_model.predict(ct)
    echo(
        f"chest CT {'×'.join(map(str, ct.shape[1:]))} voxels at "
        f"{'×'.join(f'{s:g}' for s in ct.meta['spacing'])} mm (DICOM series): "
        + ", ".join(f"P({k}) = {v:.3f}" for k, v in probabilities.items())
    )
    results["ct"] = explain_to_folder(
        ct, ct_model, out / "ct", methods=CT_METHODS, target="covid", mask=_mask(sd.file(sd.CT_MASK)), progress=echo
    )
    vit_model = volcam.load_model(sd.file(sd.CT_VIT_CARD))
    probabilities = vit_model.predict(ct)
    echo("the same CT, a 3D vision transformer: " + ", ".join(f"P({k}) = {v:.3f}" for k, v in probabilities.items()))
    results["ct-transformer"] = explain_to_folder(
        ct, vit_model, out / "ct-transformer", methods=CT_VIT_METHODS, target="covid", mask=_mask(sd.file(sd.CT_MASK)),
        progress=echo,
    )  # fmt: skip
    lus_model = volcam.load_model(sd.file(sd.LUS_CARD))
    lus = volcam.load(sd.file(sd.LUS_DICOM))
    probabilities = lus_model.predict(lus)
    echo(
        f"lung ultrasound clip, {lus.shape[1]} frames at {lus.meta['frame_interval'] * 1000:g} ms: "
        + ", ".join(f"P({k}) = {v:.3f}" for k, v in probabilities.items())
    )
    results["ultrasound"] = explain_to_folder(
        lus,
        lus_model,
        out / "ultrasound",
        methods=LUS_METHODS,
        target="covid",
        mask=_mask(sd.file(sd.LUS_MASK)),
        progress=echo,
    )
    echo("")
    echo(f"{'':<16}{'method':<12}{'argmax in lesion':>18}{'energy in lesion':>18}{'lesion share':>14}")
    for part, summary in results.items():
        for record in summary["explanations"]:
            loc = record["localization"]
            echo(
                f"{part:<16}{record['method']:<12}{'yes' if loc['pointing_hit'] else 'no':>18}"
                f"{loc['energy_in_mask']:>18.1%}{loc['energy_baseline']:>14.1%}"
            )
    folders = ", ".join(f"{out / part}/*.png" for part in results)
    echo(f"\npictures: {folders} ({time.perf_counter() - start:.0f} s)")
    return results
