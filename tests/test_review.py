"""volcam.viz.review: per-slice profiles, top slices, the peak, localization against a lesion mask."""

from __future__ import annotations

import numpy as np
import pytest

from volcam.viz.review import localization, peak, slice_profile, top_slices


@pytest.fixture
def blob() -> np.ndarray:
    """(10, 20, 20) map: a Gaussian blob centred at slice 6, row 5, column 12."""
    z, y, x = np.meshgrid(np.arange(10), np.arange(20), np.arange(20), indexing="ij")
    return np.exp(-((z - 6) ** 2 + (y - 5) ** 2 + (x - 12) ** 2) / 8.0)


def test_profile_is_the_mean_or_max_per_slice(blob):
    profile = slice_profile(blob)
    np.testing.assert_allclose(profile, [blob[k].mean() for k in range(10)])
    assert int(np.argmax(profile)) == 6
    np.testing.assert_allclose(slice_profile(blob, axis=2, statistic="max"), blob.max(axis=(0, 1)))
    with pytest.raises(ValueError, match="statistic"):
        slice_profile(blob, statistic="median")


def test_top_slices_highest_first_ties_to_the_lower_index(blob):
    assert top_slices(blob, k=3) == [6, 5, 7]
    flat = np.ones((4, 2, 2))
    assert top_slices(flat, k=2) == [0, 1]
    assert top_slices(blob, k=0) == []


def test_peak(blob):
    assert peak(blob) == (6, 5, 12)


def test_localization_hit_miss_and_energy(blob):
    spacing = (2.0, 1.0, 1.0)
    mask = np.zeros_like(blob, dtype=np.uint8)
    mask[5:8, 3:8, 10:15] = 1
    inside = localization(blob, mask, spacing)
    assert inside["pointing_hit"] and inside["distance_mm"] == 0.0
    assert inside["energy_baseline"] == pytest.approx(mask.mean(), abs=1e-4)
    share = float(blob[mask > 0].sum() / blob.sum())  # the energy share, computed plainly with numpy
    assert inside["energy_in_mask"] == pytest.approx(share, abs=1e-4)

    far = np.zeros_like(mask)
    far[6, 5, 19] = 1  # 7 voxels (7 mm) right of the peak
    away = localization(blob, far, spacing, tolerance_mm=5.0)
    assert not away["pointing_hit"] and away["distance_mm"] == pytest.approx(7.0)
    assert localization(blob, far, spacing, tolerance_mm=7.5)["pointing_hit"]


def test_one_localization_serves_review_reports_and_the_demo():
    """review, the explain-to-folder summaries and the metrics share one implementation (no drift)."""
    from volcam.metrics import localization as metrics_localization
    from volcam.viz import review

    assert review.localization is metrics_localization.localization
