"""Synthetic cohorts: phantom chest CTs as DICOM series with lesion masks and a manifest, for tests,
examples and benchmarks of :func:`volcam.run_cohort`."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["synthetic_cohort"]


def synthetic_cohort(
    folder: str | os.PathLike,
    n: int = 20,
    *,
    seed: int = 7000,
    shape: tuple[int, int, int] = (64, 64, 24),
    spacing: tuple[float, float, float] = (1.4, 1.4, 5.0),
    dicom: bool = False,
) -> Path:
    """Write ``n`` chest-CT phantoms (alternately normal and COVID) with masks and a ``manifest.csv``.

    For trying cohorts out, tests and benchmarks. The default grid covers the phantoms' usual
    90 × 90 × 120 mm at a quarter of the voxels. ``dicom=True`` writes each scan as a DICOM series
    folder instead of NIfTI. Returns the manifest's path.
    """
    import numpy as np

    from volcam.io.nifti import save_nifti
    from volcam.testing.phantoms import CT_LABELS, chest_ct, write_ct_dicom

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["case,image,mask,label"]
    for i in range(n):
        phantom = chest_ct(seed + i, covid=bool(i % 2), shape=shape, spacing=spacing)
        case_id = f"case{i:03d}"
        if dicom:
            write_ct_dicom(phantom, folder / case_id, key=seed + i)
            image = case_id
        else:
            image = f"{case_id}.nii.gz"
            save_nifti(phantom.image.astype(np.float32), phantom.affine, folder / image)
        save_nifti(phantom.mask.astype(np.float32), phantom.affine, folder / f"{case_id}_mask.nii.gz")
        lines.append(f"{case_id},{image},{case_id}_mask.nii.gz,{CT_LABELS[phantom.label]}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
