"""volcam.model.session: one scan explained many ways pays one forward, and gives Model.explain's maps."""

from __future__ import annotations

import time

import pytest
import torch

import volcam
from volcam import sample_data
from volcam.errors import LayerError, TargetError
from volcam.model.session import ScanSession

pytestmark = pytest.mark.slow  # the demo models explain the demo CT a dozen times


@pytest.fixture(scope="module")
def ct():
    return volcam.load(sample_data.file(sample_data.CT_NIFTI)), volcam.load_model(sample_data.file(sample_data.CT_CARD))


def test_classes_and_methods_share_one_forward_and_match_model_explain(ct):
    scan, model = ct
    with ScanSession(model, scan) as session:
        first = session.explain("gradcam")
        assert first.timings["preprocess"] > 0
        for method, target in (("gradcam", "normal"), ("gradcam++", "covid"), ("layercam", None), ("xgradcam", 0)):
            start = time.perf_counter()
            got = session.explain(method, target)
            seconds = time.perf_counter() - start
            expected = model.explain(scan, method, target)
            torch.testing.assert_close(got.map, expected.map)
            assert (got.target, got.prediction, got.probabilities) == (
                expected.target,
                expected.prediction,
                expected.probabilities,
            )
            assert got.timings["preprocess"] == 0.0 and seconds < 2.0
        assert session.forwards == 1
        session.explain("gradcam", layer="layer3")  # another layer: its own engine, its own forward
        assert session.forwards == 2
        torch.testing.assert_close(
            session.explain("gradcam", layer="layer3").map, model.explain(scan, "gradcam", layer="layer3").map
        )
        assert session.forwards == 2
    assert not session._engines


def test_gradient_sigma_reaches_the_engine(ct):
    scan, model = ct
    with ScanSession(model, scan) as session:
        plain = session.explain("gradcam")
        smooth = session.explain("gradcam", gradient_sigma_mm=8.0)
    torch.testing.assert_close(smooth.map, model.explain(scan, "gradcam", gradient_sigma_mm=8.0).map)
    assert not torch.allclose(plain.map, smooth.map)


def test_mistakes_are_one_line_errors(ct):
    scan, model = ct
    session = ScanSession(model, scan)
    with pytest.raises(TargetError, match="no class 'pneumonia'"):
        session.explain("gradcam", "pneumonia")
    with pytest.raises(LayerError, match="no layer 'layer9'"):
        session.explain("gradcam", layer="layer9")


def test_frame_models_on_clips_go_through_model_explain():
    clip = volcam.load(sample_data.file(sample_data.LUS_DICOM))
    model = volcam.load_model(sample_data.file(sample_data.LUS_CARD))
    got = ScanSession(model, clip).explain("gradcam++")
    torch.testing.assert_close(got.map, model.explain(clip, "gradcam++").map)
    assert tuple(got.map.shape) == tuple(clip.shape)


def test_session_explains_with_the_cards_learned_module() -> None:
    """L-CAM needs the module the card records; the session finds it as Model.explain does."""
    model = volcam.load_model(sample_data.file(sample_data.CT_CARD))
    scan = volcam.load(sample_data.file(sample_data.CT_NIFTI))
    with ScanSession(model, scan) as session:
        for method in ("lcam-fm", "lcam-img"):
            ours = session.explain(method, target="covid")
            direct = model.explain(scan, method, target="covid")
            assert torch.allclose(ours.map.as_tensor(), direct.map.as_tensor(), atol=1e-5)
