"""A lung-ultrasound cine at clinical size: read it at the cost of its decode, explain it at the cost of its forward.

A synthetic lung-ultrasound cine the size of a scanner's export (10 s at 30 fps, 600 × 800 RGB: the
B-mode of ``volcam.testing.phantoms.lung_ultrasound`` with a pleural line, A-lines and B-lines that
slide with breathing, in a screen with coloured annotations) is built once and cached (``--cache``),
keyed by its parameters, stored two ways: an uncompressed DICOM Ultrasound Multi-frame (FrameTime,
SequenceOfUltrasoundRegions with PhysicalDeltaX/Y; 432 MB) and an H.264 MP4 (PyAV). Beside them a
POCOVID-style frame card (MONAI ``ResNet`` 2D, basic blocks [2, 2, 2, 2], 3 input channels,
``kind: "frames"``, Resize 224 × 224 + ScaleIntensityRange; random weights from a fixed seed) for the
explain variants.

Each variant then runs in its own fresh Python process, which reports the wall seconds of its timed
steps, its RSS after the imports (baseline) and its peak RSS (``ru_maxrss``):

- ``pydicom-decode``: ``pydicom.dcmread(path).pixel_array`` (uint8; the DICOM floor);
- ``pyav-decode``: every frame of the MP4 ``to_ndarray(format="rgb24")``, stacked (uint8; the MP4 floor);
- ``pyav-decode-threads``: the same with FFmpeg's frame threads (``thread_type = "AUTO"``), as volcam decodes;
- ``volcam-load-dicom``: ``volcam.load`` on the DICOM;
- ``volcam-load-mp4``: ``volcam.load`` on the MP4;
- ``forward``: the frame network's bare ``no_grad`` forward over the 300 frames, 16 a batch (the floor);
- ``volcam-e2e``: ``volcam.load`` → ``load_model`` → ``Model.explain(clip, "gradcam")`` → NIfTI → the MP4
  and the animation (:func:`volcam.viz.video.write_clip_video`), split per step;
- ``review-next-class``: a ``ScanSession`` on the clip: Grad-CAM for the predicted class (untimed), then
  Grad-CAM for another class and Grad-CAM++ for it, each timed;
- ``dock``: the same in napari's explain dock on the cine opened in a real viewer (``show=True``, Xvfb
  when there is no display), timed from the request to the map layer updated;
- ``windowed-forward`` / ``windowed-e2e``: a spatio-temporal 3D ResNet-10 over 16-frame windows every 8
  (a card's ``"window"``): its bare forward over the windows, and volcam end to end with it.

Variants live in :data:`RUNS`, their checks in :data:`TARGETS`.

The parent keeps itself small (no torch, no numpy) so that the workers' ``ru_maxrss`` owes nothing to
it, builds the data in a worker too, and reads both files once before the workers so every reader
finds them in the page cache.

Usage::

    python benchmarks/ultrasound.py [--variants pydicom-decode,volcam-load-dicom,...] [--repeats 1]
                                    [--threads 2] [--cache ~/.cache/volcam-bench/ultrasound] [--no-write]

The table is printed and, without ``--no-write``, written to ``benchmarks/results/ultrasound.md``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from harness import in_rounds  # benchmarks/harness.py, beside this script
from machine import compile_sources, cpu_model  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ultrasound.md"
DEFAULT_CACHE = Path("~/.cache/volcam-bench/ultrasound")

# -- the data and the model: every parameter here goes into the cache key ------------------------------

FRAMES, FPS = 300, 30
SCREEN = (600, 800)  # rows, columns of each exported frame (RGB)
BMODE = (540, 640)  # the B-mode image inside it, rows (depth) × columns
BMODE_ORIGIN = (40, 60)  # its top-left corner on the screen
PIXEL_MM = 0.1  # 54 mm deep × 64 mm wide: a linear probe on the chest wall
PHANTOM_SEED = 1
WEIGHTS_SEED = 0
# crf 6: about the 35 MB the issue measured (the speckle decorrelates from frame to frame, as on a scanner)
MP4 = {"codec": "libx264", "pix_fmt": "yuv420p", "crf": 6, "preset": "medium"}
LABELS = ["covid", "pneumonia", "healthy"]  # POCOVID-Net's classes
LAYER = "layer4"
INPUT_SIZE = (224, 224)
NETWORK_ARGS = {
    "block": "basic",
    "layers": [2, 2, 2, 2],
    "block_inplanes": [64, 128, 256, 512],
    "spatial_dims": 2,
    "n_input_channels": 3,
    "num_classes": len(LABELS),
}
PREPROCESSING = [
    {"name": "Resize", "args": {"spatial_size": [-1, *INPUT_SIZE], "mode": "trilinear"}},
    {"name": "ScaleIntensityRange", "args": {"a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0, "clip": True}},
]
PARAMETERS = {
    "phantom": {
        "generator": "lung_ultrasound",
        "seed": PHANTOM_SEED,
        "covid": True,
        "frames": FRAMES,
        "fps": FPS,
        "bmode": BMODE,
        "pixel_mm": PIXEL_MM,
    },
    "screen": {"shape": SCREEN, "origin": BMODE_ORIGIN, "annotations": "ruler, focus, bar, logo (RGB)"},
    "dicom": "Ultrasound Multi-frame, RGB by pixel, uncompressed (Explicit VR Little Endian)",
    "mp4": MP4,
    "network": {"monai": "ResNet", "args": NETWORK_ARGS, "seed": WEIGHTS_SEED},
    "labels": LABELS,
    "layer": LAYER,
    "preprocessing": PREPROCESSING,
}
CLIP_BYTES = FRAMES * SCREEN[0] * SCREEN[1] * 3  # the clip as stored: uint8 RGB, 432 MB
MIB = 1024 * 1024


def cache_folder(root: Path) -> Path:
    key = hashlib.sha256(json.dumps(PARAMETERS, sort_keys=True).encode()).hexdigest()[:12]
    return root.expanduser() / key


# -- worker side ------------------------------------------------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mib() -> float:
    return _status_mib("VmRSS")


def hwm_mib() -> float:
    """VmHWM: the peak RSS of this process's own address space (not inherited across exec)."""
    return _status_mib("VmHWM")


def say(variant: str, text: str) -> None:
    load = os.getloadavg()[0]
    print(f"  [{variant}] {text} (load {load:.2f}, RSS {current_rss_mib():.0f} MiB)", flush=True)


class Clock:
    """Times named steps of one worker and says each as it ends."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.steps: dict[str, float] = {}

    def __call__(self, name: str, run):
        say(self.variant, f"{name} ...")
        start = time.perf_counter()
        value = run()
        self.steps[name] = time.perf_counter() - start
        say(self.variant, f"{name}: {self.steps[name]:.2f} s")
        return value


def screen_frames(bmode):
    """The B-mode ``(T, h, w)`` uint8 on a scanner's screen ``(T, *SCREEN, 3)`` uint8 RGB: grey image,
    a yellow depth ruler (a tick a centimetre), an orange focus mark, a cyan time bar that fills
    along the clip and a green logo block, as a scanner's export carries them."""
    import numpy as np

    t, h, w = bmode.shape
    out = np.zeros((t, *SCREEN, 3), np.uint8)
    top, left = BMODE_ORIGIN
    out[:, top : top + h, left : left + w] = bmode[..., None]
    ruler = left + w + 12
    out[:, top : top + h, ruler : ruler + 2] = (230, 210, 40)
    for depth in range(0, h, round(10 / PIXEL_MM)):  # a tick every 10 mm
        out[:, top + depth : top + depth + 2, ruler - 6 : ruler + 8] = (230, 210, 40)
    focus = top + h // 3
    for k in range(8):  # a small triangle pointing at the focal depth
        out[:, focus - k : focus + k + 1, left - 20 + k] = (255, 140, 0)
    out[:, 8:28, 12:132] = (40, 170, 90)
    for frame in range(t):
        out[frame, SCREEN[0] - 14 : SCREEN[0] - 8, left : left + round(w * (frame + 1) / t)] = (40, 200, 230)
    return out


def write_dicom(frames, path: Path) -> None:
    """``(T, H, W, 3)`` uint8 as an uncompressed Ultrasound Multi-frame (RGB by pixel) with its frame
    time and a calibrated region around the B-mode image."""
    import numpy as np
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag
    from pydicom.uid import generate_uid

    from volcam.io.dicom.instances import save_instance

    t, h, w, _ = frames.shape
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["volcam-ultrasound-bench", "clip"])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["volcam-ultrasound-bench", "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["volcam-ultrasound-bench", "series"])
    ds.PatientName, ds.PatientID = "PHANTOM", "PHANTOM"
    ds.Modality = "US"
    ds.SeriesDescription = "volcam synthetic lung ultrasound, clinical size"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.NumberOfFrames = t
    ds.FrameTime = round(1000.0 / FPS, 3)  # ms
    ds.FrameIncrementPointer = Tag("FrameTime")
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = BMODE_ORIGIN[1], BMODE_ORIGIN[0]
    region.RegionLocationMaxX1 = BMODE_ORIGIN[1] + BMODE[1] - 1
    region.RegionLocationMaxY1 = BMODE_ORIGIN[0] + BMODE[0] - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # centimetres
    region.PhysicalDeltaX = region.PhysicalDeltaY = PIXEL_MM / 10.0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    save_instance(ds, path)


def write_mp4(frames, path: Path) -> None:
    """``(T, H, W, 3)`` uint8 RGB as an H.264 MP4 at :data:`FPS`."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(MP4["codec"], rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = MP4["pix_fmt"]
        stream.options = {"crf": str(MP4["crf"]), "preset": MP4["preset"]}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build_network():
    import torch
    from monai.networks.nets import ResNet

    torch.manual_seed(WEIGHTS_SEED)
    return ResNet(**NETWORK_ARGS).eval()


def load_network(folder: Path):
    """The card's network with its weights (for the bare forward the explain variants compare with)."""
    import torch

    network = build_network()
    network.load_state_dict(torch.load(folder / "resnet18_2d.pt", weights_only=True))
    return network.eval()


def write_card(folder: Path) -> None:
    """The POCOVID-style frame card and its (random, seeded) weights."""
    import torch

    torch.save(build_network().state_dict(), folder / "resnet18_2d.pt")
    card = {
        "volcam_card": 1,
        "name": "ultrasound_bench_pocovid_resnet18",
        "kind": "frames",
        "labels": LABELS,
        "layer": LAYER,
        "in_channels": 3,
        "network": {"monai": "ResNet", "args": NETWORK_ARGS},
        "weights": "resnet18_2d.pt",
        "preprocessing": PREPROCESSING,
        "modality": "US",
        "description": "Benchmark only: ResNet-18 2D with random weights (seed 0), POCOVID-style. Not a classifier.",
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2))


def build(folder: Path) -> None:
    """Write the DICOM cine, the MP4, the weights and the card into ``folder`` (the cache entry)."""
    from volcam.testing.phantoms import lung_ultrasound

    folder.mkdir(parents=True, exist_ok=True)
    clock = Clock("build")
    clip = clock(
        "lung_ultrasound phantom",
        lambda: lung_ultrasound(
            PHANTOM_SEED, covid=True, frames=FRAMES, shape=BMODE, pixel_mm=PIXEL_MM, frame_interval=1.0 / FPS
        ),
    )
    b_lines = int((clip.mask == 1).sum())
    bmode = clip.frames
    del clip  # its mask: the screen frames need the memory
    frames = clock("screen", lambda: screen_frames(bmode))
    clock("write DICOM", lambda: write_dicom(frames, folder / "cine.dcm"))
    clock("write MP4", lambda: write_mp4(frames, folder / "cine.mp4"))
    write_card(folder)
    info = {
        "parameters": PARAMETERS,
        "dicom_bytes": (folder / "cine.dcm").stat().st_size,
        "mp4_bytes": (folder / "cine.mp4").stat().st_size,
        "b_line_pixels": b_lines,
        "built": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    (folder / "params.json").write_text(json.dumps(info, indent=2))  # last: marks the entry complete


def run_pydicom_decode(data: Path, clock: Clock, extra: dict) -> None:
    import numpy  # noqa: F401  (pydicom's pixel handling imports it: before the baseline, as volcam's MONAI)
    import pydicom
    import pydicom.pixels

    extra["baseline_mib"] = current_rss_mib()
    array = clock("decode", lambda: pydicom.dcmread(data / "cine.dcm").pixel_array)
    extra["shape"], extra["dtype"] = list(array.shape), str(array.dtype)


def run_pyav_decode(data: Path, clock: Clock, extra: dict) -> None:
    import av
    import numpy as np

    extra["baseline_mib"] = current_rss_mib()

    def decode():
        with av.open(str(data / "cine.mp4")) as container:
            return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])

    array = clock("decode", decode)
    extra["shape"], extra["dtype"] = list(array.shape), str(array.dtype)


def run_pyav_decode_threads(data: Path, clock: Clock, extra: dict) -> None:
    import av
    import numpy as np

    extra["baseline_mib"] = current_rss_mib()

    def decode():
        with av.open(str(data / "cine.mp4")) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])

    array = clock("decode", decode)
    extra["shape"], extra["dtype"] = list(array.shape), str(array.dtype)


def _volcam_load(path: Path, clock: Clock, extra: dict, library: str) -> None:
    import volcam

    # The libraries a read needs are imported first and timed apart, as the references' imports are
    # outside their decode: MONAI (the MetaTensor the clip comes in) and the file's library.
    clock(f"import monai.data, {library} (once per process)", lambda: (__import__("monai.data"), __import__(library)))
    extra["baseline_mib"] = current_rss_mib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an MP4 has no pixel spacing: said once, not what is measured
        clip = clock("load", lambda: volcam.load(path))
    extra["shape"], extra["dtype"] = list(clip.shape), str(clip.dtype)
    extra["spacing"] = [round(float(v), 6) for v in clip.meta["spacing"]]


def run_volcam_load_dicom(data: Path, clock: Clock, extra: dict) -> None:
    _volcam_load(data / "cine.dcm", clock, extra, "pydicom")


def run_volcam_load_mp4(data: Path, clock: Clock, extra: dict) -> None:
    _volcam_load(data / "cine.mp4", clock, extra, "av")


FORWARD_BATCH = 16  # frames a batch in the bare forward (the issue's reference)


def run_forward(data: Path, clock: Clock, extra: dict) -> None:
    """The floor: the frame network's bare ``no_grad`` forward over every frame, 16 a batch, on inputs
    already at the network's size (what the card's preprocessing gives)."""
    import monai  # noqa: F401  (the same imports as volcam's processes: the network is a MONAI one)
    import torch

    extra["baseline_mib"] = current_rss_mib()
    network = clock("load network (untimed setup)", lambda: load_network(data))
    generator = torch.Generator().manual_seed(1)

    def forward():
        logits = []
        with torch.no_grad():
            for start in range(0, FRAMES, FORWARD_BATCH):
                count = min(FORWARD_BATCH, FRAMES - start)
                logits.append(network(torch.rand(count, 3, *INPUT_SIZE, generator=generator)))
        return torch.cat(logits)

    logits = clock("forward", forward)
    extra["logits_shape"] = list(logits.shape)


def _curve(explanation, model, scan):
    """The explained class's probability per frame, as ``volcam explain`` draws it under the video."""
    from volcam.viz.video import FrameCurve

    probabilities = explanation.result.frame_probabilities.detach().cpu().double().numpy()
    index = model.labels.index(explanation.target)
    return FrameCurve(probabilities[:, index], explanation.target, 0.5, scan.meta.get("frame_interval"))


def run_volcam_e2e(data: Path, clock: Clock, extra: dict) -> None:
    """``volcam.load`` → ``load_model`` → ``Model.explain(clip, "gradcam")`` → NIfTI → MP4 + animation."""
    import monai  # noqa: F401
    import torch  # noqa: F401

    import volcam
    from volcam.io import write_nifti
    from volcam.viz.video import write_clip_video

    extra["baseline_mib"] = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix="volcam-ultrasound-") as out:
        out = Path(out)
        scan = clock("load", lambda: volcam.load(data / "cine.dcm"))
        model = clock("load_model", lambda: volcam.load_model(data / "card.json"))
        explanation = clock("explain", lambda: model.explain(scan, "gradcam"))
        extra["timings"] = {k: round(v, 4) for k, v in explanation.timings.items()}
        extra["prediction"], extra["map_made"] = explanation.prediction, type(explanation.placed).__name__
        # the explanation, not its .map: a map made slab by slab as written (no full-size float copy)
        clock("write_nifti", lambda: write_nifti(explanation, out / "gradcam.nii.gz", like=scan))
        # the issue's end to end stops at the NIfTI: its peak, before the video (reported beside it)
        extra["peak_to_nifti_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        curve = _curve(explanation, model, scan)
        written = clock("write_video", lambda: write_clip_video(scan, explanation, curve, out / "gradcam"))
        extra["video_mib"] = {k: round(Path(v).stat().st_size / MIB, 1) for k, v in written.items()}


def run_review(data: Path, clock: Clock, extra: dict) -> None:
    """A ``ScanSession`` on the clip: Grad-CAM for the predicted class (untimed: pays the one pass over the
    frames), then Grad-CAM for another class and Grad-CAM++ for it, each timed, on the network's grid as
    the dock shows them."""
    import volcam

    extra["baseline_mib"] = current_rss_mib()
    scan = clock("load (untimed setup)", lambda: volcam.load(data / "cine.dcm"))
    model = clock("load_model (untimed setup)", lambda: volcam.load_model(data / "card.json"))
    session = volcam.ScanSession(model, scan)
    first = clock("gradcam predicted (untimed: pays the forward)", lambda: session.explain("gradcam", on="network"))
    other = next(label for label in LABELS if label != first.target)
    clock(f"gradcam {other}", lambda: session.explain("gradcam", target=other, on="network"))
    clock(f"gradcam++ {other}", lambda: session.explain("gradcam++", target=other, on="network"))
    extra["review_steps"] = [f"gradcam {other}", f"gradcam++ {other}"]


def run_dock(data: Path, clock: Clock, extra: dict) -> None:
    """The napari dock on the cine opened in a real viewer (``show=True``; Xvfb when there is no display):
    the first explanation pays the pass over the frames; the next class and the next method are timed
    from the request to the map layer updated (the dock's ``map_shown`` signal)."""
    from napari_dock import time_dock  # benchmarks/napari_dock.py, beside this script

    scan, card = data / "cine.dcm", data / "card.json"
    requests = (("gradcam", "healthy"), ("gradcam++", "healthy"))
    extra.update(time_dock(scan, card, ("gradcam", "covid"), requests, clock, clock.steps, current_rss_mib))


# A spatio-temporal model seeing 16-frame windows every 8 frames (kind "clip", the card's "window"),
# built on first use beside the cine (deterministic: fixed seed; its own folder keyed by these numbers).
WINDOW = {"frames": 16, "stride": 8}
WINDOW_INPUT = (112, 112)
WINDOW_BATCH = 4  # windows a batch in the bare windowed forward (volcam's default: WINDOWS_PER_BATCH)
WINDOW_NETWORK_ARGS = {
    "block": "basic",
    "layers": [1, 1, 1, 1],
    "block_inplanes": [32, 64, 128, 256],
    "spatial_dims": 3,
    "n_input_channels": 3,
    "num_classes": len(LABELS),
    "conv1_t_size": 3,
    "conv1_t_stride": 1,
}


def windowed_folder(data: Path) -> Path:
    """The windowed card and its weights (written on first use)."""
    import torch
    from monai.networks.nets import ResNet

    key = json.dumps({"window": WINDOW, "input": WINDOW_INPUT, "args": WINDOW_NETWORK_ARGS}, sort_keys=True)
    folder = data / f"windowed-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if (folder / "card.json").exists():
        return folder
    folder.mkdir(exist_ok=True)
    torch.manual_seed(WEIGHTS_SEED)
    torch.save(ResNet(**WINDOW_NETWORK_ARGS).state_dict(), folder / "resnet10_3d.pt")
    card = {
        "volcam_card": 1, "name": "ultrasound_bench_windowed_resnet10_3d", "kind": "clip", "labels": LABELS,
        "layer": "layer4", "in_channels": 3, "network": {"monai": "ResNet", "args": WINDOW_NETWORK_ARGS},
        "weights": "resnet10_3d.pt", "window": WINDOW, "modality": "US",
        "preprocessing": [
            {"name": "Resize", "args": {"spatial_size": [-1, *WINDOW_INPUT], "mode": "trilinear"}},
            PREPROCESSING[1],
        ],
        "description": "Benchmark only: a 3D ResNet-10 over 16-frame windows, random weights (seed 0).",
    }  # fmt: skip
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder


def run_windowed_forward(data: Path, clock: Clock, extra: dict) -> None:
    """The windowed model's floor: its bare ``no_grad`` forward over every window of the clip (16 frames
    every 8, the last at the clip's end), 4 windows a batch, on inputs already at the network's size."""
    import torch
    from monai.networks.nets import ResNet

    folder = windowed_folder(data)
    extra["baseline_mib"] = current_rss_mib()
    network = ResNet(**WINDOW_NETWORK_ARGS)
    network.load_state_dict(torch.load(folder / "resnet10_3d.pt", weights_only=True))
    network.eval()
    from volcam.engine.windows import window_starts  # the same windows volcam runs (the last at the clip's end)

    count = len(window_starts(FRAMES, WINDOW["frames"], WINDOW["stride"]))
    generator = torch.Generator().manual_seed(1)

    def forward():
        with torch.no_grad():
            for start in range(0, count, WINDOW_BATCH):
                n = min(WINDOW_BATCH, count - start)
                network(torch.rand(n, 3, WINDOW["frames"], *WINDOW_INPUT, generator=generator))

    clock("forward", forward)
    extra["windows"] = count


def run_windowed_e2e(data: Path, clock: Clock, extra: dict) -> None:
    """The windowed model end to end: ``volcam.load`` → ``load_model`` → ``Model.explain`` → NIfTI."""
    import volcam
    from volcam.io import write_nifti

    folder = windowed_folder(data)
    extra["baseline_mib"] = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix="volcam-ultrasound-windowed-") as out:
        scan = clock("load", lambda: volcam.load(data / "cine.dcm"))
        model = clock("load_model", lambda: volcam.load_model(folder / "card.json"))
        explanation = clock("explain", lambda: model.explain(scan, "gradcam"))
        extra["timings"] = {k: round(v, 4) for k, v in explanation.timings.items()}
        clock("write_nifti", lambda: write_nifti(explanation, Path(out) / "gradcam.nii.gz", like=scan))


# The variants: each runs in its own process (``worker``) with the cache entry, a Clock for its timed
# steps and a dict for what it reports. The explain variants (bare forward over the frames, volcam
# end to end, review, dock, windowed clip model) go here, with their checks in TARGETS below.
RUNS: dict[str, Callable[[Path, Clock, dict], None]] = {
    "pydicom-decode": run_pydicom_decode,
    "pyav-decode": run_pyav_decode,
    "pyav-decode-threads": run_pyav_decode_threads,
    "volcam-load-dicom": run_volcam_load_dicom,
    "volcam-load-mp4": run_volcam_load_mp4,
    "forward": run_forward,
    "volcam-e2e": run_volcam_e2e,
    "review-next-class": run_review,
    "dock": run_dock,
    "windowed-forward": run_windowed_forward,
    "windowed-e2e": run_windowed_e2e,
}
VARIANTS = tuple(RUNS)
TITLES = {
    "pydicom-decode": "pydicom `pixel_array` (DICOM floor)",
    "pyav-decode": "PyAV decode, rgb24 frames stacked (MP4 floor)",
    "pyav-decode-threads": "PyAV decode with frame threads, stacked",
    "volcam-load-dicom": "volcam.load (DICOM)",
    "volcam-load-mp4": "volcam.load (MP4)",
    "forward": "bare no_grad forward over the frames, 16 a batch (floor)",
    "volcam-e2e": "volcam end to end",
    "review-next-class": "ScanSession review",
    "dock": "napari dock (real viewer)",
    "windowed-forward": "windowed 3D model: bare no_grad forward over the windows (floor)",
    "windowed-e2e": "windowed 3D model: volcam end to end",
}
BEFORE = {
    ("pydicom-decode", "total"): "1.0 s / 1.06 GB",
    ("pyav-decode", "total"): "3.5 s / 1.08 GB",
    ("volcam-load-dicom", "total"): "10.3 s / 3.1 GB, float32",
    ("volcam-load-mp4", "total"): "9.9 s / 3.1 GB, float32",
    ("forward", "total"): "37.7 s / 1.17 GB",
    ("volcam-e2e", "explain"): "72.4 s = 1.92× the forward (Model.explain)",
    ("volcam-e2e", "total"): "83.5 s = 2.2× the forward, 3.2 GB (to the NIfTI)",
}
UNTIMED = (
    "import ",
    "load network",
    "load (untimed",
    "load_model (untimed",
    "gradcam predicted",
    "open in napari",
    "gradcam covid (untimed",
)
TARGET_LOAD, TARGET_LOAD_MEMORY, TARGET_TIME, TARGET_MEMORY, TARGET_REVIEW = 1.5, 1.3, 1.3, 1.15, 1.0


def worker(variant: str, cache: Path, threads: int, out: Path) -> None:
    start_load = os.getloadavg()[0]
    report: dict = {"variant": variant, "load_start": start_load}
    try:
        if variant == "build":
            build(cache)
            report["steps"] = {}
        else:
            if not variant.startswith(("pydicom-", "pyav-")):  # the references: no torch in their memory
                import torch

                torch.set_num_threads(threads)
                report["threads"] = torch.get_num_threads()
            clock = Clock(variant)
            RUNS[variant](cache, clock, report)
            report["steps"] = clock.steps
            from importlib.metadata import version

            report["versions"] = {name: version(name) for name in ("volcam", "torch", "monai", "pydicom", "av")}
    except Exception:
        report["error"] = traceback.format_exc()
        print(report["error"], file=sys.stderr, flush=True)
    report["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report["hwm_mib"] = hwm_mib()
    report["load_end"] = os.getloadavg()[0]
    out.write_text(json.dumps(report))
    if "error" in report:
        sys.exit(1)


# -- parent side ------------------------------------------------------------------------------------------


def spawn(variant: str, folder: Path, threads: int, tmp: Path, index: int = 0) -> dict:
    out = tmp / f"{variant}-{index}.json"
    cmd = [sys.executable, __file__, "--worker", variant, "--cache", str(folder), "--threads", str(threads)]
    cmd += ["--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, env=env)  # its progress lines go straight to our output
    if out.exists():
        return json.loads(out.read_text())
    return {"variant": variant, "error": f"the worker exited with {proc.returncode} and wrote no report"}


def ensure_data(root: Path, threads: int, tmp: Path) -> Path:
    folder = cache_folder(root)
    if (folder / "params.json").exists():
        print(f"data: cached in {folder}", flush=True)
        return folder
    print(f"data: building in {folder} (once; about 80 s and 3 GiB of memory on 2 cores) ...", flush=True)
    start = time.perf_counter()
    report = spawn("build", folder, threads, tmp)
    if "error" in report:
        sys.exit(f"building the data failed:\n{report['error']}")
    print(f"data: built in {time.perf_counter() - start:.0f} s, peak {report['peak_mib']:.0f} MiB", flush=True)
    return folder


def warm_page_cache(folder: Path) -> float:
    """Read both files once, so that no reader pays the disk (all find them in the page cache)."""
    start = time.perf_counter()
    for name in ("cine.dcm", "cine.mp4"):
        with open(folder / name, "rb") as f:
            while f.read(1 << 20):
                pass
    return time.perf_counter() - start


def combine(runs: list[dict]) -> dict:
    """Repeats of one variant: per step the median seconds; peak RSS the largest; the first's extras."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    merged = dict(ok[0])
    names = list(ok[0]["steps"])
    merged["steps"] = {n: statistics.median(r["steps"][n] for r in ok if n in r["steps"]) for n in names}
    merged["peak_mib"] = max(r["peak_mib"] for r in ok)
    merged["hwm_mib"] = max(r["hwm_mib"] for r in ok)
    merged["baseline_mib"] = min(r.get("baseline_mib", float("nan")) for r in ok)
    merged["load_start"] = ok[0]["load_start"]
    merged["load_end"] = ok[-1]["load_end"]
    merged["repeats"] = len(ok)
    merged["all_seconds"] = {n: [round(r["steps"].get(n, float("nan")), 3) for r in ok] for n in names}
    return merged


def total(report: dict) -> float:
    """A variant's seconds: every timed step but its library imports."""
    return sum(s for n, s in report["steps"].items() if not n.startswith(UNTIMED))


def own_peak_mib(report: dict) -> float:
    """The peak RSS above the RSS after the imports: what the read itself held at its most."""
    return report["peak_mib"] - report.get("baseline_mib", 0.0)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _ok(results: dict[str, dict], *variants: str) -> bool:
    return all(v in results and "error" not in results[v] for v in variants)


def target_load_time(results: dict[str, dict]) -> list[str]:
    """volcam.load ≤ 1.5× the bare decode, DICOM and MP4."""
    lines = []
    for load, floor, before in (
        ("volcam-load-dicom", "pydicom-decode", "10.3 s ÷ 1.0 s = 10.3×"),
        ("volcam-load-mp4", "pyav-decode", "9.9 s ÷ 3.5 s = 2.8×"),
    ):
        if not _ok(results, load, floor):
            lines.append(f"not measured: {TITLES[load]} ÷ {TITLES[floor]} (a variant failed or was not run)")
            continue
        seconds, reference = total(results[load]), total(results[floor])
        lines.append(
            f"{verdict(seconds / reference <= TARGET_LOAD)}: {TITLES[load]} {seconds:.2f} s = "
            f"**{seconds / reference:.2f}×** {TITLES[floor]} {reference:.2f} s (target ≤ {TARGET_LOAD}; "
            f"before: {before})"
        )
    if _ok(results, "volcam-load-mp4", "pyav-decode-threads"):
        seconds, reference = total(results["volcam-load-mp4"]), total(results["pyav-decode-threads"])
        lines.append(
            f"for reference: {TITLES['volcam-load-mp4']} = {seconds / reference:.2f}× "
            f"{TITLES['pyav-decode-threads']} {reference:.2f} s (volcam decodes with the same frame threads)"
        )
    return lines


def target_load_memory(results: dict[str, dict]) -> list[str]:
    """volcam.load's peak ≤ 1.3× the clip as stored (the peak above the process's RSS after its imports)."""
    lines = []
    stored = CLIP_BYTES / MIB
    for load in ("volcam-load-dicom", "volcam-load-mp4"):
        if not _ok(results, load):
            lines.append(f"not measured: {TITLES[load]} peak (the variant failed or was not run)")
            continue
        r = results[load]
        ratio = own_peak_mib(r) / stored
        lines.append(
            f"{verdict(ratio <= TARGET_LOAD_MEMORY)}: {TITLES[load]} peak {r['peak_mib']:.0f} MiB − "
            f"{r['baseline_mib']:.0f} MiB after `import torch, monai` = {own_peak_mib(r):.0f} MiB = "
            f"**{ratio:.2f}×** the clip as stored ({stored:.0f} MiB uint8) (target ≤ {TARGET_LOAD_MEMORY}; "
            "before: 3.1 GB, a float32 copy and the decoded uint8 one)"
        )
    for floor in ("pydicom-decode", "pyav-decode", "pyav-decode-threads"):
        if _ok(results, floor):
            r = results[floor]
            lines.append(
                f"for reference: {TITLES[floor]} peak {r['peak_mib']:.0f} MiB, {own_peak_mib(r):.0f} MiB above "
                f"its imports = {own_peak_mib(r) / stored:.2f}× the clip"
            )
    return lines


def target_end_to_end(results: dict[str, dict]) -> list[str]:
    """End to end (load → explain → NIfTI) ≤ 1.3× the bare forward over the frames; peak ≤ 1.15× (forward
    peak + the clip as stored)."""
    if not _ok(results, "volcam-e2e", "forward"):
        return ["not measured: volcam end to end ÷ the bare forward (a variant failed or was not run)"]
    e2e, forward = results["volcam-e2e"], results["forward"]
    core = total(e2e) - e2e["steps"].get("write_video", 0.0)
    floor = forward["steps"]["forward"]
    lines = [
        f"{verdict(core / floor <= TARGET_TIME)}: volcam end to end (load → load_model → explain → NIfTI) "
        f"{core:.1f} s = **{core / floor:.2f}×** the bare forward's {floor:.1f} s (target ≤ {TARGET_TIME}; "
        "before: 83.5 s ÷ 37.7 s = 2.2×)",
        f"for reference: with the MP4 and the animation written too {total(e2e):.1f} s = {total(e2e) / floor:.2f}× "
        f"the forward (the video: {e2e['steps'].get('write_video', float('nan')):.1f} s)",
    ]
    limit = forward["peak_mib"] + CLIP_BYTES / MIB
    peak = e2e.get("peak_to_nifti_mib", e2e["peak_mib"])
    ratio = peak / limit
    lines.append(
        f"{verdict(ratio <= TARGET_MEMORY)}: volcam end-to-end peak RSS (load → explain → NIfTI) {peak:.0f} MiB = "
        f"**{ratio:.2f}×** (forward peak {forward['peak_mib']:.0f} MiB + the clip as stored "
        f"{CLIP_BYTES / MIB:.0f} MiB) (target ≤ {TARGET_MEMORY}; before: 3.2 GB = 2.0×)"
    )
    lines.append(
        f"for reference: the peak with the MP4 and the animation written too {e2e['peak_mib']:.0f} MiB = "
        f"{e2e['peak_mib'] / limit:.2f}×"
    )
    return lines


def target_review(results: dict[str, dict]) -> list[str]:
    """The next class or gradient method on the same clip ≤ 1.0 s."""
    if not _ok(results, "review-next-class"):
        return ["not measured: the review's next class (the variant failed or was not run)"]
    r = results["review-next-class"]
    return [
        f"{verdict(r['steps'][step] <= TARGET_REVIEW)}: review, {step} on the same clip **{r['steps'][step]:.2f} s** "
        f"(target ≤ {TARGET_REVIEW} s; before: 47 s, every request reran all 300 frames)"
        for step in r["review_steps"]
    ]


def target_dock(results: dict[str, dict]) -> list[str]:
    """The napari dock's next class and method on the clip ≤ 1.0 s, from the request to the map layer updated."""
    if not _ok(results, "dock"):
        return ["not measured: the napari dock (the variant failed or was not run)"]
    r = results["dock"]
    return [
        f"{verdict(r['steps'][step] <= TARGET_REVIEW)}: napari dock, {step.removeprefix('dock ')} on the same clip, "
        f"from the request to the map layer updated: **{r['steps'][step]:.2f} s** (target ≤ {TARGET_REVIEW} s)"
        for step in r["dock_steps"]
    ]


def target_windowed(results: dict[str, dict]) -> list[str]:
    """The windowed clip model: end to end (load → explain → NIfTI) ≤ 1.3× its bare windowed forward."""
    if not _ok(results, "windowed-e2e", "windowed-forward"):
        return ["not measured: the windowed model end to end ÷ its forward (a variant failed or was not run)"]
    seconds, floor = total(results["windowed-e2e"]), results["windowed-forward"]["steps"]["forward"]
    return [
        f"{verdict(seconds / floor <= TARGET_TIME)}: windowed 3D model end to end {seconds:.1f} s = "
        f"**{seconds / floor:.2f}×** its bare forward over the {results['windowed-forward']['windows']} windows "
        f"{floor:.1f} s (target ≤ {TARGET_TIME})"
    ]


# The checks the report lists under "Targets", in order: each takes every variant's results and
# says PASS/FAIL lines (or "not measured"). The explain variants add theirs here.
TARGETS: list[Callable[[dict[str, dict]], list[str]]] = [
    target_load_time, target_load_memory, target_end_to_end, target_review, target_dock, target_windowed,
]  # fmt: skip


def targets(results: dict[str, dict]) -> list[str]:
    return [line for check in TARGETS for line in check(results)]


def table(results: dict[str, dict]) -> list[str]:
    lines = [
        "| variant | step | seconds | peak RSS MiB | baseline RSS MiB | before (issue) | load avg start → end |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for variant, r in results.items():
        title = TITLES.get(variant, variant)
        if "error" in r:
            last = r["error"].strip().splitlines()[-1][:200].replace("|", "\\|")
            lines.append(f"| {title} | failed: `{last}` | | | | | |")
            continue
        load = f"{r['load_start']:.2f} → {r['load_end']:.2f}"
        peak, base = f"{r['peak_mib']:.0f}", f"{r.get('baseline_mib', float('nan')):.0f}"
        for name, seconds in r["steps"].items():
            lines.append(f"| {title} | {name} | {seconds:.2f} | | | {BEFORE.get((variant, name), '')} | |")
        before = BEFORE.get((variant, "total"), "")
        lines.append(f"| {title} | **total** | **{total(r):.2f}** | **{peak}** | {base} | {before} | {load} |")
    return lines


def notes(results: dict[str, dict]) -> list[str]:
    lines = []
    for variant, r in results.items():
        if "error" in r:
            continue
        if "shape" in r:
            spacing = f", spacing {r['spacing']} (s, mm, mm)" if "spacing" in r else ""
            lines.append(f"- {variant}: {r['shape']} {r['dtype']}{spacing}")
        if abs(r["peak_mib"] - r["hwm_mib"]) > 16:
            lines.append(f"- {variant}: ru_maxrss {r['peak_mib']:.0f} MiB but VmHWM {r['hwm_mib']:.0f} MiB")
        if r.get("repeats", 1) > 1:
            lines.append(f"- {variant}: seconds of each repeat: {r['all_seconds']}")
    return lines


def source_state() -> str:
    """The commit measured and the files under src/ that differed from it (others may be editing them)."""
    root = HERE.parent

    def git(*words: str) -> str:
        try:
            return subprocess.run(["git", *words], cwd=root, capture_output=True, text=True, check=True).stdout.rstrip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return f"commit {commit}" + (f", with uncommitted changes in {', '.join(changed)}" if changed else ", clean")


def report(results: dict[str, dict], args: argparse.Namespace, folder: Path, info: dict, warm: float) -> str:
    versions: dict[str, str] = {}
    for r in results.values():
        versions.update(r.get("versions", {}))
    failures = [(v, r["error"]) for v, r in results.items() if "error" in r]
    lines = [
        "# A lung-ultrasound cine at clinical size",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, {platform.system()} {platform.release()}; shared with "
        "other people's jobs (load average per variant in the table)",
        f"- {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}; torch threads {args.threads}; "
        f"{args.repeats} fresh process(es) per variant, run in rounds (median seconds, largest peak)",
        f"- volcam source at the start: {args.source}",
        f"- cine: synthetic lung ultrasound (`lung_ultrasound`, seed {PHANTOM_SEED}, COVID: pleural line, A-lines, "
        f"B-lines sliding with breathing; {info.get('b_line_pixels')} B-line pixels), {FRAMES} frames at {FPS} fps, "
        f"{SCREEN[0]}×{SCREEN[1]} RGB (B-mode {BMODE[0]}×{BMODE[1]} at {PIXEL_MM} mm with coloured annotations); "
        f"uncompressed DICOM Ultrasound Multi-frame {info.get('dicom_bytes', 0) / 1e6:.0f} MB, H.264 MP4 "
        f"(crf {MP4['crf']}, {MP4['preset']}, {MP4['pix_fmt']}) {info.get('mp4_bytes', 0) / 1e6:.1f} MB; "
        f"both read once before the workers ({warm:.1f} s) so every reader finds them in the page cache",
        "- card (for the explain variants): MONAI `ResNet` 2D, basic blocks [2, 2, 2, 2], block_inplanes "
        f"[64, 128, 256, 512], 3 channels, {len(LABELS)} classes {LABELS}, random weights (seed {WEIGHTS_SEED}), "
        f'layer `{LAYER}`, kind "frames"; Resize {INPUT_SIZE[0]}×{INPUT_SIZE[1]} → ScaleIntensityRange 0..255 → 0..1',
        f"- data cache: `{folder}` (keyed by the parameters)",
        "- seconds: wall time of each step in its own fresh process (library imports shown, not counted; volcam's "
        "bytecode written before the first, as an installed copy has it); "
        "peak RSS: the worker's `ru_maxrss`; baseline: its RSS after the imports (volcam's workers import torch "
        "and MONAI, a MetaTensor's libraries, the references numpy and pydicom or PyAV only). The memory target "
        "compares the peak above the baseline, what the read held, with the clip as stored. volcam decodes the "
        "MP4 with FFmpeg's frame threads; the MP4 floor is PyAV's plain loop (the issue's), the threaded one "
        "is shown beside it",
        "",
        "## Targets",
        "",
        *[f"- {line}" for line in targets(results)],
        "",
        "## Numbers",
        "",
        *table(results),
        "",
        "Before: the figures the issue gives for today (same machine class).",
        "",
        *notes(results),
    ]
    for variant, error in failures:
        lines += ["", f"### {variant} failed", "", "```", error.strip(), "```"]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the cine and the card are kept")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per variant (median seconds)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not write {RESULTS.name}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown and not args.worker:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker, args.cache, args.threads, args.out)
        return
    args.source = source_state()
    with tempfile.TemporaryDirectory(prefix="volcam-ultrasound-bench-") as tmp:
        tmp = Path(tmp)
        folder = ensure_data(args.cache, args.threads, tmp)
        info = json.loads((folder / "params.json").read_text())
        warm = warm_page_cache(folder)
        print(f"page cache warmed in {warm:.1f} s", flush=True)
        print(f"bytecode written in {compile_sources():.1f} s (as an installed copy has it)", flush=True)
        runs = in_rounds(
            args.variants,
            args.repeats,
            lambda variant, i: spawn(variant, folder, args.threads, tmp, i),
            total,
        )
        results = {variant: combine(done) for variant, done in runs.items()}
    text = report(results, args, folder, info, warm)
    print()
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"written to {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
