"""Disc markers on synthetic shapes of known geometry (markers.compute / geometry / signal)."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
from markers_synthetic import CSF, DISC, LOWER, UPPER, scene, stack

from DiscAnalysisLib import image_io, levels
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.markers import MarkerSettings, compute_markers, ventral_dorsal_zones
from DiscAnalysisLib.markers import geometry as geo
from DiscAnalysisLib.markers.signal import delta_si

# Mean height over the central 80 % of an ellipse of height 2b: 2b * (0.8*sqrt(1-0.64) + asin(0.8)) / 1.6
ELLIPSE_CENTRAL80 = (0.8 * 0.6 + math.asin(0.8)) / 1.6


def _l45(sc, **kw):
    im, lab = sc.images()
    return compute_markers(im, lab, MarkerSettings(**kw))["L4-L5"]


@pytest.mark.parametrize("tilt", [0.0, 10.0, -15.0, 20.0])
def test_tilted_rectangle_heights_and_axis(tilt):
    sc = scene("rect", tilt)
    m = _l45(sc)
    assert m.status == "ok", m.reason
    assert m.ap_tilt_deg == pytest.approx(tilt, abs=0.5)
    assert m.ap_diameter_mm == pytest.approx(40.0, rel=0.02)
    assert m.dh_mm == pytest.approx(10.0, rel=0.02)
    assert m.center_height_mm == pytest.approx(10.0, rel=0.06)
    assert m.hdr == pytest.approx(0.25, rel=0.03)
    assert m.upper_vb_height_mm == pytest.approx(26.0, rel=0.03)
    assert m.lower_vb_height_mm == pytest.approx(26.0, rel=0.03)
    assert m.dhi == pytest.approx(10.0 / 26.0, rel=0.04)
    assert m.area_mm2 == pytest.approx(400.0, rel=0.03)


def test_image_axes_would_be_wrong_for_a_tilted_disc():
    # guard: the vertical extent of a 20 deg tilted disc is far from its height, so the test above can fail
    sc = scene("rect", 20.0)
    rows = np.nonzero((sc.labels == DISC).any(axis=1))[0]
    assert (rows.max() - rows.min() + 1) * sc.spacing_mm > 1.5 * sc.disc_height_mm


@pytest.mark.parametrize("tilt", [0.0, 15.0])
def test_ellipse_central_80_percent_height(tilt):
    sc = scene("ellipse", tilt, diameter_mm=44.0, height_mm=12.0)
    m = _l45(sc)
    assert m.dh_mm == pytest.approx(12.0 * ELLIPSE_CENTRAL80, rel=0.02)
    assert m.center_height_mm == pytest.approx(12.0, rel=0.05)
    assert m.ap_diameter_mm == pytest.approx(44.0, rel=0.02)
    assert m.area_mm2 == pytest.approx(math.pi * 22 * 6, rel=0.02)


def test_unknown_spacing_gives_ratios_only():
    sc = scene("rect", 12.0)
    im, lab = sc.images()
    known = compute_markers(im, lab)["L4-L5"]
    for x in (im, lab):
        x.SetSpacing((1.0, 1.0))
        image_io.mark_spacing_unknown(x)
    m = compute_markers(im, lab)["L4-L5"]
    for name in ("dh_mm", "ap_diameter_mm", "center_height_mm", "area_mm2", "upper_vb_height_mm"):
        assert getattr(m, name) is None, name
    assert "pixel spacing unknown" in m.reason
    assert m.dhi == pytest.approx(known.dhi, rel=1e-9)
    assert m.hdr == pytest.approx(known.hdr, rel=1e-9)


def test_missing_vertebra_leaves_dhi_empty_with_reason():
    sc = scene("rect", 5.0, vertebrae=(UPPER,))
    m = _l45(sc)
    assert m.dhi is None and m.status == "partial"
    assert "L5 (label 24)" in m.reason
    assert m.dh_mm == pytest.approx(10.0, rel=0.02) and m.delta_si is not None
    assert m.dhi_population.percentile is None and m.to_row()["dhi_flag"] is None


def test_l5_s1_uses_l5_only():
    lab = scene("rect", 0.0).labels.copy()
    lab[lab == LOWER] = 0  # no S1: still computable from L5
    lab[lab == DISC] = 124
    lab[lab == UPPER] = 24
    im = sitk.GetImageFromArray(np.where(lab > 0, 100.0, 10.0).astype(np.float32))
    lb = sitk.GetImageFromArray(lab)
    for x in (im, lb):
        x.SetSpacing((0.5, 0.5))
    m = compute_markers(im, lb)["L5-S1"]
    assert m.dhi == pytest.approx(10.0 / 26.0, rel=0.04)


def test_missing_levels_are_rows_with_reasons():
    rep = compute_markers(*scene("rect").images())
    assert [m.level for m in rep.levels] == list(levels.DISCS)
    for m in rep.levels:
        if m.level != "L4-L5":
            assert m.status == "missing" and f"label {levels.label_of(m.level)}" in m.reason
            assert m.dh_mm is None
    rows = rep.rows()
    assert len(rows) == 5 and all(r["reason"] for r in rows if r["level"] != "L4-L5")


@pytest.mark.parametrize("change", ["spacing", "size", "origin"])
def test_labelmap_off_grid_is_refused(change):
    im, lab = scene("rect").images()
    if change == "spacing":
        lab.SetSpacing((0.6, 0.6))
    elif change == "size":
        lab = lab[:-3, :]
    else:
        lab.SetOrigin((5.0, 0.0))
    with pytest.raises(InputError, match="not on the image grid"):
        compute_markers(im, lab)


def test_stack_matches_single_slice_and_has_volume():
    sc = scene("rect", 10.0)
    single = _l45(sc)
    im3, lab3 = stack(sc, n_slices=7, thickness_mm=4.0)
    m = compute_markers(im3, lab3)["L4-L5"]
    assert m.orientation_source == geo.ORIENT_DIRECTION
    assert m.mid_slice == 3 and m.n_central_slices == 5
    for name in ("dh_mm", "dhi", "hdr", "ap_diameter_mm", "area_mm2", "si_mean", "ap_tilt_deg"):
        assert getattr(m, name) == pytest.approx(getattr(single, name), rel=1e-9), name
    assert m.volume_mm3 == pytest.approx(7 * 4.0 * single.area_mm2, rel=1e-9)
    assert single.volume_mm3 is None and "single slice" in single.reason
    one = compute_markers(*stack(sc, n_slices=1))["L4-L5"]
    assert one.volume_mm3 is None and one.n_central_slices == 1


def test_zones_are_five_equal_ap_fifths():
    sc = scene("rect", 0.0, diameter_mm=40.0)  # 80 columns at 0.5 mm
    im, lab = sc.images()
    disc = sitk.BinaryThreshold(lab, DISC, DISC, 1, 0)
    z = sitk.GetArrayFromImage(ventral_dorsal_zones(disc))
    mask = sitk.GetArrayFromImage(disc) > 0
    assert set(np.unique(z[mask])) == {1, 2, 3, 4, 5} and not z[~mask].any()
    cols = np.nonzero(mask.any(axis=0))[0]
    for k in range(1, 6):
        zc = np.nonzero((z == k).any(axis=0))[0]
        assert len(zc) == len(cols) // 5
        # zone k occupies the k-th fifth from the ventral (low-column) side
        assert zc.min() == cols.min() + (k - 1) * len(cols) // 5


def test_zones_follow_the_tilt_and_the_anatomy():
    sc = scene("ellipse", 18.0)
    im, lab = sc.images()
    disc = sitk.BinaryThreshold(lab, DISC, DISC, 1, 0)
    z = sitk.GetArrayFromImage(ventral_dorsal_zones(disc))
    r, c = np.nonzero(z)
    a = np.radians(18.0)
    t = r * -np.sin(a) + c * np.cos(a)  # position along the true AP axis
    means = [t[z[r, c] == k].mean() for k in range(1, 6)]
    assert np.all(np.diff(means) > 0)
    # zones split the AP extent into equal lengths (within one pixel)
    edges = [(t[z[r, c] == k].min(), t[z[r, c] == k].max()) for k in range(1, 6)]
    widths = [hi - lo for lo, hi in edges]
    assert max(widths) - min(widths) <= 1.5


def test_zone_order_uses_csf_for_a_mirrored_2d_slice():
    sc = scene("rect", 0.0, mirror=True)  # anterior now on the right, CSF on the left
    im, lab = sc.images(values={DISC: 0.0, CSF: 250.0})
    arr = sitk.GetArrayFromImage(im)
    cols = np.nonzero((sc.labels == DISC).any(axis=0))[0]
    arr[:, :] = np.where(sc.labels == DISC, np.arange(arr.shape[1])[None, :], arr)  # signal = column
    im2 = sitk.GetImageFromArray(arr)
    im2.CopyInformation(im)
    m = compute_markers(im2, lab)["L4-L5"]
    assert m.orientation_source == geo.ORIENT_CSF
    assert m.si_zone_mean[0] > m.si_zone_mean[-1]  # zone 1 (ventral) is at the high columns
    assert m.si_zone_mean[0] == pytest.approx(cols.max() - 7.5, abs=0.6)
    # the public zone function agrees when given the CSF, and follows the 2D convention without it
    disc = sitk.BinaryThreshold(lab, DISC, DISC, 1, 0)
    z_csf = sitk.GetArrayFromImage(ventral_dorsal_zones(disc, csf=sitk.BinaryThreshold(lab, CSF, CSF, 1, 0)))
    z_conv = sitk.GetArrayFromImage(ventral_dorsal_zones(disc))
    assert z_csf[:, cols.max()].max() == 1 and z_conv[:, cols.max()].max() == 5


@pytest.mark.parametrize("posterior_sign", [1.0, -1.0])
def test_zone_order_uses_the_direction_matrix_in_3d(posterior_sign):
    sc = scene("rect", 8.0)
    values = {DISC: 100.0, UPPER: 10.0, LOWER: 10.0, CSF: 250.0}
    im, lab = stack(sc, n_slices=5, posterior_sign=posterior_sign, values=values)
    arr = sitk.GetArrayFromImage(im)
    disc = sitk.GetArrayFromImage(lab) == DISC
    # signal grows toward the patient's back, whichever way the i axis runs
    i = np.arange(arr.shape[2])[None, None, :]
    post = i if posterior_sign > 0 else (arr.shape[2] - 1 - i)
    arr = np.where(disc, post.astype(np.float32), arr)
    im2 = sitk.GetImageFromArray(arr)
    im2.CopyInformation(im)
    m = compute_markers(im2, lab)["L4-L5"]
    assert list(m.si_zone_mean) == sorted(m.si_zone_mean)
    assert m.ap_tilt_deg == pytest.approx(8.0, abs=0.5)


def test_regional_markers_are_zone_statistics():
    sc = scene("ellipse", 12.0)
    im, lab = sc.images()
    disc = sitk.BinaryThreshold(lab, DISC, DISC, 1, 0)
    zones = sitk.GetArrayFromImage(ventral_dorsal_zones(disc))
    rng = np.random.default_rng(3)
    arr = np.where(zones > 0, zones * 10.0 + rng.normal(0, 1 + zones, zones.shape), 5.0).astype(np.float64)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(im)
    t2 = sitk.GetImageFromArray(np.where(zones > 0, 100.0 - zones, np.nan))
    t2.CopyInformation(im)
    m = compute_markers(img, lab, maps={"t2_ms": t2})["L4-L5"]
    d = zones > 0
    assert m.si_mean == pytest.approx(arr[d].mean(), rel=1e-12)
    assert m.si_sd == pytest.approx(arr[d].std(ddof=1), rel=1e-12)
    for k in range(1, 6):
        assert m.si_zone_mean[k - 1] == pytest.approx(arr[zones == k].mean(), rel=1e-12)
        assert m.si_zone_sd[k - 1] == pytest.approx(arr[zones == k].std(ddof=1), rel=1e-12)
    name, whole, per_zone = m.map_means[0]
    assert name == "t2_ms" and per_zone == pytest.approx((99, 98, 97, 96, 95))
    row = m.to_row()
    assert row["t2_ms_z3_mean"] == pytest.approx(97) and row["si_z5_sd"] == m.si_zone_sd[4]


def test_delta_si_follows_bianquenet_histogram_rule():
    rng = np.random.default_rng(0)
    disc = np.concatenate([np.full(600, 200), np.full(400, 100), rng.integers(95, 206, 50)])
    csf = np.full(30, 250)
    for is_uint8 in (True, False):
        r = delta_si(disc.astype(float), csf.astype(float), is_uint8=is_uint8)
        assert r.delta_si == pytest.approx(100 * 255 / 250, rel=0.01 if not is_uint8 else 1e-12)
    # scale invariance of the non-8-bit path
    a = delta_si(disc * 7.3, csf * 7.3, is_uint8=False).delta_si
    b = delta_si(disc * 1.0, csf * 1.0, is_uint8=False).delta_si
    assert a == pytest.approx(b, rel=1e-12)


def test_delta_si_and_signal_grade_in_compute():
    sc = scene("rect", 0.0)
    lab = sc.labels
    arr = np.full(lab.shape, 20.0)
    disc = lab == DISC
    cols = np.nonzero(disc.any(axis=0))[0]
    nucleus = disc & (np.arange(lab.shape[1])[None, :] >= cols.min() + 20) & (np.arange(lab.shape[1])[None, :] < cols.max() - 20)
    arr[disc] = 120.0
    arr[nucleus] = 220.0
    arr[lab == CSF] = 250.0
    im = sitk.GetImageFromArray(arr.astype(np.uint8))
    lb = sitk.GetImageFromArray(lab)
    for x in (im, lb):
        x.SetSpacing((0.5, 0.5))
    m = compute_markers(im, lb)["L4-L5"]
    assert m.delta_si == pytest.approx(100 * 255 / 250)
    assert m.signal_grade == 2  # 102: nearer grade 2 (94.9 +/- 7.2) than grade 1 (121.7 +/- 10.1) in SDs
    assert m.delta_si_population.flag in ("low", "normal", "high")
    no_csf = lab.copy()
    no_csf[no_csf == CSF] = 0
    lb2 = sitk.GetImageFromArray(no_csf)
    lb2.CopyInformation(lb)
    m2 = compute_markers(im, lb2)["L4-L5"]
    assert m2.delta_si is None and "no CSF" in m2.reason


def test_repeated_runs_are_identical():
    im, lab = stack(scene("ellipse", 14.0), n_slices=6)
    a = compute_markers(im, lab, MarkerSettings(age_years=50, sex="M")).rows()
    b = compute_markers(im, lab, MarkerSettings(age_years=50, sex="M")).rows()
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if isinstance(ra[k], float):
                assert ra[k] == pytest.approx(rb[k], abs=1e-6), k
            else:
                assert ra[k] == rb[k], k


def test_every_column_is_documented():
    im, lab = scene("rect").images()
    t2 = sitk.Image(im)
    rep = compute_markers(im, lab, MarkerSettings(age_years=33, sex="F"), maps={"t2_ms": t2})
    docs = rep.column_docs()
    assert all(list(r) == list(docs) for r in rep.rows())
    for name, (unit, text) in docs.items():
        assert text, name
        if name.endswith("_mm"):
            assert unit == "mm", name
    assert docs["t2_ms_z2_mean"][0] == "ms"


def test_bad_settings_and_inputs():
    with pytest.raises(InputError):
        MarkerSettings(sex="X")
    with pytest.raises(InputError):
        MarkerSettings(age_years=-4)
    im, lab = scene("rect").images()
    prob = sitk.GetImageFromArray(sitk.GetArrayFromImage(lab).astype(np.float32) + 0.5)
    prob.CopyInformation(lab)
    with pytest.raises(InputError, match="non-integer"):
        compute_markers(im, prob)


def test_docs_list_every_fixed_column(repo_root):
    from DiscAnalysisLib.markers.columns import COLUMNS

    text = (repo_root / "docs" / "markers.md").read_text()
    missing = [c for c in COLUMNS if f"`{c}`" not in text]
    assert not missing, f"docs/markers.md does not document columns {missing}"
