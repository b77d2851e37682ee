"""The CSF reference rule of scripts/compare_signal_grade.py (synthetic labelmap of known geometry)."""


import numpy as np
import pytest

from conftest import load_script
from DiscAnalysisLib.levels import CSF_LABEL, DISC_LABELS, VERTEBRA_LABELS


@pytest.fixture(scope="module")
def compare():
    return load_script("scripts/compare_signal_grade.py")


def _column():
    """Vertebra (rows 10-29) and disc (rows 30-39) in columns 20-49; canal (bright) in columns 52-59."""
    lab = np.zeros((60, 100), np.uint8)
    lab[10:30, 20:50] = VERTEBRA_LABELS["L4"]
    lab[30:40, 20:50] = DISC_LABELS["L4-L5"]
    img = np.full(lab.shape, 0.2)
    img[:, 52:60] = 0.9  # CSF: 2-9 px dorsal of the column's dorsal edge (column 49)
    img[:, 70:80] = 1.0  # bright tissue farther away (fat): outside the 1-10 mm window
    return lab, img


def test_csf_is_the_bright_part_of_the_window_dorsal_of_the_column(compare):
    lab, img = _column()
    out, n = compare.add_csf_reference(lab, img, pixel_mm=1.0)
    csf = out == CSF_LABEL
    assert n == csf.sum() == 30 * 8  # rows 10-39 (where the column is) x columns 52-59
    assert csf[10:40, 52:60].all() and not csf[:10].any() and not csf[40:].any()
    assert not csf[:, 70:].any()  # beyond 1 + 10 mm
    # labelled structures are never overwritten
    assert np.array_equal(out[lab > 0], lab[lab > 0])


def test_window_scales_with_the_pixel_size(compare):
    lab, img = _column()
    # 0.5 mm pixels: the window is 2-22 px dorsal, so columns 51-71 are in it and the bright 70-71 join
    out, _ = compare.add_csf_reference(lab, img, pixel_mm=0.5)
    assert (out[10:40, 70:72] == CSF_LABEL).all() and not (out[:, 72:] == CSF_LABEL).any()


def test_no_spine_no_csf(compare):
    lab = np.zeros((20, 20), np.uint8)
    out, n = compare.add_csf_reference(lab, np.random.default_rng(0).random((20, 20)), pixel_mm=1.0)
    assert n == 0 and not out.any()


def test_group_aucs_from_delta_si_follow_the_direction_of_degeneration(compare):
    y = np.array([1, 2, 2, 3, 3, 4, 5, 5])
    dsi = np.array([120, 95, 90, 72, 70, 45, 20, 15], float)  # perfectly ordered: high = healthy
    auc = compare.group_auc_from_delta_si(y, dsi, {3: 72.5})
    assert auc["auc_mild"] == pytest.approx(1.0) and auc["auc_severe"] == pytest.approx(1.0)
    assert auc["auc_moderate"] == pytest.approx(1.0)
