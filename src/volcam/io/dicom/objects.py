"""A map as standard DICOM objects, built with highdicom: parametric map, segmentation, RGB overlay.

- :func:`parametric_map`: one multi-frame Parametric Map, float32 values as computed (0-1), a
  real-world value mapping naming method, class and layer (DICOM's "Class activation" quantity),
  frames on the source's frame of reference: OHIF overlays it on the CT with a colormap, 3D Slicer
  reads it.
- :func:`segmentation`: one multi-frame Segmentation: the map above a threshold (BINARY) or the map
  itself in 1/255 steps (FRACTIONAL).
- :func:`overlay_images`: the map coloured over the windowed image, one RGB Secondary Capture per
  slice, for a PACS that shows pictures only.

Each object shares the source's study, patient module and frame of reference, refers to the source
instances its frames come from, and records how it was made (:class:`Provenance`). Frames (and the
overlay's instance numbers) go in the order viewers stack them, ascending along the slice normal
(:func:`volcam.io.dicom.placement.viewer_order`). Nothing here touches files: the datasets are
written by :func:`volcam.io.write_dicom`.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from volcam.errors import InputError
from volcam.io.dicom.placement import Placement, viewer_order
from volcam.maps.colour import colour_at
from volcam.maps.result import MapInfo

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["KINDS", "THRESHOLDS", "Provenance", "overlay_images", "parametric_map", "segmentation"]

#: The objects a map can be written as, and the series number each adds to its source's.
KINDS = {"parametric-map": 2000, "segmentation": 3000, "overlay": 1000}
#: Each kind's default threshold on the map (0 to 1): a parametric map stores values at or below it as 0
#: (OHIF colours every positive value, and its slab rendering makes even 0.03 a tint over the whole
#: CT), a segmentation holds what exceeds it, an overlay colours only what exceeds it.
THRESHOLDS = {"parametric-map": 0.1, "segmentation": 0.5, "overlay": 0.05}
MANUFACTURER = "volcam"  # also how write_dicom tells its own output folders from a user's


def _lo(text: str) -> str:
    """Text as one DICOM long string (LO): no backslash (a value separator) or control character, 64 at most."""
    return re.sub(r"[\\\x00-\x1f]", " ", text)[:64]


@dataclass(frozen=True)
class Provenance:
    """How a map was made, as the text fields of a derived DICOM object.

    Attributes:
        info: what the map explains (method, layer, class, score, model card and options).
        version: volcam's version.
    """

    info: MapInfo
    version: str

    @property
    def method(self) -> str:
        return self.info.method or "map"

    def series_description(self, kind: str) -> str:
        """SeriesDescription (64 characters at most), e.g. ``volcam gradcam map 'covid' ct_covid``."""
        what = {"parametric-map": "map", "segmentation": "seg", "overlay": "overlay"}[kind]
        label = f" '{self.info.label}'" if self.info.label is not None else ""
        model = f" {self.info.model}" if self.info.model else ""
        return _lo(f"volcam {self.method} {what}{label}{model}")

    @property
    def label(self) -> str:
        """ContentLabel / LUTLabel: a DICOM code string (16 characters of A-Z, 0-9, _)."""
        return (re.sub(r"[^A-Z0-9_]", "_", self.method.upper().replace("++", "PP").replace("+", "P")) or "MAP")[:16]

    @property
    def content(self) -> str:
        """ContentDescription / LUTExplanation (64 characters): method, class and layer."""
        parts = [self.method]
        if self.info.label is not None:
            parts.append(f"class '{self.info.label}'")
        if self.info.layer:
            parts.append(f"layer {self.info.layer}")
        return _lo(", ".join(parts))

    @property
    def software_versions(self) -> list[str]:
        """SoftwareVersions: volcam's, highdicom's, and the model card's name with its hash's start."""
        import highdicom

        versions = [f"volcam {self.version}", f"highdicom {highdicom.__version__}"]
        if self.info.model:
            digest = f" sha256:{self.info.model_sha256[:16]}" if self.info.model_sha256 else ""
            versions.append(_lo(f"model {self.info.model[: 64 - 6 - len(digest)]}{digest}"))
        return versions

    def parameters(self) -> dict[str, str]:
        """Method, layer, class, model card (name and SHA-256) and options, as text."""
        info = self.info
        found = {
            "method": info.method,
            "layer": info.layer,
            "target": info.label,
            "score": None if info.score is None else f"{info.score:.4g}",
            "probability": None if info.probability is None else f"{info.probability:.4g}",
            "model_card": info.model,
            "model_card_sha256": info.model_sha256,
        }
        found.update({f"option {name}": value for name, value in info.options})
        return {name: value for name, value in found.items() if value is not None}

    def derivation(self, detail: str) -> str:
        """DerivationDescription (1024 characters at most): everything above in one sentence, and ``detail``."""
        said = ", ".join(f"{name} {value}" for name, value in self.parameters().items() if name != "method")
        text = f"Class activation map ({self.method}) by volcam {self.version}" + (f": {said}" if said else "")
        return f"{text}. {detail} Research output, not for diagnosis."[:1024]


@contextlib.contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom's warnings silenced: they can quote the patient's name (a "dubious" person name), which
    must not reach a log; what they say about the source is the source's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")
        yield


def _common(placement: Placement, provenance: Provenance, kind: str, series_number: int | None) -> dict[str, Any]:
    """The constructor arguments every highdicom object here shares."""
    from pydicom.uid import generate_uid

    first = placement.first
    if series_number is None:
        try:
            base = int(first.get("SeriesNumber") or 0)
        except (TypeError, ValueError):
            base = 0
        series_number = base + KINDS[kind]
    return {
        "series_instance_uid": generate_uid(),
        "series_number": series_number,
        "manufacturer": MANUFACTURER,
        "software_versions": provenance.software_versions,
        "series_description": provenance.series_description(kind),
    }


def _plane_arguments(placement: Placement) -> dict[str, Any]:
    """Frame positions, orientation and pixel measures as highdicom takes them."""
    import highdicom

    spacing = [float(v) for v in placement.pixel_spacing]
    return {
        "plane_positions": [
            highdicom.PlanePositionSequence("PATIENT", [float(v) for v in position]) for position in placement.positions
        ],
        "plane_orientation": highdicom.PlaneOrientationSequence("PATIENT", [float(v) for v in placement.orientation]),
        "pixel_measures": highdicom.PixelMeasuresSequence(spacing, placement.thickness),
    }


_POSITION = 0x00200032  # ImagePositionPatient, the spatial dimension of a multi-frame object
_SAME_PLANE_MM = 1e-4  # frames of several segments on one plane share its position


def _reorder_pixels(ds: Dataset, order: np.ndarray) -> None:
    """The native (uncompressed) frames of ``ds`` rearranged so that frame ``k`` is the old frame
    ``order[k]``; 1-bit frames (a BINARY segmentation) are packed without padding between them."""
    keyword = next(k for k in ("FloatPixelData", "DoubleFloatPixelData", "PixelData") if k in ds)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        raise RuntimeError("frames of a compressed object cannot be reordered")  # volcam writes them native
    count, pixels = len(order), int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    stored = np.frombuffer(ds[keyword].value, dtype=np.uint8)
    if int(ds.BitsAllocated) == 1:
        bits = np.unpackbits(stored, count=count * pixels, bitorder="little").reshape(count, pixels)
        data = np.packbits(bits[order], bitorder="little").tobytes()
    else:  # one copy of the frames, straight into the new value
        size = pixels * int(ds.BitsAllocated) // 8
        data = b"".join(stored[i * size : (i + 1) * size].data for i in order)
    ds[keyword].value = data + b"\0" if len(data) % 2 else data  # DICOM values have even length


def _in_viewer_order(ds: Dataset) -> Dataset:
    """``ds``, a multi-frame object from highdicom (which sorts frames descending along the normal),
    with its frames in :func:`viewer_order`, in place: per-frame functional groups (positions,
    source references), pixel data, and the position dimension's index values, renumbered so that
    index ``k`` is the ``k``-th plane along the normal. Other dimensions (a segment number) keep
    their precedence: a segmentation's frames stay grouped by segment."""
    items = list(ds.PerFrameFunctionalGroupsSequence)
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    positions = np.array([item.PlanePositionSequence[0].ImagePositionPatient for item in items], dtype=float)
    along = viewer_order(positions, np.asarray(orientation, dtype=float))
    new_plane = np.any(np.abs(np.diff(positions[along], axis=0)) > _SAME_PLANE_MM, axis=1)
    plane = np.empty(len(items), dtype=int)
    plane[along] = np.cumsum(np.concatenate([[1], new_plane]))  # 1-based plane number along the normal
    pointers = [int(dimension.DimensionIndexPointer) for dimension in ds.DimensionIndexSequence]
    indices = np.array(
        [np.atleast_1d(item.FrameContentSequence[0].DimensionIndexValues) for item in items], dtype=np.int64
    ).reshape(len(items), len(pointers))
    indices[:, pointers.index(_POSITION)] = plane
    order = np.lexsort(indices.T[::-1])  # by the first dimension, then the next ...
    for item, values in zip(items, indices, strict=True):
        item.FrameContentSequence[0].DimensionIndexValues = (
            [int(v) for v in values] if len(pointers) > 1 else int(values[0])
        )
    if not np.array_equal(order, np.arange(len(items))):
        ds.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
        _reorder_pixels(ds, order)
    return ds


def _finish(ds: Dataset, placement: Placement, provenance: Provenance, detail: str) -> Dataset:
    """What highdicom leaves to the caller: frames in the order viewers stack them, the derivation
    description, and no reference at all to a stand-in source (a scan that was not DICOM)."""
    _in_viewer_order(ds)
    ds.DerivationDescription = provenance.derivation(detail)
    if placement.stand_in:
        for keyword in ("SourceImageSequence", "ReferencedSeriesSequence"):
            if keyword in ds:
                del ds[keyword]
        for item in ds.get("PerFrameFunctionalGroupsSequence", []):
            item.DerivationImageSequence = []
    return ds


def parametric_map(
    placement: Placement,
    provenance: Provenance,
    threshold: float = THRESHOLDS["parametric-map"],
    series_number: int | None = None,
) -> Dataset:
    """The map as one multi-frame Parametric Map (float32, values as computed, those at or below
    ``threshold`` as 0; a real-world value mapping of slope 1 over their range, which is 0 to 1 for
    every volcam map).

    The threshold is for the viewers: OHIF's parametric map viewport reads no window, LUT or palette
    from the object (rainbow colormap, opacity rising with the value, window 0-1, all in its code), so
    the values alone decide where the CT stays clear. ``threshold=0`` keeps every value."""
    import highdicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold={threshold}: a parametric map's threshold lies in [0, 1)")
    frames = placement.frames
    if threshold > 0.0:
        frames = np.where(frames > threshold, frames, np.float32(0.0))
    low, high = float(frames.min()), float(frames.max())
    mapping = highdicom.pm.RealWorldValueMapping(
        lut_label=provenance.label,
        lut_explanation=provenance.content,
        unit=codes.UCUM.NoUnits,
        value_range=(min(0.0, low), max(1.0, high)),
        slope=1.0,
        intercept=0.0,
        quantity_definition=codes.DCM.ClassActivation,
    )
    with _quiet_highdicom():
        pm = highdicom.pm.ParametricMap(
            source_images=placement.references,
            pixel_array=frames,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer_model_name=MANUFACTURER,
            device_serial_number=provenance.version,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[highdicom.VOILUTTransformation(window_center=0.5, window_width=1.0)],
            content_label=provenance.label,
            content_description=provenance.content,
            content_creator_name=f"{MANUFACTURER}^",
            **_common(placement, provenance, "parametric-map", series_number),
            **_plane_arguments(placement),
        )
    pm.Laterality = placement.first.get("Laterality")  # General Series, Type 2C: the source's, else empty
    detail = "Map values 0 to 1 as computed (float), high where the evidence is" + (
        f"; values at or below {threshold:g} stored as 0, so that viewers leave the image clear there."
        if threshold
        else "."
    )
    return _finish(pm, placement, provenance, detail)


def segmentation(
    placement: Placement,
    provenance: Provenance,
    threshold: float = THRESHOLDS["segmentation"],
    fractional: bool = False,
    series_number: int | None = None,
) -> Dataset:
    """The map as one multi-frame Segmentation of one segment: BINARY where the map exceeds
    ``threshold``, or FRACTIONAL (the map itself, in steps of 1/255; ``threshold`` unused)."""
    import highdicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    frames = placement.frames
    if fractional:
        if float(frames.min()) < 0.0 or float(frames.max()) > 1.0:
            raise InputError("a fractional segmentation holds map values in [0, 1]; this map leaves that range")
        pixels, kind, detail = frames, "FRACTIONAL", "The map itself as a fractional segment (steps of 1/255)."
    else:
        if not 0.0 <= threshold < 1.0:
            raise InputError(f"threshold={threshold}: a segmentation threshold lies in [0, 1)")
        pixels, kind, detail = frames > threshold, "BINARY", f"Segment: where the map exceeds {threshold:g}."
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name=_lo(f"volcam {provenance.method}"),
        family=codes.cid7162.ArtificialIntelligence,
        version=provenance.version,
        parameters={**provenance.parameters(), **({} if fractional else {"threshold": f"{threshold:g}"})},
    )
    label = f"{provenance.method} '{provenance.info.label}'" if provenance.info.label is not None else provenance.method
    # Viewers colour a segment as it recommends (OHIF warns and picks one when it does not): the colour
    # volcam's overlay gives the values the segment holds, at their middle.
    colour = colour_at(0.75 if fractional else (1.0 + threshold) / 2.0)
    segment = highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label=_lo(label + ("" if fractional else f" > {threshold:g}")),
        segmented_property_category=codes.SCT.SpatialAndRelationalConcept,
        segmented_property_type=codes.DCM.ClassActivation,
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=highdicom.color.CIELabColor.from_rgb(*colour),
    )
    with _quiet_highdicom():
        seg = highdicom.seg.Segmentation(
            source_images=placement.references,
            pixel_array=pixels,
            segmentation_type=kind,
            segment_descriptions=[segment],
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer_model_name=MANUFACTURER,
            device_serial_number=provenance.version,
            content_label=provenance.label,
            content_description=provenance.content,
            content_creator_name=f"{MANUFACTURER}^",
            **_common(placement, provenance, "segmentation", series_number),
            **_plane_arguments(placement),
        )
    return _finish(seg, placement, provenance, detail)


def _orientation_letters(orientation: np.ndarray) -> tuple[str, str]:
    """PatientOrientation of a slice: the patient direction each of its row and column points to most."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))  # LPS: +x is left, +y posterior, +z head
    found = []
    for direction in (orientation[:3], orientation[3:]):
        axis = int(np.argmax(np.abs(direction)))
        found.append(letters[axis][int(direction[axis] > 0)])
    return found[0], found[1]


def overlay_images(
    placement: Placement, pixels: Iterator[np.ndarray], provenance: Provenance, series_number: int | None = None
) -> Iterator[Dataset]:
    """One RGB Secondary Capture per slice from ``pixels`` (blocks ``(n, rows, columns, 3)`` uint8 in
    slice order), each carrying its slice's position, orientation and frame of reference (extra to the
    SC IOD, for viewers that place it) and a reference to the source slice it shows."""
    import highdicom
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    common = _common(placement, provenance, "overlay", series_number)
    orientation = [float(v) for v in placement.orientation]
    letters = _orientation_letters(placement.orientation)
    first = placement.first
    derivation = provenance.derivation("The map coloured over the windowed image.")
    # What SCImage.from_ref_dataset takes from the source, taken once: per slice it costs more than the slice.
    patient = {
        keyword: first.get(name)
        for keyword, name in (
            ("patient_id", "PatientID"),
            ("patient_name", "PatientName"),
            ("patient_birth_date", "PatientBirthDate"),
            ("patient_sex", "PatientSex"),
            ("accession_number", "AccessionNumber"),
            ("study_id", "StudyID"),
            ("study_date", "StudyDate"),
            ("study_time", "StudyTime"),
            ("referring_physician_name", "ReferringPhysicianName"),
            ("specific_character_set", "SpecificCharacterSet"),
        )
    }
    try:
        equipment = [highdicom.ContributingEquipment.for_image_acquisition(first)]
    except Exception:  # a source that does not say what acquired it
        equipment = []
    k = 0
    for block in pixels:
        for rgb in block:
            with _quiet_highdicom():
                sc = highdicom.sc.SCImage(
                    pixel_array=rgb,
                    photometric_interpretation="RGB",
                    bits_allocated=8,
                    coordinate_system="PATIENT",
                    study_instance_uid=first.StudyInstanceUID,
                    sop_instance_uid=generate_uid(),
                    instance_number=k + 1,
                    pixel_spacing=placement.pixel_spacing,
                    patient_orientation=letters,
                    transfer_syntax_uid=ExplicitVRLittleEndian,
                    contributing_equipment=equipment,
                    **patient,
                    **common,
                )
            sc.Laterality = first.get("Laterality")
            sc.BurnedInAnnotation = "NO"
            sc.DerivationDescription = derivation
            sc.FrameOfReferenceUID = first.FrameOfReferenceUID
            sc.ImagePositionPatient = [float(v) for v in placement.positions[k]]
            sc.ImageOrientationPatient = orientation
            if placement.source_slices and not placement.stand_in:
                numbers = placement.frame_numbers
                source = first if numbers is not None else placement.references[k]
                reference = Dataset()
                reference.ReferencedSOPClassUID = source.SOPClassUID
                reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
                if numbers is not None:
                    reference.ReferencedFrameNumber = int(numbers[k])
                sc.SourceImageSequence = [reference]
            yield sc
            k += 1
