"""One pass over a clip's frames: the clip prepared chunk by chunk, the class read from that pass's
logits, head backwards for every class or gradient method after it, maps on the network's grid or the
clip's."""

from __future__ import annotations

import time

import pytest
import torch

import volcam
from conftest import GapNet
from volcam import sample_data
from volcam.engine.clip import ClipPass
from volcam.maps.geometry import normalize
from volcam.model.preprocess import Preprocessing
from volcam.model.session import ScanSession

# The demo clip's maps before one pass was kept (every frame run twice, the clip prepared whole as
# float32): each frame's sum of the map on the clip's grid (24 × 128 × 128), and where it peaks.
BEFORE = {
    ("gradcam", None): (
        [3082.5, 3132.9, 3274.9, 3413.8, 3552.8, 3628.7, 3652.4, 3719.1, 3663.8, 3411.5, 3316.2, 3151.4,
         2988.0, 2947.3, 2902.0, 2958.1, 3044.9, 3103.3, 3088.0, 3119.7, 3154.0, 3191.3, 3184.1, 2999.1],
        13005,
    ),
    ("gradcam", "healthy"): (
        [1262.2, 1164.1, 1077.2, 994.6, 1062.0, 1000.7, 1074.9, 1047.9, 1002.0, 1056.6, 1184.2, 1213.1,
         1367.1, 1515.8, 1510.1, 1527.5, 1521.6, 1448.8, 1348.3, 1383.1, 1343.1, 1375.9, 1526.6, 1424.0],
        382491,
    ),
    ("cam", None): (
        [2880.1, 2917.5, 3121.9, 3285.9, 3499.9, 3583.6, 3659.9, 3618.2, 3527.3, 3228.3, 3022.2, 2852.1,
         2741.5, 2764.6, 2868.2, 3147.6, 3359.7, 3436.6, 3444.2, 3534.3, 3550.8, 3558.1, 3466.7, 3112.7],
        355543,
    ),
}  # fmt: skip
BEFORE_PROBABILITIES = {"healthy": 0.01027, "covid": 0.98973}


@pytest.fixture(scope="module")
def lus():
    clip = volcam.load(sample_data.file(sample_data.LUS_DICOM))
    return clip, volcam.load_model(sample_data.file(sample_data.LUS_CARD))


class Calls:
    """Counts the network's forward calls (one per batch of frames)."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.count = 0
        self.handle = network.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1


@pytest.mark.parametrize(("method", "target"), list(BEFORE))
def test_the_clips_map_is_the_one_before_one_pass_was_kept(lus, method, target):
    clip, model = lus
    explained = model.explain(clip, method, target)
    sums, peak = BEFORE[(method, target)]
    torch.testing.assert_close(explained.map[0].as_tensor().flatten(1).sum(1), torch.tensor(sums), atol=0.1, rtol=0)
    assert int(explained.map.as_tensor().argmax()) == peak
    assert explained.probabilities == BEFORE_PROBABILITIES


def test_the_clips_map_is_the_frames_explained_as_one_batch(lus):
    """Against a reference computation: the clip prepared whole, all frames in one batch, the map
    normalised over the clip and carried back through the card's inverse."""
    clip, model = lus
    explained = model.explain(clip, "gradcam", "healthy")
    prepared = model.prepare(clip)
    with volcam.CamEngine(model.network, model.card.layer, labels=model.labels) as engine:
        direct = engine.explain(prepared.as_tensor().permute(1, 0, 2, 3), "gradcam", "healthy", normalize=False)
    expected = model.preprocessing.invert(normalize(direct.map[:, 0][None, None])[0], prepared, like=clip)
    torch.testing.assert_close(explained.map.as_tensor(), torch.as_tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(explained.result.frame_probabilities, torch.softmax(direct.output, 1))


def test_a_uint8_clip_gives_the_float_clips_map(lus):
    clip, model = lus
    stored = clip.to(torch.uint8)  # what volcam.load gives for 8-bit frames
    assert stored.dtype == torch.uint8
    torch.testing.assert_close(model.explain(stored, "gradcam").map, model.explain(clip, "gradcam").map)


def test_the_next_class_and_gradient_method_run_no_forward(lus):
    clip, model = lus
    longer = type(clip)(clip.as_tensor().repeat(1, 4, 1, 1), meta=dict(clip.meta))  # 96 frames
    calls = Calls(model.network)
    try:
        with ScanSession(model, longer) as session:
            start = time.perf_counter()
            first = session.explain("gradcam", on="network")
            first_seconds = time.perf_counter() - start
            assert calls.count == 6 and session.forwards == 1  # 96 frames, 16 a batch: one pass
            other = "healthy" if first.target == "covid" else "covid"
            seconds = []
            for method, target in (("gradcam", other), ("gradcam++", first.target), ("gradcam", other)):
                start = time.perf_counter()
                got = session.explain(method, target, on="network")
                seconds.append(time.perf_counter() - start)
                assert got.target == target and got.timings["preprocess"] == 0.0
            assert calls.count == 6 and session.forwards == 1
            assert min(seconds) < 0.5 * first_seconds, (first_seconds, seconds)
            session.explain("cam")  # another layer (the one feeding the pooling): its own pass
            assert calls.count >= 12 and session.forwards == 2
    finally:
        calls.handle.remove()


def test_the_map_on_the_networks_grid_is_placed_on_the_clip(lus):
    clip, model = lus
    with ScanSession(model, clip) as session:
        net = session.explain("gradcam", "covid", on="network")
        full = session.explain("gradcam", "covid")
        grid = session._prepared
    assert net.grid == "network" and "invert" not in net.timings
    assert tuple(net.map.shape) == (1, 24, 64, 64) and torch.equal(net.map.affine, grid.affine)
    assert float(net.map.max()) == 1.0  # normalised over the whole clip, not frame by frame
    torch.testing.assert_close(net.to_scan().map, full.map)
    torch.testing.assert_close(full.map, model.explain(clip, "gradcam", "covid").map)
    # the affine places the network's grid on the clip: frame t at t frame intervals, pixels 128/64 wider
    torch.testing.assert_close(grid.affine[:3, :3].diagonal(), torch.tensor([0.1, 0.6, 0.6], dtype=torch.float64))
    assert tuple(net.result.frame_probabilities.shape) == (24, 2)


def test_the_clip_is_prepared_chunk_by_chunk(lus, monkeypatch):
    clip, model = lus
    seen: list[tuple[int, ...]] = []
    call = Preprocessing.__call__

    def recording(self, image):
        seen.append(tuple(image.shape))
        return call(self, image)

    monkeypatch.setattr(Preprocessing, "__call__", recording)
    got = model.explain(clip, "gradcam", chunk_size=5)
    assert seen and max(shape[1] for shape in seen) == 5 and sum(shape[1] for shape in seen) == 24
    monkeypatch.setattr(Preprocessing, "__call__", call)
    torch.testing.assert_close(got.map, model.explain(clip, "gradcam").map)


RESIZE = {"name": "Resize", "args": {"spatial_size": [-1, 16, 16], "mode": "trilinear"}}
SCALE = {"name": "ScaleIntensityRange", "args": {"a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0}}


@pytest.mark.parametrize(
    ("steps", "by_frame"),
    [
        ([RESIZE, SCALE], True),
        ([{"name": "Flip", "args": {"spatial_axis": 2}}, SCALE], True),
        ([RESIZE, {"name": "ScaleIntensity", "args": {}}], False),  # reads the whole clip's range
        ([{"name": "Resize", "args": {"spatial_size": [6, 16, 16], "mode": "trilinear"}}], False),  # along T
        ([{"name": "Flip", "args": {"spatial_axis": 0}}], False),  # frames reversed
    ],
)
def test_chunks_give_the_whole_clips_values_when_the_steps_work_frame_by_frame(lus, steps, by_frame):
    clip = lus[0][:, :9]
    preprocessing = Preprocessing(steps, 1)
    grid = preprocessing.grid(clip)
    assert preprocessing.frame_by_frame(clip, grid) is by_frame
    whole = preprocessing(clip)
    assert tuple(grid.shape) == tuple(whole.shape) and torch.allclose(grid.affine, whole.affine.double())
    if by_frame:
        chunks = torch.cat(list(preprocessing.chunks(clip, 4, torch.device("cpu"))), dim=1)
        torch.testing.assert_close(chunks, whole.as_tensor())


def test_a_card_whose_steps_read_the_whole_clip_prepares_it_whole(lus, tmp_path):
    import json

    clip, model = lus
    card = json.loads(model.card.path.read_text())
    card["preprocessing"][1] = {"name": "ScaleIntensity", "args": {}}
    card["weights"] = str(model.card.weights)
    path = tmp_path / "minmax.card.json"
    path.write_text(json.dumps(card))
    minmax = volcam.load_model(path)
    grid, chunks = minmax.prepare_clip(clip, 10)
    assert grid.device.type == "cpu" and [c.shape[1] for c in chunks()] == [10, 10, 4]  # the real clip, whole
    prepared = minmax.prepare(clip)
    torch.testing.assert_close(grid.as_tensor(), prepared.as_tensor())
    explained = minmax.explain(clip, "gradcam", "covid")
    with volcam.CamEngine(minmax.network, minmax.card.layer, labels=minmax.labels) as engine:
        direct = engine.explain(prepared.as_tensor().permute(1, 0, 2, 3), "gradcam", "covid", normalize=False)
    expected = minmax.preprocessing.invert(normalize(direct.map[:, 0][None, None])[0], prepared, like=clip)
    torch.testing.assert_close(explained.map.as_tensor(), torch.as_tensor(expected), atol=1e-5, rtol=0)


def test_methods_that_run_the_model_again_take_the_frames_again(lus):
    clip, model = lus
    with ScanSession(model, clip) as session:
        session.explain("gradcam")
        eigen = session.explain("eigencam")  # activations only: from the kept pass
        assert session.forwards == 1
        ablation = session.explain("ablationcam", "covid", on="network")
    prepared = model.prepare(clip)
    expected = volcam.explain_clip(
        model.network, prepared, "ablationcam", "covid", model.card.layer, labels=model.labels
    )
    torch.testing.assert_close(ablation.map.as_tensor(), expected.map.as_tensor(), atol=1e-5, rtol=0)
    assert eigen.map.shape == clip.shape


def test_a_kept_forward_is_explained_without_its_input():
    net = GapNet(2, in_channels=3).eval()
    x = torch.rand(5, 3, 16, 16)
    with volcam.CamEngine(net, "features.3") as engine:  # the layer feeding the pooling, for CAM
        fwd = engine.forward(x)
        like = torch.empty(x.shape, device="meta")
        for method, target in (("gradcam", 1), ("gradcam++", None), ("cam", 2)):
            kept = engine.explain_forward(fwd, like, method, target)
            direct = engine.explain(x, method, target)
            torch.testing.assert_close(kept.map, direct.map)
            torch.testing.assert_close(kept.scores, direct.scores)
        with pytest.raises(volcam.MethodError, match="runs the model on its input again"):
            engine.explain_forward(fwd, like, "scorecam")
        with pytest.raises(volcam.MethodError, match="kept no graph"):
            engine.explain_forward(engine.forward(x.clone(), graph=False), like, "gradcam")


def test_a_clip_pass_is_made_once_and_again_only_for_a_graph():
    net = GapNet(2, in_channels=3).eval()
    frames = torch.rand(7, 3, 12, 12)
    with volcam.CamEngine(net, "features.3") as engine:
        clip_pass = ClipPass(engine, lambda: frames.split(3))
        clip_pass.explain("cam", None, {})  # no gradients: a pass without the head's graph
        clip_pass.explain("cam", 1, {})
        assert clip_pass.passes == 1
        items = clip_pass.explain("gradcam", 1, {})  # gradients: the pass again, with the graph
        clip_pass.explain("cam", 0, {})
        assert clip_pass.passes == 2
        direct = engine.explain(frames, "gradcam", 1, normalize=False)
    assert items.size == (12, 12)  # the maps on the layer's grid, for the caller to bring up once
    torch.testing.assert_close(items.maps, direct.raw)
    torch.testing.assert_close(items.outputs, direct.output)


def test_a_perturbation_method_with_a_target_runs_no_pass_for_the_class():
    net = GapNet(2, in_channels=3).eval()
    frames = torch.rand(5, 3, 12, 12)
    with volcam.CamEngine(net, "features.3") as engine:
        clip_pass = ClipPass(engine, lambda: frames.split(2))
        items = clip_pass.explain("ablationcam", 1, {})
        assert clip_pass.passes == 0 and items.maps.shape == (5, 1, 12, 12)
        with pytest.raises(volcam.InputError, match="no frames"):
            ClipPass(engine, lambda: iter(())).explain("gradcam", None, {})
