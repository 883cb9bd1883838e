"""CI's bounded fuzz campaign (about two minutes on 2 cores): fixed seeds, derandomized Hypothesis.

Two halves, both through :class:`fuzz.oracle.Oracle` (one line or the right result, no hang, no crash,
no memory past what the header check allowed, no file outside ``--out``):

- ``test_seeded_campaign``: :data:`INPUTS` inputs made from the seed corpus round-robin with
  ``Random(f"{CAMPAIGN}-{i}")``: every kind of file, ``volcam explain``/``volcam cohort`` on every
  :data:`EXPLAIN_EVERY`-th round;
- ``test_*_properties``: Hypothesis draws the mutations (``st.randoms()``), per format, with
  ``derandomize=True`` and no example database, so CI tries the same inputs every run; a failure
  is shrunk to fewer changes.

The long campaign is ``python benchmarks/fuzz.py --minutes N``; each failure either found becomes a
fixed input in ``test_fuzz_regressions.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.campaign import run_campaign
from fuzz.generators import make_input
from fuzz.oracle import Oracle, Request
from fuzz.seeds import Seed

CAMPAIGN = 27  # the campaign's seed; benchmarks/fuzz.py takes others
INPUTS = 260
EXPLAIN_EVERY = 4
EXAMPLES = 25  # per Hypothesis property

pytestmark = pytest.mark.slow

HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _failures(tally_failures: list) -> str:
    return "\n".join(
        f"{request.target} {request.path.name}: {outcome.failure}: {outcome.detail[:400]}"
        for request, outcome, _ in tally_failures
    )


def test_seeded_campaign(seeds: list[Seed], oracle: Oracle, tmp_path: Path) -> None:
    tally = run_campaign(seeds, oracle, tmp_path, seed=CAMPAIGN, count=INPUTS, explain_every=EXPLAIN_EVERY)
    print(tally.line())
    assert not tally.failures, f"{tally.line()}\n{_failures(tally.failures)}"
    assert tally.inputs == INPUTS and tally.by_target["explain"] > 0 and tally.by_target["cohort"] > 0
    assert tally.runs["ok"] > 0 and tally.runs["refused"] > 0  # both sides of the property were reached


def _check(seed: Seed, rng, oracle: Oracle, folder: Path) -> None:
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    path = make_input(seed, rng, folder)
    for target in seed.targets:
        outcome = oracle.run(Request(target, path, folder))
        assert not outcome.failed, f"{seed.name} {target}: {outcome.failure}: {outcome.detail}"


def _property(kinds: tuple[str, ...]):
    """A Hypothesis test over the seeds of ``kinds``: any mutation Hypothesis draws keeps the property."""

    @HYPOTHESIS
    @given(data=st.data())
    def test(seeds: list[Seed], oracle: Oracle, tmp_path: Path, data) -> None:
        chosen = data.draw(st.sampled_from([s for s in seeds if s.kind in kinds]), label="seed")
        rng = data.draw(st.randoms(use_true_random=False), label="mutations")
        _check(chosen, rng, oracle, tmp_path / "input")

    return test


test_dicom_properties = _property(("dicom", "dicom-folder"))
test_nifti_analyze_properties = _property(("nifti",))
test_nrrd_mha_properties = _property(("itk-text",))
test_video_properties = _property(("video",))
test_card_bundle_properties = _property(("card", "bundle"))
test_manifest_properties = _property(("manifest",))
