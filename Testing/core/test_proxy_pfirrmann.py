"""The Pfirrmann proxy script's fallback masks and minimal markers (synthetic), and a real-data smoke run."""


import numpy as np
import pytest

from conftest import load_script, shared_data


@pytest.fixture(scope="module")
def proxy():
    return load_script("scripts/proxy_pfirrmann_classifier.py", "proxy_pfirrmann")


def test_boxes_bottom_up_merge_an_overlapping_bulge_box(proxy):
    boxes = np.array([
        [1, 0.5, 0.20, 0.10, 0.05],
        [1, 0.5, 0.40, 0.10, 0.05],
        [0, 0.5, 0.60, 0.10, 0.05],
        [4, 0.5, 0.61, 0.20, 0.12],  # bulge box over the disc box above: merged, disc box kept
        [4, 0.5, 0.80, 0.20, 0.12],  # bulge box alone: the lowest disc (L5-S1)
        [2, 0.5, 0.70, 0.03, 0.03],  # stenosis: not a disc
    ])
    ordered = proxy.disc_boxes_bottom_up(boxes)
    assert [b[2] for b in ordered] == [0.80, 0.60, 0.40, 0.20]
    lab, reasons = proxy.ellipse_labelmap((100, 100), boxes)
    assert not reasons
    rows = {v: np.nonzero(lab == v)[0] for v in (122, 123, 124)}
    assert rows[124].mean() == pytest.approx(80, abs=1) and rows[122].mean() == pytest.approx(40, abs=1)
    # the bulge box's ellipse is capped at the median disc-box size (0.10 x 0.05 of the image)
    cols = np.nonzero(lab == 124)[1]
    assert cols.max() - cols.min() + 1 <= 11 and rows[124].max() - rows[124].min() + 1 <= 6


def test_fewer_than_three_disc_boxes_give_a_reason(proxy):
    lab, reasons = proxy.ellipse_labelmap((50, 50), np.array([[1, 0.5, 0.5, 0.2, 0.1]]))
    assert set(reasons) == {"L4-L5", "L3-L4"} and (lab == 124).any()


def test_own_markers_zones_run_ventral_to_dorsal(proxy):
    img = np.tile(np.arange(100, dtype=float), (20, 1))  # signal = column index
    mask = np.zeros_like(img, dtype=bool)
    mask[5:15, 10:60] = True  # 50 columns: zones of 10 columns each
    m = proxy.own_markers(img, mask)
    assert [m[f"si_z{k}_mean"] for k in range(1, 6)] == pytest.approx([14.5, 24.5, 34.5, 44.5, 54.5])
    assert m["si_mean"] == pytest.approx(34.5) and m["si_sd"] == pytest.approx(np.std(img[mask], ddof=1))


@pytest.mark.realdata
def test_real_images_give_three_discs_with_markers(proxy, tmp_path):
    data = shared_data("pfirrmann_sudirman")
    pngs = sorted((data / "images").glob("*.png"))[:5]
    for png in pngs:
        boxes = proxy.read_boxes(data / "boxes" / f"{png.stem}.txt")
        rows = proxy.markers_for_image(png, boxes, None, None, {})
        assert [r["level"] for r in rows] == ["L5-S1", "L4-L5", "L3-L4"]
        for r in rows:
            assert not r["reason"], r
            assert 0 < r["si_mean"] < 1.5 and all(np.isfinite(r[m]) for m in proxy.MARKERS)
            assert r["mask_area_px"] > 100
