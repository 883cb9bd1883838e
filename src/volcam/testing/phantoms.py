"""Phantoms with ground truth: chest CT with COVID-like lesions, lung-ultrasound clips with biomarkers.

Everything is drawn from one seed (``numpy.random.default_rng(seed)``), so a phantom is the same on
every machine. Anatomy is placed in patient space (RAS+, mm) and sampled on the voxel grid; a CT is
drawn in LPS voxel order and flipped to the orientation asked for, so the same seed gives the same
patient, voxel for voxel, in any orientation.

- :func:`chest_ct`: a miniature chest (body, fat, lungs at about −850 HU, vessels, spine, noise) on a
  ``(X, Y, Z)`` grid, 0.7×0.7×2.5 mm and LPS voxel order by default (as a DICOM series loads);
  ``covid=True`` adds 1-4 ground-glass opacities / consolidations, returned as a label mask.
- :func:`lung_ultrasound`: a linear-probe B-mode clip ``(T, H, W)`` (speckle, pleural line that
  slides, rib shadow, A-lines of varying strength); COVID clips add B-lines and sometimes a subpleural
  consolidation, with a mask of where they are.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from volcam.io.atomic import atomic_file, atomic_folder
from volcam.io.dicom.instances import save_instance

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "CT_LABELS",
    "LUS_LABELS",
    "CtPhantom",
    "UltrasoundClip",
    "chest_ct",
    "lung_ultrasound",
    "write_ct_dicom",
    "write_ultrasound_dicom",
]

CT_LABELS = ("normal", "covid")
LUS_LABELS = ("healthy", "covid")
# Mask values of a CT phantom.
GROUND_GLASS, CONSOLIDATION = 1, 2
# Mask values of an ultrasound clip.
B_LINE, US_CONSOLIDATION = 1, 2


@dataclass(frozen=True)
class CtPhantom:
    """One chest-CT phantom.

    Attributes:
        image: ``(X, Y, Z)`` int16 HU, in the voxel order of ``affine``.
        mask: ``(X, Y, Z)`` uint8: 0 none, 1 ground-glass opacity, 2 consolidation.
        lungs: ``(X, Y, Z)`` bool lung fields (for energy baselines).
        affine: 4×4 voxel index → RAS+ mm.
        label: 0 normal, 1 covid (see :data:`CT_LABELS`).
    """

    image: np.ndarray
    mask: np.ndarray
    lungs: np.ndarray
    affine: np.ndarray
    label: int

    @property
    def spacing(self) -> tuple[float, float, float]:
        """mm per voxel along each array axis."""
        sx, sy, sz = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(sx), float(sy), float(sz)

    def metatensor(self) -> MetaTensor:
        """The image as :func:`volcam.load` would return it: ``(1, X, Y, Z)`` float32 HU MetaTensor."""
        from volcam.io.image import make_volume

        return make_volume(self.image[None].astype(np.float32), self.affine, path="synthetic-chest-ct", modality="CT")


@dataclass(frozen=True)
class UltrasoundClip:
    """One lung-ultrasound clip.

    Attributes:
        frames: ``(T, H, W)`` uint8 B-mode, rows = depth.
        mask: ``(T, H, W)`` uint8: 0 none, 1 B-line, 2 subpleural consolidation.
        frame_interval: seconds between frames.
        pixel_spacing: (row, column) mm.
        label: 0 healthy, 1 covid (see :data:`LUS_LABELS`).
        pleura_row: the pleural line's row (depth index) in the first frame.
    """

    frames: np.ndarray
    mask: np.ndarray
    frame_interval: float
    pixel_spacing: tuple[float, float]
    label: int
    pleura_row: int

    def metatensor(self) -> MetaTensor:
        """The clip as :func:`volcam.load` returns one: ``(1, T, H, W)`` float32 MetaTensor."""
        from volcam.io.image import make_clip

        return make_clip(
            self.frames[None].astype(np.float32),
            path="synthetic-lung-ultrasound",
            modality="US",
            frame_interval=self.frame_interval,
            pixel_spacing=self.pixel_spacing,
            problems=[],
        )


# -- shared helpers ---------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-std smooth noise on ``shape``: random values on a ``coarse`` grid, interpolated.

    Cheap stand-in for Gaussian-filtered noise (one small random grid and a (tri)linear resize).
    """
    grid = torch.from_numpy(rng.standard_normal((1, 1, *coarse)).astype(np.float32))
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    field = F.interpolate(grid, size=shape, mode=mode, align_corners=True)[0, 0].numpy()
    return (field - field.mean()) / (field.std() + 1e-6)


def _grid_affine(shape: tuple[int, ...], spacing: tuple[float, ...], orientation: str) -> np.ndarray:
    """4×4 RAS affine of a grid centred on the origin whose voxel axes run toward ``orientation``."""
    toward = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
    if len(orientation) != 3 or {toward[c][0] for c in orientation.upper()} != {0, 1, 2}:
        raise ValueError(f"orientation {orientation!r}: three letters, one of R/L, A/P, S/I each (e.g. 'LPS')")
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, code in enumerate(orientation.upper()):
        world, sign = toward[code]
        affine[world, axis] = sign * spacing[axis]
    centre = (np.asarray(shape, float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


# -- chest CT ---------------------------------------------------------------------------------------


def chest_ct(
    seed: int,
    covid: bool | None = None,
    *,
    shape: tuple[int, int, int] = (128, 128, 48),
    spacing: tuple[float, float, float] = (0.7, 0.7, 2.5),
    orientation: str = "LPS",
    noise_hu: float = 20.0,
) -> CtPhantom:
    """A chest-CT phantom with (``covid=True``) or without COVID-like lesions.

    Args:
        seed: everything random comes from it; ``covid=None`` draws the class from it too.
        shape: voxels per array axis.
        spacing: mm per voxel along each array axis (anisotropic like a clinical 2.5 mm CT).
        orientation: where the voxel axes point, e.g. ``"LPS"`` (a DICOM series as loaded) or ``"RAS"``;
            one letter per axis in x, y, z order (R/L, A/P, S/I).
        noise_hu: standard deviation of the image noise in HU.

    Returns:
        :class:`CtPhantom` with the image in HU and the lesion mask on the same grid.

    The field of view is small (``shape × spacing``, 90×90×120 mm by default), so the chest is a
    miniature: body ellipse, subcutaneous fat, two lungs, a mediastinum, a spine and vessels.
    Lesions sit inside the lungs, preferably at the periphery like COVID-19 ground-glass.
    """
    target = _grid_affine(shape, spacing, orientation)  # checks the letters
    if [int(np.argmax(np.abs(target[:3, i]))) for i in range(3)] != [0, 1, 2]:
        raise ValueError(f"orientation {orientation!r}: give the x, y, z axes in that order (e.g. 'RAS', 'LPI')")
    if orientation.upper() != "LPS":
        # The same patient, flipped: drawn in LPS order so the random draws see the same grid.
        lps = chest_ct(seed, covid, shape=shape, spacing=spacing, orientation="LPS", noise_hu=noise_hu)
        flip = tuple(i for i in range(3) if np.sign(target[i, i]) != np.sign(lps.affine[i, i]))
        return CtPhantom(
            image=np.ascontiguousarray(np.flip(lps.image, flip)),
            mask=np.ascontiguousarray(np.flip(lps.mask, flip)),
            lungs=np.ascontiguousarray(np.flip(lps.lungs, flip)),
            affine=target,
            label=lps.label,
        )
    rng = np.random.default_rng(seed)
    if covid is None:
        covid = bool(rng.integers(2))
    affine = target
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    world = np.tensordot(affine[:3, :3].astype(np.float32), index, axes=1) + affine[:3, 3, None, None, None]
    x, y, z = world  # RAS mm: x to the patient's right, y anterior, z superior
    half = np.abs(affine[:3, :3] @ ((np.asarray(shape) - 1) / 2))
    fov_x, fov_y, fov_z = half.max(axis=1) if half.ndim == 2 else half

    # Body: an elliptic cylinder nearly filling the field of view, with a fat layer under the skin.
    body_a, body_b = fov_x * rng.uniform(0.85, 0.95), fov_y * rng.uniform(0.72, 0.82)
    body_r = (x / body_a) ** 2 + ((y - 0.05 * fov_y) / body_b) ** 2
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body_r <= 1] = -90.0  # fat
    hu[body_r <= 0.78] = 40.0  # muscle and mediastinum

    # Lungs: two ellipsoids, their apices tapering towards the top of the field of view.
    lungs = np.zeros(shape, dtype=bool)
    gap = rng.uniform(0.08, 0.14) * body_a
    lung_a = (body_a * 0.78 - gap) / 2 * rng.uniform(0.85, 0.95)
    lung_b = body_b * rng.uniform(0.62, 0.7)
    lung_c = fov_z * rng.uniform(1.6, 2.0)
    z0 = -fov_z * rng.uniform(0.6, 0.9)
    for side in (-1.0, 1.0):
        cx = side * (gap + lung_a)
        cy = -0.02 * fov_y + rng.uniform(-2.0, 2.0)
        lungs |= ((x - cx) / lung_a) ** 2 + ((y - cy) / lung_b) ** 2 + ((z - z0) / lung_c) ** 2 <= 1
    hu[lungs] = -850.0 + 15.0 * _smooth_field(rng, shape, (12, 12, 6))[lungs]

    # Spine: a bony disc behind the mediastinum.
    spine = (x / (0.12 * body_a)) ** 2 + ((y + 0.75 * body_b) / (0.12 * body_a)) ** 2 <= 1
    hu[spine] = 350.0

    # Vessels: curves where two smooth random fields both cross zero, thickest near the hilum.
    f1 = _smooth_field(rng, shape, (14, 14, 8))
    f2 = _smooth_field(rng, shape, (14, 14, 8))
    hilum = np.exp(-((np.abs(x) - gap) ** 2 + y**2) / (2 * (0.8 * lung_a) ** 2))
    width = 0.06 + 0.10 * hilum
    vessels = lungs & (np.abs(f1) < width) & (np.abs(f2) < width)
    hu[vessels] = 30.0

    mask = np.zeros(shape, dtype=np.uint8)
    if covid:
        _add_lesions(rng, hu, mask, lungs, world, spacing, fov_x)

    # Partial-volume blur in plane and scanner noise.
    image = torch.from_numpy(hu)[None, None]
    kernel = torch.tensor([0.25, 0.5, 0.25])
    image = F.conv3d(
        F.pad(image, (0, 0, 1, 1, 1, 1), mode="replicate"), (kernel[:, None] * kernel[None, :])[None, None, :, :, None]
    )
    hu = image[0, 0].numpy() + noise_hu * rng.standard_normal(shape, dtype=np.float32)
    image16 = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return CtPhantom(image=image16, mask=mask, lungs=lungs, affine=affine, label=int(covid))


def _add_lesions(
    rng: np.random.Generator,
    hu: np.ndarray,
    mask: np.ndarray,
    lungs: np.ndarray,
    world: np.ndarray,
    spacing: tuple[float, float, float],
    fov_x: float,
) -> None:
    """Paint 1-4 ground-glass opacities / consolidations into ``hu`` and ``mask`` (in place)."""
    x, y, z = world
    candidates = np.flatnonzero(lungs)
    # Peripheral (subpleural) places are likelier, as in COVID-19: weight by distance from the midline.
    weights = np.abs(x.ravel()[candidates]) / fov_x + 0.2
    weights /= weights.sum()
    count = int(rng.integers(1, 5))
    placed = 0
    for _ in range(count * 6):
        if placed == count:
            break
        centre = candidates[rng.choice(len(candidates), p=weights)]
        c = world.reshape(3, -1)[:, centre]
        radius = rng.uniform(5.0, 12.0)
        axes = radius * rng.uniform(0.7, 1.3, size=3)
        box = [np.abs(w - cw) <= 1.6 * radius for w, cw in zip((x, y, z), c, strict=True)]
        region = box[0] & box[1] & box[2]
        if not region.any():
            continue
        sub = np.nonzero(region)
        d = np.sqrt(sum(((w[sub] - cw) / a) ** 2 for w, cw, a in zip((x, y, z), c, axes, strict=True)))
        lumpy = (
            0.15
            * np.sin(3 * (x[sub] - c[0]) / radius + rng.uniform(0, 6))
            * np.cos(3 * (y[sub] - c[1]) / radius + rng.uniform(0, 6))
        )
        inside = (d + lumpy < 1.0) & lungs[sub]
        if inside.sum() < 30:
            continue
        kind = CONSOLIDATION if rng.random() < 0.35 else GROUND_GLASS
        level = rng.uniform(-60.0, 30.0) if kind == CONSOLIDATION else rng.uniform(-560.0, -380.0)
        # A soft edge: full density inside, fading into the lung over the outer fifth of the radius.
        edge = np.clip((1.0 - (d + lumpy)) / 0.2, 0.0, 1.0) * lungs[sub]
        texture = 25.0 * rng.standard_normal(d.shape).astype(np.float32)
        current = hu[sub]
        hu[sub] = np.where(edge > 0, current + edge * (np.maximum(level + texture, current) - current), current)
        m = mask[sub]
        m[inside] = np.maximum(m[inside], kind)
        mask[sub] = m
        placed += 1


# -- lung ultrasound ---------------------------------------------------------------------------------


def _speckle(rng: np.random.Generator, shape: tuple[int, ...], lateral: int = 3) -> np.ndarray:
    """Rayleigh speckle ``(..., H, W)``, correlated more laterally than axially like a B-mode image."""
    re, im = rng.standard_normal((2, *shape)).astype(np.float32)
    t = torch.from_numpy(np.hypot(re, im)).reshape(-1, 1, *shape[-2:])
    t = F.avg_pool2d(F.pad(t, (lateral // 2, lateral // 2, 0, 0), mode="replicate"), (1, lateral), stride=1)
    return t.reshape(shape).numpy()


def lung_ultrasound(
    seed: int,
    covid: bool | None = None,
    *,
    frames: int = 24,
    shape: tuple[int, int] = (128, 128),
    pixel_mm: float = 0.3,
    frame_interval: float = 0.1,
) -> UltrasoundClip:
    """A linear-probe lung-ultrasound clip, healthy or COVID (B-lines, sometimes a consolidation).

    Args:
        seed: everything random comes from it; ``covid=None`` draws the class from it.
        frames: T.
        shape: (rows = depth, columns) per frame.
        pixel_mm: mm per pixel (square pixels).
        frame_interval: seconds between frames.

    Returns:
        :class:`UltrasoundClip` with uint8 frames and a mask of the B-lines / consolidation.

    What moves: the lung below the pleura slides sideways (lung sliding) with breathing, the
    B-lines sway with it and brighten and fade, everything shifts a little in depth. Speckle
    decorrelates partly from frame to frame.
    """
    rng = np.random.default_rng(seed)
    if covid is None:
        covid = bool(rng.integers(2))
    h, w = shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    pleura = rng.uniform(0.22, 0.32) * h
    rib_col = rng.uniform(-0.1, 1.1) * w  # a rib at the side (sometimes out of view) casts a shadow
    rib_half = rng.uniform(0.08, 0.12) * w
    breath_hz = rng.uniform(0.25, 0.4)
    phase = rng.uniform(0, 2 * math.pi)
    slide_px = rng.uniform(1.0, 2.5) / pixel_mm
    tissue_base = _speckle(rng, (h, w + 64))
    lung_base = _speckle(rng, (h, w + 64), lateral=5)

    n_lines = int(rng.integers(1, 4)) if covid else 0
    line_cols = rng.uniform(0.15, 0.85, n_lines) * w
    line_half = rng.uniform(1.0, 1.8, n_lines) / pixel_mm
    line_rate = rng.uniform(0.3, 0.8, n_lines)
    consolidation = covid and rng.random() < 0.5
    cons_col = rng.uniform(0.2, 0.8) * w
    cons_w, cons_d = rng.uniform(3.0, 6.0) / pixel_mm, rng.uniform(2.5, 5.0) / pixel_mm
    wave = rng.uniform(0.0, 2 * math.pi)
    # Pleural thickening / fragmentation and A-line strength vary in both classes: not the evidence.
    thick, broken, a_gain = rng.uniform(1.0, 2.0), rng.random() < 0.4, rng.uniform(0.25, 0.9)
    fresh_tissue = _speckle(rng, (frames, h, w))  # drawn up front: one call, not one per frame
    fresh_lung = _speckle(rng, (frames, h, w), lateral=5)

    out = np.zeros((frames, h, w), dtype=np.uint8)
    masks = np.zeros((frames, h, w), dtype=np.uint8)
    for t in range(frames):
        s = math.sin(2 * math.pi * breath_hz * t * frame_interval + phase)
        slide = slide_px * s
        dy = 0.6 * s  # the whole picture rises and falls a little with breathing
        p = pleura + dy
        fresh = 0.3  # fraction of speckle that decorrelates each frame
        tissue = (1 - fresh) * tissue_base[:, 8 : 8 + w] + fresh * fresh_tissue[t]
        shift = round(32 + slide)
        lung_tex = (1 - fresh) * lung_base[:, shift : shift + w] + fresh * fresh_lung[t]

        # Chest wall above the pleura: muscle bands and speckle.
        bands = 0.35 + 0.15 * np.sin(rows / max(p, 1) * 2 * math.pi * 2.5 + wave) ** 2
        img = np.where(rows < p, bands * tissue, 0.0)
        # Pleural line: bright, a little wavy; thickened and broken in COVID.
        ripple = 0.8 * np.sin(cols / w * 2 * math.pi * 2 + wave)
        pleural = np.exp(-((rows - p - ripple) ** 2) / (2 * thick**2))
        if broken:
            pleural = pleural * (0.55 + 0.45 * (np.sin(cols / w * 2 * math.pi * 5 + wave) > -0.3))
        img = img + 1.4 * pleural * (0.7 + 0.3 * tissue)
        below = rows > p + 2
        depth_gain = np.exp(-(rows - p).clip(0) / (0.9 * h))
        lung = 0.12 * lung_tex * depth_gain
        # A-lines: reverberations of the pleura at multiples of its depth, fading with depth. They show
        # in both classes (B-lines wipe them out only where they pass), so only B-lines and
        # consolidations tell the classes apart.
        for k in (2, 3, 4):
            lung = lung + (a_gain / k) * np.exp(-((rows - k * p) ** 2) / (2 * 1.3**2)) * (0.6 + 0.4 * lung_tex)
        mask_t = np.zeros((h, w), dtype=np.uint8)
        for c0, half_w, rate in zip(line_cols, line_half, line_rate, strict=True):
            # B-lines: laser-like vertical comet tails from the pleura to the bottom, moving with the lung.
            c = c0 + slide
            gain = 0.75 + 0.25 * math.sin(2 * math.pi * rate * t * frame_interval + c0)
            profile = np.exp(-((cols - c) ** 2) / (2 * half_w**2))
            lung = lung * (1 - 0.95 * profile * below) + gain * 0.85 * profile * below * (0.7 + 0.3 * lung_tex)
            mask_t[(np.abs(cols - c) <= 1.5 * half_w) & below] = B_LINE
        if consolidation:
            # Subpleural consolidation: tissue-like echoes under a gap in the pleura, bright air bronchograms.
            c = cons_col + slide
            inside = ((cols - c) / cons_w) ** 2 + ((rows - p - cons_d * 0.6) / cons_d) ** 2 <= 1
            inside &= rows > p
            bronchi = (lung_tex > 2.2) & inside
            lung = np.where(inside, 0.45 * tissue + 0.9 * bronchi, lung)
            mask_t[inside] = US_CONSOLIDATION
        img = img + np.where(rows > p + 1, lung, 0.0)
        # Rib: bright arc at the pleura's depth, black acoustic shadow beneath.
        rib = np.abs(cols - rib_col) < rib_half
        img = np.where(rib & (rows > p - 3), 0.04 * tissue, img)
        img = img + 1.2 * rib * np.exp(-((rows - p + 4) ** 2) / 8.0)
        mask_t[rib & (rows > p - 3)] = 0
        # Log compression to 8 bits, as a scanner displays it.
        db = 20 * np.log10(np.maximum(img, 1e-3))
        out[t] = np.clip((db + 40.0) / 45.0 * 255.0, 0, 255).astype(np.uint8)
        masks[t] = mask_t
    return UltrasoundClip(
        frames=out,
        mask=masks,
        frame_interval=frame_interval,
        pixel_spacing=(pixel_mm, pixel_mm),
        label=int(covid),
        pleura_row=round(pleura),
    )


# -- writing phantoms as the files a scanner would give ---------------------------------------------


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["volcam-synthetic", *map(str, parts)])  # reproducible per phantom


def write_ct_dicom(phantom: CtPhantom, folder: str | os.PathLike, *, key: object = 0, deflate: bool = False) -> Path:
    """Write a CT phantom as a DICOM series (one file per slice along the array's last axis), atomically.

    The series loads back with :func:`volcam.load` as the same ``(1, X, Y, Z)`` array and affine.
    ``key`` makes the UIDs unique and reproducible; ``deflate`` stores the files with the Deflated
    Explicit VR Little Endian transfer syntax (lossless). The patient is called ``PHANTOM``.
    """
    from pydicom.dataset import Dataset

    from volcam.io.dicom.geometry import slice_geometry

    sz = phantom.spacing[2]
    study, series, frame = _uid(key, "study"), _uid(key, "series"), _uid(key, "frame")
    with atomic_folder(folder, overwrite=True) as temporary:
        for k in range(phantom.image.shape[2]):
            ds = Dataset()
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
            ds.SOPInstanceUID = _uid(key, "slice", k)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.PatientName, ds.PatientID = "PHANTOM", "PHANTOM"
            ds.Modality = "CT"
            ds.SeriesDescription = "volcam synthetic chest CT"
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
            ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = slice_geometry(phantom.affine, k)
            ds.SliceThickness = ds.SpacingBetweenSlices = round(sz, 6)
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
            pixels = np.ascontiguousarray(phantom.image[:, :, k].T)  # (rows, columns): array axis 0 runs along a row
            ds.Rows, ds.Columns = pixels.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = pixels.astype(np.int16).tobytes()
            save_instance(ds, temporary / f"{k + 1:04d}.dcm", deflate)
    return Path(folder)


def write_ultrasound_dicom(clip: UltrasoundClip, path: str | os.PathLike, *, key: object = 0) -> Path:
    """Write a clip as a multi-frame ultrasound DICOM (frame time and calibrated region), atomically."""
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    t, h, w = clip.frames.shape
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID = _uid(key, "clip")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(key, "study"), _uid(key, "series")
    ds.PatientName, ds.PatientID = "PHANTOM", "PHANTOM"
    ds.Modality = "US"
    ds.SeriesDescription = "volcam synthetic lung ultrasound"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.NumberOfFrames = t
    ds.FrameTime = round(clip.frame_interval * 1000.0, 3)  # ms
    ds.FrameIncrementPointer = Tag("FrameTime")
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 1, h - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # centimetres
    region.PhysicalDeltaX, region.PhysicalDeltaY = clip.pixel_spacing[1] / 10.0, clip.pixel_spacing[0] / 10.0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(clip.frames, dtype=np.uint8).tobytes()
    with atomic_file(path) as temporary:
        save_instance(ds, temporary)
    return Path(path)
