"""The dock's controller without Qt or a viewer: explain the demo CT, switch class or method, compare, review."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import volcam
from volcam import sample_data
from volcam.viz.display import display_geometry
from volcam.viz.review import peak, slice_profile, top_slices

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo():
    """The demo CT and its lesion mask as the sample-data command gives them (layer data, no viewer)."""
    from napari_volcam._controller import ScanImage
    from napari_volcam._sample_data import demo_ct

    scan, mask = demo_ct()
    return ScanImage.of(scan), mask[0]


@pytest.fixture
def controller(demo):
    from napari_volcam._controller import DockController

    c = DockController()
    image, mask = demo
    c.card_for(image)
    c.set_mask("lesions", mask)
    return c


def run(c, job):
    """What the dock's worker and GUI thread do with one job, in one thread."""
    shown = [c.accept(job, result) for result in c.run(job)]
    c.finish()
    return [s for s in shown if s is not None]


def test_the_controller_imports_no_qt_and_no_napari():
    code = (
        "import sys, napari_volcam._controller; "
        "qt = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in qt]; "
        "print(bad); assert not bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_explain_gives_the_api_map_as_a_layer_with_status_and_review(controller, demo):
    from napari_volcam._controller import AUTO, PREDICTED

    c, (image, mask) = controller, demo
    assert c.card.endswith(sample_data.CT_CARD)  # the demo card follows the scan's modality
    choices = c.choices()
    assert choices.classes == [PREDICTED, "normal", "covid"]
    assert choices.layers[0] == AUTO and "layer2" in choices.layers
    assert c.settings() == {"target": None, "layer": None}

    job = c.start(image)
    assert job is not None and c.running and job.steps == 2 and not job.compare
    assert c.status == "explaining with gradcam …"
    (shown,) = run(c, job)
    assert not c.running and c.last_error == ""
    layer = shown.layer
    assert layer.name == "gradcam · covid" and layer.source == "demo chest CT" and layer.colorbar
    scan = volcam.load(sample_data.file(sample_data.CT_DICOM))
    model = volcam.load_model(sample_data.file(sample_data.CT_CARD))
    expected = volcam.ScanSession(model, scan).explain("gradcam", on="network")  # the map on the network's grid
    np.testing.assert_allclose(
        layer.data, display_geometry(expected.map).to_display(expected.map[0].numpy()), atol=1e-5
    )
    assert layer.data.shape == (24, 32, 32) and layer.affine is not None
    info = layer.metadata["volcam"]
    assert info["kind"] == "cam" and info["source_layer"] == "demo chest CT" and info["geometry"]["axes"] == "zyx"
    assert info["grid"] == "network" and c.last_explanation.grid == "network"
    assert layer.metadata["volcam_scan"] is image.metadata["volcam_scan"]
    # the full-resolution map is made only when asked, and it is Model.explain's
    np.testing.assert_allclose(
        c.last_explanation.to_scan().map.numpy(), model.explain(scan, "gradcam").map.numpy(), atol=1e-5
    )
    assert "prediction: covid" in shown.status and "normal 0.000" in shown.status
    assert (layer.display.colormap, layer.display.threshold, layer.display.opacity) == ("turbo", 0.2, 0.7)

    # review: the map opens on its peak slice; profile, top slices and localization
    assert shown.go_to == peak(layer.data)[0] == c.peak()
    review = c.review
    np.testing.assert_allclose(review.profile, slice_profile(layer.data))
    assert review.top == top_slices(layer.data, k=5)
    assert c.step_top(1) == review.top[0] and c.step_top(1) == review.top[1] and c.step_top(-1) == review.top[0]
    assert review.localization["pointing_hit"] and "hit (0.0 mm)" in shown.localization
    assert review.localization["energy_in_mask"] > 2 * review.localization["energy_baseline"]
    view = c.profile_view(7)
    assert view.label == "axial slice" and view.current == 7
    assert c.pick(7.2) == 7 and c.pick(-3) == 0 and c.pick(1e3) == len(review.profile) - 1 and c.pick(None) is None
    # slices of the map's grid, in the scan layer's world: 5 mm network slices from the scan's first one
    assert c.map_scale == pytest.approx((5.0, 2.8, 2.8)) and c.map_translate[0] == pytest.approx(image.translate[0])
    assert c.world_of(10) == pytest.approx(image.translate[0] + 10 * 5.0)
    assert c.index_of(c.world_of(10)) == 10

    # another mask: no numbers; the mask again: recomputed (the dock does this in a worker)
    c.set_mask("none", None)
    assert c.localize() is None and c.localization_text() == ""
    c.set_mask("lesions", mask)
    new = c.localize()()
    assert "hit" in c.accept_review(new) and c.review is new
    c.set_mask("wrong grid", mask[:, :10])
    assert c.localize()().localization is None
    assert c.accept_review(c.localize()()) == "wrong grid: not on the map's grid, or empty"


def test_switching_class_and_method_reuses_the_forward(controller, demo):
    c, (image, _) = controller, demo
    run(c, c.start(image))
    (session,) = c.sessions
    assert session.forwards == 1
    names = []
    for method, target in (("gradcam", "normal"), ("gradcam++", "covid"), ("layercam", "predicted")):
        c.method, c.target = method, target
        (shown,) = run(c, c.start(image))
        names.append(shown.layer.name)
        assert c.last_error == "" and c.last_explanation.method == method
    assert c.sessions == [session] and session.forwards == 1  # one forward served every class and method
    assert names == ["gradcam · normal", "gradcam++ · covid", "layercam · covid"]
    c.sigma_mm = 2.0
    assert c.settings()["gradient_sigma_mm"] == 2.0


def test_compare_gives_one_layer_per_method_and_a_grid(controller, demo):
    c, (image, _) = controller, demo
    assert c.start_comparison(image, ["gradcam"]) is None
    assert c.last_error == "select two or more methods to compare" and "error" in c.status
    job = c.start_comparison(image, ["gradcam++", "hirescam"])
    assert job.compare and job.steps == 3
    shown = run(c, job)
    names = [s.layer.name for s in shown]
    assert names == ["gradcam++ · covid (compare)", "hirescam · covid (compare)"]
    assert all(s.go_to is None and not s.layer.colorbar for s in shown)
    cells = c.grid(job, ["demo chest CT", "demo chest CT lesions", *names])
    assert [(cell.under, cell.copy, cell.cam) for cell in cells] == [
        ("demo chest CT", False, names[0]),
        ("demo chest CT ⟨1⟩", True, names[1]),
    ]
    assert c.grid(job, ["demo chest CT", "demo chest CT ⟨1⟩", *names])[1].copy is False  # the copy is reused


def test_cancel_drops_what_comes_after(controller, demo):
    c, (image, _) = controller, demo
    assert not c.cancel()  # nothing runs
    job = c.start(image, ["gradcam", "gradcam++", "hirescam"])
    steps = c.run(job)
    assert next(steps) is None  # model and scan ready
    first = next(steps)
    assert c.cancel() and c.status == "cancelled"
    assert c.accept(job, first) is None and list(steps) == []
    c.finish()
    assert c.grid(job, ["demo chest CT"]) == [] and c.review is None


def test_mistakes_are_one_line(controller, demo, tmp_path):
    from napari_volcam._controller import DockController, error_text

    c, (image, _) = controller, demo
    assert DockController().start(image) is None  # no card
    assert c.start(None) is None and c.last_error == "choose an image layer and a model card first"
    (tmp_path / "bad.json").write_text("{not json")
    for card in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(Exception) as caught:
            c.choices(str(card))
        text = c.fail(caught.value)
        assert text == error_text(caught.value) and "\n" not in text and card.name in text, text
        assert c.status.startswith("<span") and text in c.status

    # a CT volume model on an ultrasound clip: the error surfaces from the run, as the worker reports it
    from napari_volcam._controller import ScanImage
    from napari_volcam._sample_data import demo_ultrasound

    clip = ScanImage.of(demo_ultrasound()[0])
    assert c.card_for(clip).endswith(sample_data.LUS_CARD)
    c.card = str(tmp_path / "mine.card.json")
    assert c.card_for(clip) == c.card  # a card of the user's own stays when the scan changes
    c.card = str(sample_data.file(sample_data.CT_CARD))
    job = c.start(clip)
    from volcam.metrics.localization import NO_DISTANCE

    assert job.spacing == (NO_DISTANCE, *clip.scale[1:])  # no distance across frames
    with pytest.raises(volcam.VolcamError) as caught:
        run(c, job)
    c.finish()
    assert "explains volumes" in c.fail(caught.value)


def test_layer_lists_offer_scans_not_maps(controller):
    lists = controller.layer_lists(
        [("ct", "image", {}), ("gradcam · covid", "image", {"volcam": {"kind": "cam"}}), ("mask", "labels", {})],
        image="gone",
        mask="",
    )
    assert (lists.images, lists.masks, lists.image, lists.mask) == (["ct"], ["none", "mask"], "ct", "mask")
    lists = controller.layer_lists([("ct", "image", {})], image="ct", mask="mask")
    assert (lists.image, lists.mask) == ("ct", "none")
