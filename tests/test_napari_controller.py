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
    from napari_volcam._images import ScanImage
    from napari_volcam._sample_data import demo_ct

    scan, mask = demo_ct()
    return ScanImage.of(scan), mask[0]


@pytest.fixture
def controller(demo):
    from napari_volcam._controller import DockController

    c = DockController()
    image, mask = demo
    c.card_for(image)
    c.reviewing.set_mask("lesions", mask)
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
    from napari_volcam._form import AUTO, PREDICTED
    from volcam.workflows.specs import ExplainSpec

    c, (image, mask) = controller, demo
    assert c.card.endswith(sample_data.CT_CARD)  # the demo card follows the scan's modality
    choices = c.choices()
    assert choices.classes == [PREDICTED, "normal", "covid"]
    assert choices.layers[0] == AUTO and "layer2" in choices.layers

    job = c.start(image)
    assert job is not None and c.runner.running and job.steps == 2 and not job.compare
    assert job.spec == ExplainSpec() and job.spec.method_kwargs() == {}  # the form's defaults are the spec's
    assert c.status.text == "explaining with gradcam …"
    (shown,) = run(c, job)
    assert not c.runner.running and c.last_error == ""
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
    r = c.reviewing
    assert shown.go_to == peak(layer.data)[0] == r.peak()
    review = r.review
    np.testing.assert_allclose(review.profile, slice_profile(layer.data))
    assert review.top == top_slices(layer.data, k=5)
    assert r.step_top(1) == review.top[0] and r.step_top(1) == review.top[1] and r.step_top(-1) == review.top[0]
    assert review.localization["pointing_hit"] and "hit (0.0 mm)" in shown.localization
    assert review.localization["energy_in_mask"] > 2 * review.localization["energy_baseline"]
    view = r.profile_view(7)
    assert view.label == "axial slice" and view.current == 7
    assert r.pick(7.2) == 7 and r.pick(-3) == 0 and r.pick(1e3) == len(review.profile) - 1 and r.pick(None) is None
    # slices of the map's grid, in the scan layer's world: 5 mm network slices from the scan's first one
    assert r.scale == pytest.approx((5.0, 2.8, 2.8)) and r.translate[0] == pytest.approx(image.translate[0])
    assert r.world_of(10) == pytest.approx(image.translate[0] + 10 * 5.0)
    assert r.index_of(r.world_of(10)) == 10

    # another mask: no numbers; the mask again: recomputed (the dock does this in a worker)
    r.set_mask("none", None)
    assert r.localize() is None and r.localization_text() == ""
    r.set_mask("lesions", mask)
    new = r.localize()()
    assert "hit" in r.accept(new) and r.review is new
    r.set_mask("wrong grid", mask[:, :10])
    assert r.localize()().localization is None
    assert r.accept(r.localize()()) == "wrong grid: not on the map's grid, or empty"


def test_switching_class_and_method_reuses_the_forward(controller, demo):
    c, (image, _) = controller, demo
    run(c, c.start(image))
    (session,) = c.sessions
    assert session.forwards == 1
    names = []
    for method, target in (("gradcam", "normal"), ("gradcam++", "covid"), ("layercam", "predicted")):
        c.form.method, c.form.target = method, target
        (shown,) = run(c, c.start(image))
        names.append(shown.layer.name)
        assert c.last_error == "" and c.last_explanation.method == method
    assert c.sessions == [session] and session.forwards == 1  # one forward served every class and method
    assert names == ["gradcam · normal", "gradcam++ · covid", "layercam · covid"]


def test_compare_gives_one_layer_per_method_and_a_grid(controller, demo):
    c, (image, _) = controller, demo
    assert c.start_comparison(image, ["gradcam"]) is None
    assert c.last_error == "select two or more methods to compare" and "error" in c.status.text
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
    assert c.cancel() and c.status.text == "cancelled"
    assert c.accept(job, first) is None and list(steps) == []
    c.finish()
    assert c.grid(job, ["demo chest CT"]) == [] and c.reviewing.review is None


def test_mistakes_are_one_line(controller, demo, tmp_path):
    from napari_volcam._controller import DockController
    from napari_volcam._status import error_text

    c, (image, _) = controller, demo
    assert DockController().start(image) is None  # no card
    assert c.start(None) is None and c.last_error == "choose an image layer and a model card first"
    (tmp_path / "bad.json").write_text("{not json")
    for card in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(Exception) as caught:
            c.choices(str(card))
        text = c.fail(caught.value)
        assert text == error_text(caught.value) and "\n" not in text and card.name in text, text
        assert c.status.text.startswith("<span") and text in c.status.text

    # a CT volume model on an ultrasound clip: the error surfaces from the run, as the worker reports it
    from napari_volcam._images import ScanImage, is_clip
    from napari_volcam._review import map_spacing
    from napari_volcam._sample_data import demo_ultrasound

    clip = ScanImage.of(demo_ultrasound()[0])
    assert c.card_for(clip).endswith(sample_data.LUS_CARD)
    c.card = str(tmp_path / "mine.card.json")
    assert c.card_for(clip) == c.card  # a card of the user's own stays when the scan changes
    c.card = str(sample_data.file(sample_data.CT_CARD))
    job = c.start(clip)
    from volcam.metrics.localization import NO_DISTANCE

    assert is_clip(clip) and map_spacing(clip.scale, True) == (NO_DISTANCE, *clip.scale[1:])  # none across frames
    with pytest.raises(volcam.VolcamError) as caught:
        run(c, job)
    c.finish()
    assert "explains volumes" in c.fail(caught.value)


def test_layer_lists_offer_scans_not_maps():
    from napari_volcam._images import layer_lists

    lists = layer_lists(
        [("ct", "image", {}), ("gradcam · covid", "image", {"volcam": {"kind": "cam"}}), ("mask", "labels", {})],
        image="gone",
        mask="",
    )
    assert (lists.images, lists.masks, lists.image, lists.mask) == (["ct"], ["none", "mask"], "ct", "mask")
    lists = layer_lists([("ct", "image", {})], image="ct", mask="mask")
    assert (lists.image, lists.mask) == ("ct", "none")


def test_a_job_holds_the_spec_the_form_asks_for_and_a_wrong_choice_is_one_line(controller, demo, monkeypatch):
    from volcam.model.session import ScanSession
    from volcam.workflows.specs import ExplainSpec

    c, (image, _) = controller, demo
    c.form.target, c.form.layer, c.form.sigma_mm = "normal", "layer2", 2.0
    job = c.start(image, ["gradcam", "gradcam++"])
    assert job.spec == ExplainSpec.of(
        methods="gradcam,gradcam++", target="normal", layer="layer2", gradient_sigma_mm=2.0
    )
    asked = []  # what the worker asks the scan's session
    explain = ScanSession.explain

    def spy(session, method, **kwargs):
        asked.append((method, kwargs))
        return explain(session, method, **kwargs)

    monkeypatch.setattr(ScanSession, "explain", spy)
    run(c, job)
    expected = {"target": "normal", "layer": "layer2", "gradient_sigma_mm": 2.0, "on": "network"}
    assert asked == [("gradcam", expected), ("gradcam++", expected)]

    c.form.target, c.form.layer, c.form.sigma_mm = "predicted", "auto", 0.0  # the spec's None: off, the card's
    assert c.start(image).spec == ExplainSpec() and c.cancel()
    c.finish()
    for field, value, option in (("method", "no-such-cam", "--method"), ("sigma_mm", -1.0, "--gradient-sigma-mm")):
        setattr(c.form, field, value)
        assert c.start(image) is None and not c.runner.running
        assert c.last_error.startswith(f"{option}: ") and "\n" not in c.last_error, c.last_error
        assert "error" in c.status.text
        c.form = type(c.form)(card=c.form.card)


def test_the_forms_defaults_are_the_specs(monkeypatch):
    from dataclasses import fields

    from napari_volcam._controller import DockController
    from volcam.workflows.specs import ExplainSpec, default

    form = DockController().form
    assert (form.method, form.target, form.layer, form.sigma_mm) == (
        default(ExplainSpec, "methods")[0],
        "predicted",
        "auto",
        0.0,
    )
    methods = next(f for f in fields(ExplainSpec) if f.name == "methods")
    monkeypatch.setattr(methods, "default", ("hirescam",))  # a default changed in the spec changes the dock
    assert DockController().form.method == "hirescam"


def test_one_session_per_layer_closed_when_its_data_changes_or_it_leaves(controller, demo, monkeypatch):
    from napari_volcam._images import ScanImage
    from volcam.model.session import ScanSession

    closed = []
    close = ScanSession.close
    monkeypatch.setattr(ScanSession, "close", lambda session: (closed.append(session), close(session)))
    c, (image, _) = controller, demo
    metadata = {key: value for key, value in image.metadata.items() if key != "volcam_built_scan"}
    other = ScanImage(image.name, image.data, image.scale, image.translate, metadata)  # the same scan in two layers
    for layer, target in ((image, "covid"), (image, "normal"), (other, "covid"), (image, "predicted")):
        c.form.target = target
        run(c, c.start(layer))
        assert c.last_error == ""
    first, second = c.sessions
    assert first is not second and first.forwards == second.forwards == 1 and closed == []

    other.data = np.array(other.data)  # new data in the layer: a new scan, a new session, the old one closed
    run(c, c.start(other))
    assert closed == [second] and c.sessions[0] is first and c.sessions[1].scan is not second.scan

    c.layers_left([image])  # the other layer left the viewer
    assert c.sessions == [first] and len(closed) == 2
    c.data_changed(image)  # the dock hears of new data at once (napari's data event)
    assert c.sessions == [] and closed[-1] is first


def test_a_ct_read_by_napari_own_reader_runs_one_forward_for_two_class_switches(tmp_path):
    # A layer volcam did not read: its scan is built once (kept with the layer, in the stored dtype), so the
    # layer's session serves both class switches from the one forward.
    pytest.importorskip("napari_builtins")
    from napari.layers import Layer
    from napari_builtins.io import napari_get_reader

    from napari_volcam._controller import DockController

    scan = volcam.load(sample_data.file(sample_data.CT_DICOM))
    geometry = display_geometry(scan)
    path = str(tmp_path / "ct.npy")
    np.save(path, geometry.to_display(scan[0].numpy()))
    (layer_data,) = napari_get_reader(path)(path)
    layer = Layer.create(*layer_data)
    layer.scale = geometry.scale
    assert layer.data.dtype == np.int16 and not layer.metadata
    c = DockController()
    c.card = str(sample_data.file(sample_data.CT_CARD))
    for target in ("predicted", "normal", "covid"):
        c.form.target = target
        run(c, c.start(layer))
        assert c.last_error == ""
    (session,) = c.sessions
    assert session.forwards == 1  # one session, one forward
    assert session.scan.dtype == scan.dtype  # no float copy of the volume


def test_what_the_gui_thread_asks_reads_no_voxels_and_computes_nothing(controller, demo, monkeypatch):
    """The dock's calls on the GUI thread (start, accept, the review's answers) are bookkeeping: the worker's
    run made everything they show, so a clinical-size scan costs the GUI thread nothing more."""
    import volcam.viz.review
    from napari_volcam._images import ScanImage

    class Voxels:  # the layer's data: any use of it on the GUI thread fails
        def __getattr__(self, name):
            raise AssertionError(f"the GUI thread read the layer's data ({name})")

    c, (image, _) = controller, demo
    metadata = {key: value for key, value in image.metadata.items() if key != "volcam_built_scan"}
    layer = ScanImage(image.name, Voxels(), image.scale, image.translate, metadata)
    job = c.start(layer, ["gradcam", "hirescam"])
    results = list(c.run(job))  # the worker: the scan volcam read, whose view the layer shows
    for name in ("peak", "slice_profile", "top_slices", "localization"):
        monkeypatch.setattr(volcam.viz.review, name, lambda *a, **k: pytest.fail("computed on the GUI thread"))
    shown = [c.accept(job, result) for result in results]
    c.finish()
    assert [s.layer.name for s in shown[1:]] == ["gradcam · covid (compare)", "hirescam · covid (compare)"]
    r = c.reviewing
    assert r.peak() == r.review.peak and r.step_top(1) == r.review.top[0] and r.profile_view(3).current == 3
    assert "hit" in r.localization_text() and r.world_of(r.index_of(r.world_of(4))) == r.world_of(4)


def test_a_clip_shows_the_explained_class_per_frame_and_a_click_goes_to_that_frame():
    """What an ultrasound reader looks at beside the clip: the explained class's probability in each frame
    (the same numbers as summary.json's), on the map's frames; a click on the plot picks that frame."""
    import numpy as np

    from napari_volcam._controller import DockController
    from napari_volcam._images import ScanImage
    from napari_volcam._sample_data import demo_ultrasound

    clip = ScanImage.of(demo_ultrasound()[0])
    c = DockController()
    assert c.card_for(clip).endswith(sample_data.LUS_CARD)
    c.form.target = "covid"
    assert len(run(c, c.start(clip))) == 1
    explanation = c.reviewing.explanation
    frames = explanation.result.frame_probabilities[:, list(explanation.probabilities).index("covid")]
    view = c.reviewing.profile_view(current=3)
    assert view.label == "frame" and view.probability_label == "covid" and view.current == 3
    assert view.probability.shape == view.profile.shape == (clip.data.shape[0],)
    np.testing.assert_allclose(view.probability, frames.numpy(), rtol=1e-6)
    best = int(np.argmax(view.probability))
    assert c.reviewing.pick(best + 0.3) == best  # a click near a frame on the plot goes to that frame
    assert c.reviewing.world_of(best) == pytest.approx(clip.translate[0] + best * clip.scale[0])
