"""Markers on the synthetic phantom against its construction geometry (heights, tilts, zones)."""

import numpy as np
import pytest

from DiscAnalysisLib import levels
from DiscAnalysisLib.markers import compute_markers
from DiscAnalysisLib.markers.demo_step import _central80_factor
from DiscAnalysisLib.phantom import PhantomSettings, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomSettings(seed=3))


@pytest.fixture(scope="module")
def report(phantom):
    return compute_markers(phantom.t2w, phantom.labels, maps={"t2_ms": phantom.t2_ms})


def test_heights_and_tilts_match_the_construction(phantom, report):
    k80 = _central80_factor()
    for m in report.levels:
        truth = phantom.disc_height_mm[m.level]
        assert m.status == "ok", (m.level, m.reason)
        assert m.dh_mm == pytest.approx(k80 * truth, rel=0.03), m.level
        assert m.center_height_mm == pytest.approx(truth, rel=0.08), m.level
        assert m.ap_tilt_deg == pytest.approx(phantom.disc_tilt_deg[m.level], abs=1.0), m.level
        assert m.n_central_slices == 5 and m.volume_mm3 > m.area_mm2


def test_lower_grades_have_higher_signal_difference(phantom, report):
    by_grade = {}
    for m in report.levels:
        by_grade.setdefault(phantom.grades[m.level], []).append(m.delta_si)
    grades = sorted(by_grade)
    means = [np.mean(by_grade[g]) for g in grades]
    assert all(a > b for a, b in zip(means[:-1], means[1:], strict=True)), dict(zip(grades, means, strict=True))


def test_t2_zone_profile_peaks_in_the_nucleus(report):
    m = report["L1-L2"]  # grade I: bright nucleus, centred slightly posterior
    (_name, whole, zones), = m.map_means
    assert max(zones[1:4]) > zones[0] and max(zones[1:4]) > zones[4]
    assert levels.DISCS == tuple(x.level for x in report.levels)
