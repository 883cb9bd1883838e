"""The seed corpus: small real files of every kind volcam reads, each in a folder of its own.

Written by the libraries people make these files with, not by volcam: pydicom's shipped DICOMs (every
transfer syntax pydicom ships a small file of, multi-frame, RGB, ultrasound, RT Dose) and series built
from its ``CT_small.dcm`` (``io_fixtures.make_series``), the project's own sample DICOM slices and
ultrasound cine, nibabel-written NIfTI-1/-2, NIfTI pairs and Analyze, SimpleITK-written NRRD/MHA
(attached and detached), PyAV-written MP4 and AVI, the demo model's card with its weights, a MONAI
bundle, and cohort manifests. A :class:`Seed` names its folder, the file a mutation works on and
which targets run on it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"

#: pydicom's small test files: the transfer syntaxes, photometric interpretations and frame layouts it ships.
PYDICOM_FILES = (
    "CT_small.dcm",  # explicit little endian CT with a patient's identifiers
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "image_dfl.dcm",  # deflated explicit little endian
    "emri_small.dcm",  # multi-frame MR
    "SC_rgb.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",  # multi-frame with GridFrameOffsetVector
    "liver_1frame.dcm",  # enhanced CT with functional groups (pydicom-data)
)

#: Targets: what runs on an input made from a seed of this kind.
SCAN = ("load", "info")


@dataclass(frozen=True)
class Seed:
    """``folder`` holds everything the input needs; ``main`` (relative) is what the target gets and
    ``mutable`` the files a mutation may change; ``kind`` picks the mutator."""

    name: str
    kind: str  # dicom, dicom-folder, nifti, analyze, itk-text, video, card, bundle, manifest
    folder: Path
    main: str
    mutable: tuple[str, ...]
    targets: tuple[str, ...] = SCAN
    card: str = "ct_covid.card.json"  # the model that explains it (explain target)


def _pydicom(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    return Path(found) if found else None


def _dicom_seeds(root: Path) -> list[Seed]:
    seeds = []
    for name in PYDICOM_FILES:
        source = _pydicom(name)
        if source is None:
            continue
        folder = root / f"dicom-{Path(name).stem}"
        folder.mkdir()
        shutil.copy(source, folder / name)
        seeds.append(Seed(f"dicom:{name}", "dicom", folder, name, (name,)))
    # the project's ultrasound cine: a clip, explained by the clip model
    folder = root / "dicom-lus"
    folder.mkdir()
    shutil.copy(SAMPLE / "lus_covid_sample.dcm", folder / "lus.dcm")
    seeds.append(Seed("dicom:lus", "dicom", folder, "lus.dcm", ("lus.dcm",), card="lus_covid.card.json"))
    # series: three of the shipped CT's slices; four built from CT_small
    folder = root / "series-ct"
    (folder / "series").mkdir(parents=True)
    slices = sorted((SAMPLE / "ct_covid_sample_dicom").glob("*.dcm"))[10:13]
    for path in slices:
        shutil.copy(path, folder / "series" / path.name)
    names = tuple(f"series/{p.name}" for p in slices)
    seeds.append(Seed("series:ct", "dicom-folder", folder, "series", names))
    from io_fixtures import make_series

    folder = root / "series-small"
    _, files = make_series(folder / "series", 4, seed=1)
    names = tuple(f"series/{p.name}" for p in files)
    seeds.append(Seed("series:ct_small", "dicom-folder", folder, "series", names))
    return seeds


def _volume(dtype: type, shape: tuple[int, ...] = (8, 8, 6)) -> np.ndarray:
    values = np.arange(int(np.prod(shape))).reshape(shape) % 200 - 100
    return values.astype(dtype)


def _nifti_seeds(root: Path) -> list[Seed]:
    import nibabel as nib

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10, 20, 5)
    made = [
        ("nifti1-int16", "a.nii", nib.Nifti1Image(_volume(np.int16), affine)),
        ("nifti1-float-gz", "a.nii.gz", nib.Nifti1Image(_volume(np.float32), affine)),
        ("nifti1-4d", "a.nii", nib.Nifti1Image(_volume(np.uint8, (6, 6, 4, 3)), affine)),
        ("nifti2-uint16", "a.nii", nib.Nifti2Image(_volume(np.uint16) + 100, affine)),
    ]
    seeds = []
    for name, file, image in made:
        folder = root / name
        folder.mkdir()
        if name == "nifti1-int16":
            image.header.set_slope_inter(2.0, -5.0)
        nib.save(image, folder / file)
        seeds.append(Seed(f"nifti:{name}", "nifti", folder, file, (file,)))
    for name, klass in (("analyze", nib.AnalyzeImage), ("nifti-pair", nib.Nifti1Pair)):
        folder = root / name
        folder.mkdir()
        nib.save(klass(_volume(np.int16), affine), folder / "a.hdr")
        seeds.append(Seed(f"nifti:{name}", "nifti", folder, "a.hdr", ("a.hdr", "a.img")))
    return seeds


def _itk_seeds(root: Path) -> list[Seed]:
    import SimpleITK as sitk

    seeds = []
    image = sitk.GetImageFromArray(_volume(np.int16))
    image.SetSpacing((0.7, 0.7, 3.0))
    image.SetOrigin((-5.0, 3.0, 12.0))
    for name, file, compress in (
        ("nrrd", "a.nrrd", False),
        ("nrrd-gz", "a.nrrd", True),
        ("nhdr", "a.nhdr", False),
        ("mha", "a.mha", False),
        ("mhd", "a.mhd", False),
    ):
        folder = root / name
        folder.mkdir()
        sitk.WriteImage(image, str(folder / file), compress)
        files = tuple(sorted(p.name for p in folder.iterdir()))
        seeds.append(Seed(f"itk:{name}", "itk-text", folder, file, files))
    return seeds


def _video_seeds(root: Path) -> list[Seed]:
    import av

    seeds = []
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    for t in range(len(frames)):
        frames[t, 8 + t : 20 + t, 10:30] = (40 * t, 200, 90)
    for name, file, codec in (("mp4", "clip.mp4", "mpeg4"), ("avi", "clip.avi", "mjpeg")):
        folder = root / f"video-{name}"
        folder.mkdir()
        with av.open(str(folder / file), "w") as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height = 48, 32
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        seeds.append(Seed(f"video:{name}", "video", folder, file, (file,), card="lus_covid.card.json"))
    return seeds


def _model_seeds(root: Path) -> list[Seed]:
    card = json.loads((SAMPLE / "ct_covid.card.json").read_text())
    folder = root / "card"
    folder.mkdir()
    for name in ("ct_covid.card.json", "ct_covid.pt", "ct_covid.metrics.json", "ct_covid.lcam-fm.pt"):
        shutil.copy(SAMPLE / name, folder / name)
    card["lcam"].pop("img")  # one L-CAM entry is enough to fuzz the form
    (folder / "ct_covid.card.json").write_text(json.dumps(card, indent=1))
    seeds = [Seed("card:ct", "card", folder, "ct_covid.card.json", ("ct_covid.card.json", "ct_covid.pt"), ("card",))]
    bundle = root / "bundle" / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    definition = {"_target_": "monai.networks.nets.ResNet", **card["network"]["args"]}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": definition}, indent=1))
    channels = {"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "normal", "1": "covid"}}}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(channels, indent=1))
    shutil.copy(SAMPLE / "ct_covid.pt", bundle / "models" / "model.pt")
    files = ("bundle/configs/inference.json", "bundle/configs/metadata.json", "bundle/models/model.pt")
    seeds.append(Seed("bundle:ct", "bundle", bundle.parent, "bundle", files, ("card",)))
    return seeds


def _manifest_seeds(root: Path) -> list[Seed]:
    import nibabel as nib

    folder = root / "manifest"
    (folder / "scans").mkdir(parents=True)
    affine = np.diag([2.8, 2.8, 5.0, 1.0])
    for i in range(2):
        volume = np.full((20, 20, 10), -800, np.int16)
        volume[5 + i : 12, 6:14, 3:7] = -100
        nib.save(nib.Nifti1Image(volume, affine), folder / "scans" / f"s{i}.nii.gz")
        nib.save(nib.Nifti1Image((volume > -500).astype(np.uint8), affine), folder / "scans" / f"s{i}_mask.nii.gz")
    (folder / "cohort.csv").write_text(
        "case,image,mask,label\ncase0,scans/s0.nii.gz,scans/s0_mask.nii.gz,covid\ncase1,scans/s1.nii.gz,,0\n"
    )
    return [Seed("manifest:csv", "manifest", folder, "cohort.csv", ("cohort.csv",), ("manifest",))]


def build_seeds(root: Path) -> list[Seed]:
    """Write the corpus under ``root`` (a new folder); the seeds, in a fixed order."""
    root.mkdir(parents=True, exist_ok=True)
    return [
        *_dicom_seeds(root),
        *_nifti_seeds(root),
        *_itk_seeds(root),
        *_video_seeds(root),
        *_model_seeds(root),
        *_manifest_seeds(root),
    ]
