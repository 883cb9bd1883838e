"""A method option's default lives in one place: the signature of the method's pure function.

The registry names the options and reads their defaults from that signature; these tests hold it to
that, for every registered method, and check that what the engine consumes itself comes from the
registry (Smooth Grad-CAM++'s noisy copies) or agrees with the engine's own signatures.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import replace

import pytest
import torch

import volcam
from volcam.methods.base import LayerCapture
from volcam.methods.registry import MethodInfo, get_method, register, signature_defaults

ALL = [m.name for m in volcam.methods()]
cfcam_module = importlib.import_module("volcam.methods.cfcam")  # the module; volcam.methods.cfcam is the function
registry_module = importlib.import_module("volcam.methods.registry")


def _signature_default(fn, name):
    return inspect.signature(fn).parameters[name].default


@pytest.mark.parametrize("name", ALL)
def test_every_option_default_is_the_functions_signature_default(name):
    info = get_method(name)
    assert info.function is not None, f"{name} names no function"
    for option in info.takes:
        assert option in info.options
        assert info.options[option] == _signature_default(info.function, option), f"{name}: {option}"
    assert set(info.options) == set(info.takes) | set(info.engine_options)


@pytest.mark.parametrize("name", ALL)
def test_every_option_the_function_takes_is_a_parameter_it_has(name):
    info = get_method(name)
    params = inspect.signature(info.function).parameters
    assert set(info.takes) <= set(params)


def test_the_known_defaults():
    """What users rely on; a change here is a change of behaviour, made in the signature."""
    assert get_method("cfcam").options == {"sigma_mm": 10.0, "range_sigma": None}
    assert get_method("kpcacam").options == {"kernel": "sigmoid", "max_positions": 4096, "seed": 0, "gamma": None}
    assert get_method("scorecam").options == {"weights": "probability", "max_channels": 128, "batch_size": None}
    assert get_method("occlusion").options["max_forwards"] == 128
    assert get_method("occlusion").options["baseline"] == "mean"
    assert get_method("lcam-fm").options == {"module": None}
    assert dict(get_method("gradcam").options) == {}


def test_engine_options_agree_with_the_engines_signatures():
    """Smooth Grad-CAM++'s noisy copies are the engine's options with their defaults in the registry
    only: gradient_moments' signature leaves them None. The perturbation batch size, until the runner
    reads it from the registry, is repeated in its signature, so the two must agree."""
    moments = get_method("smoothgradcam++").engine_options
    assert set(moments) == {"n_samples", "noise", "batch_size", "seed"}
    for option in moments:
        assert _signature_default(volcam.CamEngine.gradient_moments, option) is None, option
    for name in ("scorecam", "ablationcam", "occlusion"):
        assert get_method(name).engine_options["batch_size"] == _signature_default(
            volcam.CamEngine.runner, "batch_size"
        )


def test_gradient_moments_take_their_defaults_from_the_registry(monkeypatch, gapnet3d):
    x = torch.rand(1, 1, 8, 8, 8)
    info = get_method("smoothgradcam++")
    with volcam.CamEngine(gapnet3d, progress=False) as engine:
        plain = engine.gradient_moments(x)
        explicit = engine.gradient_moments(x, **info.engine_options)
        for name, moments in plain.items():
            for a, b in zip(moments, explicit[name], strict=True):
                torch.testing.assert_close(a, b)
        # a changed registry default is what the engine then draws with
        changed = {**info.engine_options, "noise": 0.5, "n_samples": 3}
        monkeypatch.setitem(registry_module._REGISTRY, "smoothgradcam++", replace(info, engine_options=changed))
        before, plain = plain, engine.gradient_moments(x)
        assert not all(torch.equal(before[n][0], plain[n][0]) for n in plain)
        explicit = engine.gradient_moments(x, **changed)
        for name, moments in plain.items():
            for a, b in zip(moments, explicit[name], strict=True):
                torch.testing.assert_close(a, b)


def test_changing_a_signature_default_is_what_the_registry_reports(monkeypatch):
    fn = cfcam_module.cfcam
    params = list(inspect.signature(fn).parameters.values())
    defaults = tuple(p.default if p.name != "sigma_mm" else 3.0 for p in params if p.default is not p.empty)
    monkeypatch.setattr(fn, "__defaults__", defaults)
    info = get_method("cfcam")
    assert info.options["sigma_mm"] == 3.0
    # and the engine's call, which fills options from info.options, computes with it
    a, g = torch.rand(1, 32, 4, 4, 4), torch.randn(1, 32, 4, 4, 4)
    capture = LayerCapture("l", a, gradients=g, spacing=(2.0, 2.0, 2.0))
    expected = fn(a, g, spacing=(2.0, 2.0, 2.0), sigma_mm=3.0)
    torch.testing.assert_close(info.compute(capture, **info.options), expected)


def test_a_new_methods_options_come_from_its_signature():
    def mycam(activations: torch.Tensor, *, power: float = 2.0, floor: float | None = None) -> torch.Tensor:
        return activations.mean(1, keepdim=True).pow(power)

    info = MethodInfo(
        "mycam",
        lambda c, power, **_: mycam(c.activations, power=power),
        frozenset(),
        "1F",
        "test",
        function=mycam,
        takes=("power", "floor"),
        engine_options={"batch_size": 2},
    )
    assert dict(info.options) == {"power": 2.0, "floor": None, "batch_size": 2}
    mycam.__kwdefaults__["power"] = 0.5
    assert info.options["power"] == 0.5


def test_registering_an_option_without_a_default_or_twice_fails():
    def nodefault(activations: torch.Tensor, power: float) -> torch.Tensor:
        return activations

    with pytest.raises(ValueError, match="no parameter 'power' with a default"):
        register(
            MethodInfo("nodefaultcam", lambda c, **_: c, frozenset(), "1F", "x", function=nodefault, takes=("power",))
        )
    with pytest.raises(ValueError, match="no parameter 'missing'"):
        signature_defaults(nodefault, ["missing"])
    with pytest.raises(ValueError, match="both the function's and the engine's"):
        register(
            MethodInfo(
                "twicecam",
                lambda c, **_: c,
                frozenset(),
                "1F",
                "x",
                function=cfcam_module.cfcam,
                takes=("sigma_mm",),
                engine_options={"sigma_mm": 1.0},
            )
        )
    assert "nodefaultcam" not in [m.name for m in volcam.methods()]
    assert "twicecam" not in [m.name for m in volcam.methods()]


def test_docs_methods_page_covers_every_method_and_the_docstrings_anchors():
    """docs/methods.md is the home of the formulas; the methods', metrics' and targets' docstrings point into it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "methods.md").read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    for name in ALL:
        assert f"`{name}`" in page, name
    package = root / "src" / "volcam"
    cited: dict[str, set[str]] = {}
    for source in [*(package / "methods").glob("*.py"), *(package / "metrics").glob("*.py"), package / "targets.py"]:
        text = source.read_text()
        assert "METHODS.md" not in text, source.name  # a design file outside the repository
        for anchor in re.findall(r"docs/methods\.md#([\w-]+)", text):
            cited.setdefault(anchor, set()).add(source.name)
    assert cited and set(cited) <= anchors, {a: cited[a] for a in set(cited) - anchors}
    # the metrics and the targets point into the page too, not only the methods
    assert {"metrics", "faithfulness", "localization", "sanity", "robustness", "notation"} <= set(cited)
    assert set(re.findall(r"\]\(#([\w-]+)\)", page)) <= anchors  # the page's own links
