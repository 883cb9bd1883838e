"""Writers: a map layer back into its source's geometry, as NIfTI or as DICOM (parametric map, segmentation, overlay).

A map shown on the network's grid is written at the scan's full resolution: its explanation carries
it back to the scan's grid here, when a file asks for it (:meth:`volcam.ScanExplanation.to_scan`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_volcam._layers import EXPLANATION_KEY, INFO_KEY, RESULT_KEY, SCAN_KEY


def _source_map(data: Any, attributes: dict) -> tuple[Any, dict]:
    """The layer's data in the source's voxel order, as a MetaTensor with the source's affine."""
    import torch
    from monai.data import MetaTensor

    from volcam.errors import InputError
    from volcam.viz.display import DisplayGeometry

    metadata = attributes.get("metadata") or {}
    info = metadata.get(INFO_KEY)
    if not info or "geometry" not in info:
        raise InputError("this layer was not read or made by volcam, so its source geometry is unknown")
    if info.get("grid") == "network":  # shown on the network's grid: the scan-grid map, made now
        explanation = metadata.get(EXPLANATION_KEY)
        if explanation is None:
            raise InputError("this map layer lost the explanation it was made from; explain the scan again")
        return explanation.to_scan().map, metadata
    geometry = DisplayGeometry.from_metadata(info["geometry"])
    values = np.ascontiguousarray(geometry.to_source(np.asarray(data, dtype=np.float32)))
    return MetaTensor(torch.from_numpy(values), affine=torch.tensor(geometry.affine, dtype=torch.float64)), metadata


def _sources(metadata: dict) -> list[Path]:
    """The files the layer's scan was read from: a writer never replaces them nor writes inside them."""
    from volcam.io.atomic import source_paths

    return source_paths(metadata.get(SCAN_KEY))


def write_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a map layer as NIfTI on its source's grid and affine (``.nii`` / ``.nii.gz``)."""
    from napari.utils.notifications import show_error

    from volcam.errors import VolcamError, one_line
    from volcam.io.write import write_nifti as write

    try:
        cam, metadata = _source_map(data, attributes)
        written = write(cam, path, result=metadata.get(RESULT_KEY), inputs=_sources(metadata))
    except VolcamError as error:
        show_error(f"volcam cannot save {Path(path).name}: {one_line(str(error))}")
        return []
    return [str(written)]


def _write_dicom(path: str, data: Any, attributes: dict, kind: str) -> list[str]:
    """Save a map layer as a DICOM object of ``kind`` on its scan's study and frame of reference, into
    the folder ``path`` minus ``.dcm``; napari is told the instance files written."""
    from napari.utils.notifications import show_error

    from volcam.errors import VolcamError, one_line
    from volcam.io.dicom.instances import dicom_instances
    from volcam.io.write import write_dicom as write

    folder = Path(path)
    folder = folder.with_suffix("") if folder.suffix.lower() == ".dcm" else folder
    try:
        cam, metadata = _source_map(data, attributes)
        scan = metadata.get(SCAN_KEY)
        if scan is None:
            raise VolcamError("a DICOM object needs the scan the map was computed on; explain it in napari first")
        explanation = metadata.get(EXPLANATION_KEY)
        result = explanation.to_scan() if explanation is not None else metadata.get(RESULT_KEY)
        written = write(cam, folder, scan, result=result, kind=kind, overwrite=True, inputs=_sources(metadata))
    except VolcamError as error:
        show_error(f"volcam cannot save {folder.name}: {one_line(str(error))}")
        return []
    return [str(p) for p in dicom_instances(written)]


def write_parametric_map(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a map layer as a DICOM Parametric Map (the map 0-1; OHIF and 3D Slicer overlay it on the scan)."""
    return _write_dicom(path, data, attributes, "parametric-map")


def write_segmentation(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a map layer as a DICOM Segmentation (where the map exceeds 0.5)."""
    return _write_dicom(path, data, attributes, "segmentation")


def write_overlay(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a map layer as RGB secondary captures (the map coloured over the scan, one image per slice)."""
    return _write_dicom(path, data, attributes, "overlay")
