"""Population normal ranges: lookup, percentile rank, flags, signal grade and the table's integrity check."""

import shutil

import pytest

from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.markers import normal_ranges as nr


@pytest.fixture(autouse=True)
def _fresh_tables():
    nr._table.cache_clear()
    nr.grade_table.cache_clear()
    yield
    nr._table.cache_clear()
    nr.grade_table.cache_clear()


def test_age_bands():
    assert nr.age_band(20) == "20-30"
    assert nr.age_band(29.9) == "20-30"
    assert nr.age_band(30) == "30-40"
    assert nr.age_band(90) == "70-90"
    assert nr.age_band(19) == "all" and nr.age_band(95) == "all" and nr.age_band(None) == "all"


def test_lookup_picks_the_right_cell_and_falls_back_for_small_cells():
    g = nr.reference_group("dhi_bianquenet", "L4-L5", "F", 45)
    assert (g.level, g.sex, g.age_band, g.n) == ("L4-L5", "F", "40-50", 68)
    small = nr.reference_group("dhi_bianquenet", "L4-L5", "F", 75)  # 13 women aged 70-90 at L4-L5
    assert small.age_band == "all" and small.sex == "F"
    assert nr.reference_group("delta_si", "L4-L5", "M", 45).sex == "all"  # no sex split for ΔSI
    assert nr.reference_group("hdr_bianquenet", "L1-L2", None, None).sex == "all"


def test_percentile_rank_on_known_values():
    g = nr.reference_group("dhi_bianquenet", "L4-L5", "M", 35)
    q = dict(zip(nr.PERCENTILES, g.quantiles, strict=True))
    assert nr.percentile_rank(q[50], g) == pytest.approx(50)
    assert nr.percentile_rank(q[25], g) == pytest.approx(25)
    assert nr.percentile_rank(0.5 * (q[75] + q[90]), g) == pytest.approx(82.5)
    lo = nr.compare(q[2.5] - 0.01, g)
    hi = nr.compare(q[97.5] + 0.01, g)
    mid = nr.compare(q[50], g)
    assert (lo.flag, lo.percentile) == ("low", 2.5)
    assert (hi.flag, hi.percentile) == ("high", 97.5)
    assert mid.flag == "normal" and mid.z == pytest.approx((q[50] - g.mean) / g.sd)


def test_sexes_differ_as_the_paper_reports():
    # paper Table 5: DH and DHI higher in men, HDR higher in women (checks the 0 = female / 1 = male reading)
    for level in ("L1-L2", "L3-L4"):
        f = {m: nr.reference_group(m, level, "F", None).mean for m in ("dh_bianquenet", "dhi_bianquenet", "hdr_bianquenet")}
        m = {k: nr.reference_group(k, level, "M", None).mean for k in f}
        assert m["dh_bianquenet"] > f["dh_bianquenet"] and m["dhi_bianquenet"] > f["dhi_bianquenet"]
        assert f["hdr_bianquenet"] > m["hdr_bianquenet"]


def test_signal_grade_table7_like():
    means = [g[1] for g in nr.grade_table()]
    assert means == sorted(means, reverse=True) and len(means) == 5
    assert nr.signal_grade(150) == 1
    assert nr.signal_grade(5) == 5
    for grade, mean, _sd in nr.grade_table():
        assert nr.signal_grade(mean) == grade
    assert nr.signal_grade(58.0) in (3, 4)


def test_tampered_table_is_refused(tmp_path, monkeypatch, repo_root):
    res = tmp_path / "Resources"
    shutil.copytree(repo_root / "Resources", res)
    path = res / nr.NORMAL_RANGES_FILE
    text = path.read_text()
    path.write_text(text.replace("0.3", "0.4", 1))
    monkeypatch.setenv("DISCANALYSIS_RESOURCES", str(res))
    with pytest.raises(InputError, match="integrity"):
        nr.reference_group("dhi_bianquenet", "L4-L5", "F", 45)


def test_shipped_table_passes_its_check():
    from DiscAnalysisLib.resources import sha256_of, verified_path

    p = verified_path(nr.NORMAL_RANGES_FILE, nr.NORMAL_RANGES_SHA256)
    assert sha256_of(p) == nr.NORMAL_RANGES_SHA256
    assert verified_path(nr.GRADES_FILE, nr.GRADES_SHA256).stat().st_size < 10_000
