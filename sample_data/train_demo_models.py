"""Regenerate everything in sample_data/: demo models (weights, cards, held-out metrics) and sample scans.

    python sample_data/train_demo_models.py [--out sample_data] [--only lcam]

Deterministic (fixed seeds, one thread order) and CPU-only; a few minutes on 2 cores.

- ``ct_covid``: a small 3D ResNet (MONAI ``ResNet``, basic blocks, GAP + linear head) telling
  COVID-like chest-CT phantoms from normal ones. Trained on seeds 1000+, the default target layer
  picked by Grad-CAM pointing on validation seeds 5000+, scored on held-out seeds 9000+.
- ``lus_covid``: a frame-based 2D ResNet for lung-ultrasound clips (B-lines / consolidation vs
  A-lines). Trained on seeds 20000+, scored on held-out clips 29000+ (clip = mean frame probability).
- ``lus_covid_3d``: a small spatio-temporal 3D ResNet over 16-frame windows of lung-ultrasound clips
  (``kind: "clip"``, ``window: {"frames": 16, "stride": 8}``: volcam runs a longer clip window by
  window and stitches the maps). Trained on 16-frame clips, seeds 20000+, scored on the 2D model's
  held-out clips (24 frames, 29000+). ``--only lus3d`` retrains just it.
- ``ct_covid_vit``: a small 3D vision transformer (MONAI ``ViT``, 4x4x4-voxel patches on the CT card's
  grid, a class token) on the same phantoms and seeds, so the transformer's maps (Grad-CAM at the last
  block's first norm, attention rollout) can be shown beside the CNN's. ``--only vit`` retrains just it.
- ``ct_covid.lcam-fm.pt`` / ``ct_covid.lcam-img.pt``: L-CAM attention modules for the CT model at its
  card's layer, trained (classifier frozen) on the same training phantoms (seeds 1000+) and recorded
  in its card. ``--only lcam`` retrains just these, leaving the classifiers' weights untouched.
- Sample scans from seeds no model saw: a chest CT as NIfTI and as the same volume in a DICOM
  series, a multi-frame ultrasound DICOM, each with its mask.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from volcam.model.model import Model, load_model
from volcam.model.preprocess import Preprocessing
from volcam.testing.phantoms import (
    CT_LABELS,
    LUS_LABELS,
    chest_ct,
    lung_ultrasound,
    write_ct_dicom,
    write_ultrasound_dicom,
)

HERE = Path(__file__).resolve().parent
CT_SEEDS = {"train": 1000, "validation": 5000, "test": 9000}
LUS_SEEDS = {"train": 20000, "test": 29000}
SAMPLE_CT_SEED, SAMPLE_LUS_SEED = 424242, 434343
POINTING_TOLERANCE_MM = 5.0
LCAM_LR = 0.02
VIT_EPOCHS = 120  # a transformer learns this from 160 phantoms far more slowly than the CNN (10 epochs)
VIT_LR = 1e-3

CT_NETWORK = {
    "block": "basic",
    "layers": [1, 1, 1, 1],
    "block_inplanes": [4, 8, 16, 32],
    "spatial_dims": 3,
    "n_input_channels": 1,
    "num_classes": 2,
    "conv1_t_size": 3,
    "conv1_t_stride": 1,
    "no_max_pool": True,
}
CT_PREPROCESSING = [
    {"name": "Orientation", "args": {"axcodes": "RAS", "labels": [["L", "R"], ["P", "A"], ["I", "S"]]}},
    {"name": "Spacing", "args": {"pixdim": [2.8, 2.8, 5.0], "mode": "bilinear"}},
    {"name": "ScaleIntensityRange", "args": {"a_min": -1000, "a_max": 200, "b_min": 0.0, "b_max": 1.0, "clip": True}},
    {"name": "ResizeWithPadOrCrop", "args": {"spatial_size": [32, 32, 24]}},
]
CT_VIT_NETWORK = {
    "in_channels": 1,
    "img_size": [32, 32, 24],
    "patch_size": [4, 4, 4],
    "hidden_size": 48,
    "mlp_dim": 96,
    "num_layers": 3,
    "num_heads": 4,
    "classification": True,
    "num_classes": 2,
    "spatial_dims": 3,
    "post_activation": "none",  # plain logits (MONAI's default squashes them with tanh)
}
# the CNN's, with intensities centred (-1..2 instead of 0..1): the ViT does not learn from the uncentred ones
CT_VIT_PREPROCESSING = [
    *CT_PREPROCESSING[:2],
    {"name": "ScaleIntensityRange", "args": {"a_min": -1000, "a_max": 200, "b_min": -1.0, "b_max": 2.0, "clip": True}},
    CT_PREPROCESSING[3],
]
LUS_NETWORK = {
    "block": "basic",
    "layers": [1, 1, 1, 1],
    "block_inplanes": [8, 16, 32, 64],
    "spatial_dims": 2,
    "n_input_channels": 1,
    "num_classes": 2,
    "conv1_t_size": 3,
    "conv1_t_stride": 1,
    "no_max_pool": True,
}
LUS_PREPROCESSING = [
    {"name": "Resize", "args": {"spatial_size": [-1, 64, 64], "mode": "trilinear"}},
    {"name": "ScaleIntensityRange", "args": {"a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0, "clip": True}},
]
# the frame model's ResNet in 3D over (T, H, W), half as wide: 3x3x3 kernels cost 3x the weights
LUS_3D_NETWORK = {**LUS_NETWORK, "spatial_dims": 3, "block_inplanes": [4, 8, 16, 32]}
LUS_3D_WINDOW = {"frames": 16, "stride": 8}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(name: str, card: dict, network_args: dict, out: Path) -> tuple[torch.nn.Module, Preprocessing]:
    from monai.networks import nets

    torch.manual_seed(0)
    network = getattr(nets, card["network"]["monai"])(**network_args)
    return network, Preprocessing(card["preprocessing"], 1, where=name)


def logits(output) -> torch.Tensor:
    """The classifier's logits (MONAI's ViT returns them with its hidden states)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for i in tqdm(range(0, len(x), batch), desc=f"epoch {epoch + 1}", leave=False):
            idx = order[i : i + batch]
            xb = x[idx]
            if xb.ndim == 5:  # flips left-right: a lesion is a lesion on either side
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None, None], xb.flip(2), xb)
            out = logits(net(xb))
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
        log(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.3f}, train accuracy {correct / len(x):.1%}")
    net.eval()


def pointing_hit(cam: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> bool:
    """Whether the map's argmax lies within POINTING_TOLERANCE_MM of the mask (distances in mm)."""
    near = distance_transform_edt(mask == 0, sampling=spacing) <= POINTING_TOLERANCE_MM
    return bool(near.flat[int(np.argmax(cam))])


def card_dict(
    name: str, kind: str, labels, layer: str, network: dict, preprocessing: list, monai: str = "ResNet", **extra
) -> dict:
    return {
        "volcam_card": 1,
        "name": name,
        "kind": kind,
        "labels": list(labels),
        "layer": layer,
        "in_channels": 1,
        "network": {"monai": monai, "args": network},
        "weights": f"{name}.pt",
        "preprocessing": preprocessing,
        "metrics": f"{name}.metrics.json",
        **extra,
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# -- CT -------------------------------------------------------------------------------------------


def ct_set(base: int, n: int, pre: Preprocessing) -> tuple[torch.Tensor, torch.Tensor, list]:
    xs, ys, phantoms = [], [], []
    for i in tqdm(range(n), desc=f"CT phantoms {base}+", leave=False):
        p = chest_ct(base + i, covid=bool(i % 2))
        xs.append(pre(p.metatensor()).as_tensor())
        ys.append(p.label)
        phantoms.append(p)
    return torch.stack(xs), torch.tensor(ys), phantoms


def pointing(model: Model, phantoms: list, layer: str, method: str = "gradcam") -> float:
    hits = []
    for p in tqdm(phantoms, desc=f"pointing game at {layer}", leave=False):
        if p.label:
            ex = model.explain(p.metatensor(), method, target="covid", layer=layer)
            hits.append(pointing_hit(ex.map[0].numpy(), p.mask, p.spacing))
    return float(np.mean(hits))


def train_on_ct(
    what: str, card: dict, network_args: dict, out: Path, n_train: int, epochs: int, lr: float
) -> tuple[torch.nn.Module, Preprocessing, Model]:
    """Build the card's network, train it on CT phantoms and write its weights and card (named after the
    card); the trained network, the card's preprocessing and the card loaded as a volcam Model."""
    name = card["name"]
    net, pre = build(name, card, network_args, out)
    log(f"{what}: {n_train} training phantoms (seeds {CT_SEEDS['train']}+)")
    x, y, _ = ct_set(CT_SEEDS["train"], n_train, pre)
    log(f"{what}: training {sum(p.numel() for p in net.parameters())} parameters on {tuple(x.shape)}")
    train(net, x, y, epochs=epochs, batch=8, lr=lr)
    torch.save(net.state_dict(), out / f"{name}.pt")
    write_json(out / f"{name}.card.json", card)
    return net, pre, load_model(out / f"{name}.card.json")


def make_ct(out: Path, n_train: int, n_val: int, n_test: int, epochs: int) -> dict:
    card = card_dict(
        "ct_covid", "volume", CT_LABELS, "layer2", CT_NETWORK, CT_PREPROCESSING,
        modality="CT",
        description="Demo 3D CNN (MONAI ResNet, 4 basic blocks, GAP + linear) on synthetic chest-CT phantoms: "
        "COVID-like ground-glass/consolidation vs normal. For demonstration only, not for diagnosis.",
    )  # fmt: skip
    net, pre, model = train_on_ct("CT", card, CT_NETWORK, out, n_train, epochs, lr=3e-3)

    log(f"CT: choosing the default layer by Grad-CAM pointing on {n_val} validation phantoms")
    _, _, val = ct_set(CT_SEEDS["validation"], n_val, pre)
    scores = {layer: pointing(model, val, layer) for layer in ("layer2", "layer3")}
    layer = max(scores, key=scores.get)
    log(f"CT: validation pointing {scores} -> {layer}")
    card["layer"] = layer
    write_json(out / "ct_covid.card.json", card)
    model = load_model(out / "ct_covid.card.json")

    log(f"CT: scoring on {n_test} held-out phantoms (seeds {CT_SEEDS['test']}+)")
    xt, yt, test = ct_set(CT_SEEDS["test"], n_test, pre)
    with torch.no_grad():
        p_covid = torch.softmax(net(xt), 1)[:, 1].numpy()
    metrics = {
        "held_out": f"{n_test} phantoms, seeds {CT_SEEDS['test']}..{CT_SEEDS['test'] + n_test - 1}, half COVID",
        "auc": round(float(roc_auc_score(yt.numpy(), p_covid)), 4),
        "accuracy": round(float(((p_covid > 0.5) == yt.numpy().astype(bool)).mean()), 4),
        "pointing_game": {
            "method": "gradcam",
            "layer": layer,
            "tolerance_mm": POINTING_TOLERANCE_MM,
            "hit_rate": round(pointing(model, test, layer), 4),
            "cases": int(yt.sum()),
        },
        "validation_pointing": {k: round(v, 4) for k, v in scores.items()},
        "training": {"phantoms": n_train, "epochs": epochs, "seeds_from": CT_SEEDS["train"]},
    }
    write_json(out / "ct_covid.metrics.json", metrics)
    log(f"CT: held-out {json.dumps(metrics)}")
    return metrics


def make_ct_vit(out: Path, n_train: int, n_test: int, epochs: int) -> dict:
    """The transformer beside the CNN: same phantoms, seeds and preprocessing, a MONAI ViT."""
    layer = f"blocks.{CT_VIT_NETWORK['num_layers'] - 1}.norm1"  # what "auto" picks, as the literature does
    card = card_dict(
        "ct_covid_vit", "volume", CT_LABELS, layer, CT_VIT_NETWORK, CT_VIT_PREPROCESSING, monai="ViT",
        modality="CT",
        description="Demo 3D vision transformer (MONAI ViT, 4x4x4-voxel patches, 3 blocks, class token) on "
        "synthetic chest-CT phantoms: COVID-like ground-glass/consolidation vs normal. For demonstration only, "
        "not for diagnosis.",
    )  # fmt: skip
    net, pre, model = train_on_ct("CT ViT", card, CT_VIT_NETWORK, out, n_train, epochs, lr=VIT_LR)

    log(f"CT ViT: scoring on {n_test} held-out phantoms (seeds {CT_SEEDS['test']}+)")
    xt, yt, test = ct_set(CT_SEEDS["test"], n_test, pre)
    with torch.no_grad():
        p_covid = torch.softmax(logits(net(xt)), 1)[:, 1].numpy()
    games = {
        method: {
            "method": method,
            "layer": layer,
            "tolerance_mm": POINTING_TOLERANCE_MM,
            "hit_rate": round(pointing(model, test, layer, method), 4),
            "cases": int(yt.sum()),
        }
        for method in ("gradcam", "rollout")
    }
    metrics = {
        "held_out": f"{n_test} phantoms, seeds {CT_SEEDS['test']}..{CT_SEEDS['test'] + n_test - 1}, half COVID",
        "auc": round(float(roc_auc_score(yt.numpy(), p_covid)), 4),
        "accuracy": round(float(((p_covid > 0.5) == yt.numpy().astype(bool)).mean()), 4),
        "pointing_game": games["gradcam"],
        "pointing_game_rollout": games["rollout"],
        "training": {"phantoms": n_train, "epochs": epochs, "seeds_from": CT_SEEDS["train"]},
    }
    write_json(out / "ct_covid_vit.metrics.json", metrics)
    log(f"CT ViT: held-out {json.dumps(metrics)}")
    return metrics


def make_lcam(out: Path, n_train: int, epochs: dict[str, int]) -> dict:
    """L-CAM-Fm and L-CAM-Img for the CT model, on its training phantoms; recorded in its card."""
    from volcam.workflows.lcam_training import train_lcam

    model = load_model(out / "ct_covid.card.json")
    log(f"L-CAM: {n_train} CT training phantoms (seeds {CT_SEEDS['train']}+), layer {model.card.layer}")
    scans = [chest_ct(CT_SEEDS["train"] + i, covid=bool(i % 2)).metatensor() for i in range(n_train)]
    summary = {}
    for variant, n_epochs in epochs.items():
        run = train_lcam(model, scans, variant, epochs=n_epochs, lr=LCAM_LR, seed=0)
        last = run.history[run.best_epoch - 1]
        summary[variant] = {
            "epochs": len(run.history),
            "best_epoch": run.best_epoch,
            "val_loss": round(last["val_loss"], 4),
        }
        log(f"L-CAM-{variant.capitalize()}: {summary[variant]} in {run.seconds:.0f} s -> {run.path.name}")
    return summary


# -- lung ultrasound ------------------------------------------------------------------------------


def make_lus(out: Path, n_train: int, n_test: int, epochs: int) -> dict:
    card = card_dict(
        "lus_covid", "frames", LUS_LABELS, "layer3", LUS_NETWORK, LUS_PREPROCESSING,
        modality="US",
        description="Demo frame-based 2D CNN (MONAI ResNet, GAP + linear) on synthetic lung-ultrasound clips: "
        "B-lines/consolidation (covid) vs none (healthy); clip class = mean frame probability. Not for diagnosis.",
    )  # fmt: skip
    net, pre = build("lus_covid", card, LUS_NETWORK, out)
    log(f"US: {n_train} training clips (seeds {LUS_SEEDS['train']}+)")
    xs, ys = [], []
    for i in tqdm(range(n_train), desc="ultrasound clips", leave=False):
        clip = lung_ultrasound(LUS_SEEDS["train"] + i, covid=bool(i % 2), frames=8)
        frames = pre(clip.metatensor()).as_tensor().permute(1, 0, 2, 3)  # (T, 1, H, W)
        xs.append(frames)
        ys += [clip.label] * len(frames)
    x, y = torch.cat(xs), torch.tensor(ys)
    train(net, x, y, epochs=epochs, batch=32, lr=3e-3)
    torch.save(net.state_dict(), out / "lus_covid.pt")
    write_json(out / "lus_covid.card.json", card)
    model = load_model(out / "lus_covid.card.json")

    log(f"US: scoring on {n_test} held-out clips (seeds {LUS_SEEDS['test']}+)")
    probs, labels, hits = [], [], []
    for i in tqdm(range(n_test), desc="held-out clips", leave=False):
        clip = lung_ultrasound(LUS_SEEDS["test"] + i, covid=bool(i % 2))
        ex = model.explain(clip.metatensor(), "gradcam", target="covid")
        probs.append(ex.probabilities["covid"])
        labels.append(clip.label)
        if clip.label:
            hits.append(pointing_hit(ex.map[0].numpy(), clip.mask, (1e9, *clip.pixel_spacing)))  # within frames
    probs_a, labels_a = np.array(probs), np.array(labels)
    metrics = {
        "held_out": f"{n_test} clips, seeds {LUS_SEEDS['test']}..{LUS_SEEDS['test'] + n_test - 1}, half COVID",
        "clip_auc": round(float(roc_auc_score(labels_a, probs_a)), 4),
        "clip_accuracy": round(float(((probs_a > 0.5) == labels_a.astype(bool)).mean()), 4),
        "pointing_game": {
            "method": "gradcam",
            "layer": card["layer"],
            "tolerance_mm": POINTING_TOLERANCE_MM,
            "hit_rate": round(float(np.mean(hits)), 4),
            "cases": len(hits),
            "note": "argmax of the whole clip's map inside a B-line/consolidation of its frame",
        },
        "training": {"clips": n_train, "frames_per_clip": 8, "epochs": epochs, "seeds_from": LUS_SEEDS["train"]},
    }
    write_json(out / "lus_covid.metrics.json", metrics)
    log(f"US: held-out {json.dumps(metrics)}")
    return metrics


def mass_lift(cam: np.ndarray, mask: np.ndarray) -> float:
    """The map's share of its mass inside the mask over the mask's share of the clip (1: no better than uniform)."""
    return float((cam * (mask > 0)).sum() / cam.sum() / (mask > 0).mean())


def make_lus_3d(out: Path, n_train: int, n_test: int, epochs: int) -> dict:
    """A spatio-temporal model on 16-frame windows; volcam runs longer clips window by window."""
    card = card_dict(
        "lus_covid_3d", "clip", LUS_LABELS, "layer3", LUS_3D_NETWORK, LUS_PREPROCESSING,
        modality="US", window=LUS_3D_WINDOW,
        description="Demo spatio-temporal 3D CNN (MONAI ResNet over (T, H, W), GAP + linear) on 16-frame windows of "
        "synthetic lung-ultrasound clips: B-lines/consolidation (covid) vs none (healthy); a longer clip is seen "
        "window by window (16 frames every 8), clip class = mean window probability. Not for diagnosis.",
    )  # fmt: skip
    net, pre = build("lus_covid_3d", card, LUS_3D_NETWORK, out)
    frames = LUS_3D_WINDOW["frames"]
    log(f"US 3D: {n_train} training clips of {frames} frames (seeds {LUS_SEEDS['train']}+)")
    xs, ys = [], []
    for i in tqdm(range(n_train), desc="ultrasound windows", leave=False):
        clip = lung_ultrasound(LUS_SEEDS["train"] + i, covid=bool(i % 2), frames=frames)
        xs.append(pre(clip.metatensor()).as_tensor())  # (1, frames, 64, 64)
        ys.append(clip.label)
    x, y = torch.stack(xs), torch.tensor(ys)
    log(f"US 3D: training {sum(p.numel() for p in net.parameters())} parameters on {tuple(x.shape)}")
    train(net, x, y, epochs=epochs, batch=8, lr=3e-3)  # its flips reverse time: lung sliding either way
    torch.save(net.state_dict(), out / "lus_covid_3d.pt")
    write_json(out / "lus_covid_3d.card.json", card)
    model = load_model(out / "lus_covid_3d.card.json")

    log(f"US 3D: scoring on {n_test} held-out clips (seeds {LUS_SEEDS['test']}+), window by window")
    probs, labels, hits, lifts = [], [], [], []
    for i in tqdm(range(n_test), desc="held-out clips", leave=False):
        clip = lung_ultrasound(LUS_SEEDS["test"] + i, covid=bool(i % 2))
        ex = model.explain(clip.metatensor(), "gradcam", target="covid")
        probs.append(ex.probabilities["covid"])
        labels.append(clip.label)
        if clip.label:
            cam = ex.map[0].numpy()
            hits.append(pointing_hit(cam, clip.mask, (1e9, *clip.pixel_spacing)))
            lifts.append(mass_lift(cam, clip.mask))
    probs_a, labels_a = np.array(probs), np.array(labels)
    metrics = {
        "held_out": f"{n_test} clips of 24 frames, seeds {LUS_SEEDS['test']}..{LUS_SEEDS['test'] + n_test - 1}, "
        "half COVID",
        "clip_auc": round(float(roc_auc_score(labels_a, probs_a)), 4),
        "clip_accuracy": round(float(((probs_a > 0.5) == labels_a.astype(bool)).mean()), 4),
        "pointing_game": {
            "method": "gradcam",
            "layer": card["layer"],
            "tolerance_mm": POINTING_TOLERANCE_MM,
            "hit_rate": round(float(np.mean(hits)), 4),
            "cases": len(hits),
            "note": "argmax of the stitched map inside a B-line/consolidation of its frame",
        },
        "mask_mass_lift": {
            "mean": round(float(np.mean(lifts)), 4),
            "note": "the map's share of its mass inside the B-line/consolidation mask over the mask's share "
            "(1: uniform)",
        },
        "window": LUS_3D_WINDOW,
        "training": {"clips": n_train, "frames_per_clip": frames, "epochs": epochs, "seeds_from": LUS_SEEDS["train"]},
    }
    write_json(out / "lus_covid_3d.metrics.json", metrics)
    log(f"US 3D: held-out {json.dumps(metrics)}")
    return metrics


# -- sample scans -----------------------------------------------------------------------------------


def make_samples(out: Path) -> None:
    log("samples: chest CT (NIfTI + DICOM series), lung ultrasound (multi-frame DICOM), masks")
    ct = chest_ct(SAMPLE_CT_SEED, covid=True)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    image = nib.Nifti1Image(ct.image, ct.affine, header)
    image.set_qform(ct.affine, code=1)
    image.set_sform(ct.affine, code=1)
    nib.save(image, out / "ct_covid_sample.nii.gz")
    mask = nib.Nifti1Image(ct.mask, ct.affine, header)
    mask.set_qform(ct.affine, code=1)
    mask.set_sform(ct.affine, code=1)
    nib.save(mask, out / "ct_covid_sample_mask.nii.gz")
    write_ct_dicom(ct, out / "ct_covid_sample_dicom", key=SAMPLE_CT_SEED)
    clip = lung_ultrasound(SAMPLE_LUS_SEED, covid=True)
    write_ultrasound_dicom(clip, out / "lus_covid_sample.dcm", key=SAMPLE_LUS_SEED)
    # The clip's mask as (T, H, W) with the clip's spacing (s, mm, mm) on the diagonal.
    affine = np.diag([clip.frame_interval, *clip.pixel_spacing, 1.0])
    nib.save(nib.Nifti1Image(clip.mask, affine), out / "lus_covid_sample_mask.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--quick", action="store_true", help="tiny sets, for checking the script runs")
    parser.add_argument("--samples-only", action="store_true", help="write the sample scans only (no training)")
    parser.add_argument(
        "--only",
        choices=["lcam", "vit", "lus3d"],
        help="run one step only: 'lcam' retrains the L-CAM modules of the CT model, 'vit' the CT transformer, "
        "'lus3d' the windowed ultrasound model",
    )
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True, warn_only=True)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    lcam = {"n_train": 16 if q else 160, "epochs": {"fm": 1, "img": 1} if q else {"fm": 30, "img": 8}}
    vit = {"n_train": 16 if q else 160, "n_test": 8 if q else 60, "epochs": 1 if q else VIT_EPOCHS}
    if args.only == "lcam":
        make_lcam(args.out, **lcam)
        return
    lus3d = {"n_train": 16 if q else 160, "n_test": 4 if q else 20, "epochs": 1 if q else 10}
    if args.only == "vit":
        make_ct_vit(args.out, **vit)
        return
    if args.only == "lus3d":
        make_lus_3d(args.out, **lus3d)
        return
    make_samples(args.out)
    if args.samples_only:
        return
    ct = make_ct(args.out, n_train=16 if q else 160, n_val=4 if q else 16, n_test=8 if q else 60, epochs=1 if q else 10)
    make_lcam(args.out, **lcam)
    vit_metrics = make_ct_vit(args.out, **vit)
    lus = make_lus(args.out, n_train=8 if q else 80, n_test=4 if q else 20, epochs=1 if q else 5)
    lus3d_metrics = make_lus_3d(args.out, **lus3d)
    log(
        f"done in {time.perf_counter() - start:.0f} s: CT AUC {ct['auc']}, CT ViT AUC {vit_metrics['auc']}, "
        f"US clip AUC {lus['clip_auc']}, US 3D clip AUC {lus3d_metrics['clip_auc']}"
    )


if __name__ == "__main__":
    main()
