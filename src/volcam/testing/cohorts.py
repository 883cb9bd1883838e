"""Synthetic cohorts: phantom chest CTs as NIfTI files or DICOM series with lesion masks (and lung masks)
and a manifest, for tests, examples and benchmarks of :func:`volcam.run_cohort` and ``volcam validate``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from volcam.testing.phantoms import CtPhantom

__all__ = ["HELD_OUT_SEED", "held_out_cohort", "held_out_seeds", "synthetic_cohort"]

#: The demo models' held-out phantoms are ``chest_ct(HELD_OUT_SEED + i)`` for i < 60; the odd i are COVID.
HELD_OUT_SEED = 9000


def synthetic_cohort(
    folder: str | os.PathLike,
    n: int = 20,
    *,
    seed: int = 7000,
    shape: tuple[int, int, int] = (64, 64, 24),
    spacing: tuple[float, float, float] = (1.4, 1.4, 5.0),
    dicom: bool = False,
    lungs: bool = False,
) -> Path:
    """Write ``n`` chest-CT phantoms (alternately normal and COVID) with masks and a ``manifest.csv``.

    For trying cohorts out, tests and benchmarks. The default grid covers the phantoms' usual
    90 × 90 × 120 mm at a quarter of the voxels. ``dicom=True`` writes each scan as a DICOM series
    folder instead of NIfTI; ``lungs=True`` adds each phantom's lung fields as ``<case>_lungs.nii.gz``
    in the manifest's ``region`` column. Returns the manifest's path.
    """
    from volcam.testing.phantoms import chest_ct

    phantoms = [
        (f"case{i:03d}", seed + i, chest_ct(seed + i, covid=bool(i % 2), shape=shape, spacing=spacing))
        for i in range(n)
    ]
    return _write(Path(folder), phantoms, dicom=dicom, lungs=lungs)


def held_out_seeds(n: int = 30) -> list[int]:
    """The seeds of the first ``n`` (at most 30) held-out COVID phantoms the demo CT models were scored on
    (``sample_data/train_demo_models.py``; ``benchmarks/faithfulness.py`` draws the same)."""
    return [HELD_OUT_SEED + i for i in range(1, 2 * n, 2)]


def held_out_cohort(
    folder: str | os.PathLike,
    n: int = 30,
    *,
    shape: tuple[int, int, int] = (128, 128, 48),
    spacing: tuple[float, float, float] = (0.7, 0.7, 2.5),
) -> Path:
    """Write the demo models' held-out COVID phantoms (:func:`held_out_seeds`, at the size the benchmarks
    score them) as NIfTI with their lesion and lung masks and a ``manifest.csv`` (case ``ct<seed>``, label
    ``covid``, ``region`` the lungs). Returns the manifest's path."""
    from volcam.testing.phantoms import chest_ct

    phantoms = [(f"ct{s}", s, chest_ct(s, covid=True, shape=shape, spacing=spacing)) for s in held_out_seeds(n)]
    return _write(Path(folder), phantoms, dicom=False, lungs=True)


def _write(folder: Path, phantoms: Sequence[tuple[str, int, CtPhantom]], *, dicom: bool, lungs: bool) -> Path:
    """Each ``(case id, seed, phantom)`` as a scan, a lesion mask (and the lungs), then the manifest."""
    import numpy as np

    from volcam.io.nifti import save_nifti
    from volcam.testing.phantoms import CT_LABELS, write_ct_dicom

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["case,image,mask,label" + (",region" if lungs else "")]
    for case_id, seed, phantom in phantoms:
        if dicom:
            write_ct_dicom(phantom, folder / case_id, key=seed)
            image = case_id
        else:
            image = f"{case_id}.nii.gz"
            save_nifti(phantom.image.astype(np.float32), phantom.affine, folder / image)
        save_nifti(phantom.mask.astype(np.float32), phantom.affine, folder / f"{case_id}_mask.nii.gz")
        line = f"{case_id},{image},{case_id}_mask.nii.gz,{CT_LABELS[phantom.label]}"
        if lungs:
            save_nifti(phantom.lungs.astype(np.uint8), phantom.affine, folder / f"{case_id}_lungs.nii.gz")
            line += f",{case_id}_lungs.nii.gz"
        lines.append(line)
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
