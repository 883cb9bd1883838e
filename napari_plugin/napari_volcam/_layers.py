"""Scans and maps as napari layer data: the geometry and grey range come from :mod:`volcam.viz.display`.

A layer made here keeps what the widget and the writer need in its ``metadata``: ``volcam`` (plain
values: geometry, modality, series description, spacing; no patient identifier) and ``volcam_scan``
(the loaded scan itself, whose array the layer's data is a view of, so nothing is copied).

A map on the network's grid (:meth:`volcam.ScanSession.explain` with ``on="network"``) is shown in
its own display order through an ``affine`` that places it over the scan's layer
(:meth:`volcam.viz.display.DisplayGeometry.placing`): a change of class or method resamples nothing.
Its layer keeps the explanation (``volcam_explanation``), whose scan-grid map a writer asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from monai.data import MetaTensor

SCAN_KEY = "volcam_scan"
BUILT_KEY = "volcam_built_scan"  # (data, (scale, translate), scan): the scan of the layer's data, and what from
INFO_KEY = "volcam"
RESULT_KEY = "volcam_result"
EXPLANATION_KEY = "volcam_explanation"
COLORMAPS = ("turbo", "jet", "inferno")


def layer_name(meta: dict[str, Any]) -> str:
    """A name from the modality and series description only (file names may hold patient names)."""
    kind = "clip" if meta.get("axes") == "thw" else "volume"
    description = str(meta.get("series_description") or "").strip()
    return f"{meta.get('modality') or 'OT'} {description or kind}"


def scan_layer(scan: MetaTensor, name: str | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """A loaded scan ``(C, *S)`` → napari ``(data, kwargs, "image")`` in the display orientation."""
    from volcam.viz.display import display_geometry, display_limits

    geometry = display_geometry(scan)
    meta = dict(scan.meta)
    values = scan.as_tensor().numpy()
    rgb = values.shape[0] == 3
    data = geometry.to_display(np.moveaxis(values, 0, -1) if rgb else values[0])
    if rgb:  # colour ultrasound: napari shows RGB as 0..255 bytes
        data = np.clip(data, 0, 255).astype(np.uint8)
    clip = geometry.axes == "tyx"
    modality = str(meta.get("modality") or "OT")
    info = {
        "geometry": geometry.as_metadata(),
        "modality": modality,
        "series_description": str(meta.get("series_description") or ""),
        "spacing": [float(v) for v in meta.get("spacing", geometry.scale)],
        "axes": str(meta.get("axes") or geometry.axes),
        "frame_interval": meta.get("frame_interval"),
        "problems": [str(p) for p in meta.get("problems", [])],
        "orientation": "time, rows, columns" if clip else "axial, radiological (S, P, L in LPS mm)",
    }
    kwargs: dict[str, Any] = {
        "name": name or layer_name(meta),
        "scale": geometry.scale,
        "translate": geometry.translate,
        "metadata": {INFO_KEY: info, SCAN_KEY: scan},
        "rgb": rgb,
        "axis_labels": ("t", "y", "x") if clip else ("S", "P", "L"),
        "units": ("s", "mm", "mm") if clip else ("mm", "mm", "mm"),
    }
    if not rgb:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = display_limits(data, modality)
    return data, kwargs, "image"


def mask_layer(mask: Any, like: dict[str, Any], name: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """A lesion mask on a scan's grid (loaded like it) → a Labels layer over that scan's layer kwargs."""
    from volcam.viz.display import DisplayGeometry

    geometry = DisplayGeometry.from_metadata(like["metadata"][INFO_KEY]["geometry"])
    values = mask.as_tensor().numpy() if hasattr(mask, "as_tensor") else np.asarray(mask)
    if values.ndim == len(geometry.shape) + 1:
        values = values[0]
    data = geometry.to_display(np.rint(values).astype(np.int32))
    kwargs = {
        "name": name,
        "scale": like["scale"],
        "translate": like["translate"],
        "opacity": 0.4,
        "units": like["units"],
        "axis_labels": like["axis_labels"],
        "metadata": {INFO_KEY: {"geometry": like["metadata"][INFO_KEY]["geometry"], "kind": "mask"}},
    }
    return data, kwargs, "labels"


def scan_of(layer: Any) -> Any:
    """The scan behind an image layer: the one it was read from while the layer holds the data it was read
    with, else one built from its data and scale, once per data object, scale and translation (kept in
    the layer's metadata with what it was made from, so the dock's session of the layer keeps its
    forward across class and method switches, and a new one is made when the data changes). The data
    keeps its stored type: no float copy."""
    place = (tuple(np.asarray(layer.scale, float)), tuple(np.asarray(layer.translate, float)))
    read = layer.metadata.get(SCAN_KEY)
    kept = layer.metadata.get(BUILT_KEY)
    if kept is not None and kept[0] is layer.data and (read is not None or kept[1] == place):
        return kept[2]
    if read is not None and kept is None:  # first asked: the data is what volcam read (a view of the scan)
        layer.metadata[BUILT_KEY] = (layer.data, place, read)
        return read
    from volcam.errors import InputError
    from volcam.io.image import LPS_TO_RAS, make_volume

    data = np.asarray(layer.data)
    if data.ndim != 3 or layer.rgb:
        raise InputError(f"layer {layer.name!r}: a grey 3D volume is needed, this one has shape {data.shape}")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        data = data.astype(np.float32)
    scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
    lps = np.eye(4)  # displayed (S, P, L) → source (L, P, S) voxel order, LPS world
    for source, display in enumerate((2, 1, 0)):
        lps[source, source] = scale[display]
        lps[source, 3] = translate[display]
    volume = np.transpose(data, (2, 1, 0))[None]  # a view
    scan = make_volume(volume, LPS_TO_RAS @ lps, path=layer.name, modality=None)
    layer.metadata[BUILT_KEY] = (layer.data, place, scan)  # the data itself: its id is never reused meanwhile
    return scan


def map_colours(name: str, threshold: float, values: np.ndarray) -> np.ndarray:
    """RGBA of ``values`` in [0, 1]: the colormap ``name``, its alpha rising with the value (0 at 0,
    1 at 1) and 0 below ``threshold``, so the scan shows through where the map is low."""
    from matplotlib import colormaps

    colours = colormaps[name](values)
    colours[:, 3] = np.clip(values, 0.0, 1.0)
    colours[values < threshold, 3] = 0.0
    return colours


def threshold_colormap(name: str, threshold: float) -> Any:
    """A napari colormap for translucent blending: ``name`` (turbo/jet/inferno) with an alpha ramp
    (:func:`map_colours`), transparent below ``threshold``; the layer's opacity is the alpha at 1."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        map_colours(name, threshold, np.linspace(0.0, 1.0, 256)),
        name=f"volcam {name} > {threshold:.2f}",
        interpolation="zero",
    )


def map_view(explanation: Any, scan_geometry: Any) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """A scan explanation's map as a layer shows it: ``(data, geometry, affine)``.

    On the scan's grid: the scan's display order, and ``affine`` ``None`` (the scan layer's
    scale/translate place it). On the network's grid: the network grid's own display order, and the
    affine from that array's index to the scan layer's world (no resampling).
    """
    from volcam.viz.display import display_geometry

    values = explanation.map[0].detach().cpu().numpy()
    if getattr(explanation, "grid", "scan") != "network":
        return np.ascontiguousarray(scan_geometry.to_display(values)), scan_geometry, None
    geometry = display_geometry(explanation.map)
    return np.ascontiguousarray(geometry.to_display(values)), geometry, scan_geometry.placing(geometry)


def cam_layer_kwargs(
    like: Any, name: str, colormap: str, threshold: float, opacity: float, affine: Any = None
) -> dict[str, Any]:
    """Display settings of a map over the image layer ``like``: placed by ``like``'s scale/translate
    (a map on the scan's grid) or by ``affine`` (one on the network's grid), translucent, fixed 0..1."""
    place: dict[str, Any] = (
        {"scale": tuple(like.scale), "translate": tuple(like.translate)}
        if affine is None
        else {"affine": np.asarray(affine, dtype=np.float64)}
    )
    return {
        "name": name,
        **place,
        "units": tuple(like.units),
        "axis_labels": tuple(like.axis_labels),
        "colormap": threshold_colormap(colormap, threshold),
        "blending": "translucent",
        "contrast_limits": (0.0, 1.0),
        "opacity": opacity,
        "interpolation2d": "linear",
    }
