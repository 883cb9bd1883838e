"""File ▸ Open Sample ▸ volcam: the demo chest CT with its lesion mask, the demo lung-ultrasound clip."""

from __future__ import annotations

from napari_volcam._layers import mask_layer, scan_layer


def _scan_and_mask(scan_name: str, mask_name: str, name: str) -> list[tuple]:
    import volcam
    from volcam import sample_data

    scan = scan_layer(volcam.load(sample_data.file(scan_name)), name)
    mask = volcam.load(sample_data.file(mask_name))
    return [scan, mask_layer(mask, scan[1], f"{name} lesions")]


def demo_ct() -> list[tuple]:
    """The synthetic chest CT (DICOM series, 128 × 128 × 48 at 0.7 × 0.7 × 2.5 mm) and its lesion mask."""
    from volcam import sample_data

    return _scan_and_mask(sample_data.CT_DICOM, sample_data.CT_MASK, "demo chest CT")


def demo_ultrasound() -> list[tuple]:
    """The synthetic lung-ultrasound clip (24 frames, 0.1 s apart) and its B-line mask."""
    from volcam import sample_data

    return _scan_and_mask(sample_data.LUS_DICOM, sample_data.LUS_MASK, "demo lung ultrasound")
