"""Post-processing of segmentation probabilities on synthetic label arrays of known truth."""

from __future__ import annotations

import numpy as np
import pytest

from DiscAnalysisLib import levels as lv
from DiscAnalysisLib.segmentation.postprocess import LEVEL_DOUBT_FLAG, PostprocessSettings, assign_levels


def spine(n_discs=6, sacrum=True, n_slices=5, rows=260, cols=120, disc_h=8, body_h=26, top=10, ap=(30, 70)):
    """Class map (n_slices, rows S->I, cols A->P): 0 bg, 1 disc, 2 vertebra; discs listed top -> bottom."""
    cls = np.zeros((n_slices, rows, cols), np.uint8)
    y = top
    disc_rows = []
    for _i in range(n_discs):
        cls[:, y : y + body_h, ap[0] : ap[1]] = 2
        y += body_h
        cls[:, y : y + disc_h, ap[0] : ap[1]] = 1
        disc_rows.append((y, y + disc_h))
        y += disc_h
    if sacrum:
        cls[:, y : y + 30, ap[0] : ap[1]] = 2
    return cls, disc_rows


def probs_of(cls, p=0.9):
    k = 3
    out = np.full((cls.shape[0], k, *cls.shape[1:]), (1 - p) / (k - 1), np.float32)
    for c in range(k):
        out[:, c][cls == c] = p
    return out


def rows_by_level(rows):
    return {r.level: r for r in rows}


def test_levels_counted_upward_from_sacrum_and_extra_thoracic_disc_ignored():
    cls, disc_rows = spine(n_discs=6, sacrum=True)
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    # the lowest disc is L5-S1, the sixth from the bottom (T12-L1) is not labelled
    for name, (y0, y1) in zip(reversed(lv.DISCS), reversed(disc_rows[1:]), strict=True):
        assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS[name]}, name
        assert r[name].found and r[name].confidence == pytest.approx(0.9, abs=1e-6)
    y0, y1 = disc_rows[0]
    assert not labels[:, y0:y1].any()
    assert "extra_discs_above_L1-L2:1" in flags
    assert "sacrum_not_detected" not in flags
    # vertebrae: L5 between L4-L5 and L5-S1, S1 below L5-S1
    l5 = labels[:, disc_rows[4][1] + 5, 50]
    s1 = labels[:, disc_rows[5][1] + 5, 50]
    assert set(l5) == {lv.VERTEBRA_LABELS["L5"]} and set(s1) == {lv.VERTEBRA_LABELS["S1"]}
    assert all(r[v].found for v in lv.VERTEBRAE)
    assert not any("missing" in x.flags for x in rows)


def test_missing_top_level_flagged_not_invented():
    cls, disc_rows = spine(n_discs=4, sacrum=True)
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    assert not r["L1-L2"].found and "missing" in r["L1-L2"].flags and r["L1-L2"].reason
    assert r["L2-L3"].found and r["L5-S1"].found
    assert "disc_level_missing" in flags
    assert lv.DISC_LABELS["L1-L2"] not in np.unique(labels)
    assert len(rows) == len(lv.DISCS) + len(lv.VERTEBRAE)


def test_no_sacrum_flags_assumed_l5s1():
    cls, _ = spine(n_discs=5, sacrum=False)
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    assert "sacrum_not_detected" in flags
    assert "assumed_L5-S1_sacrum_not_detected" in r["L5-S1"].flags
    assert not r["S1"].found


def test_disc_touching_field_of_view_edge_flagged():
    cls, disc_rows = spine(n_discs=5, ap=(0, 60))  # everything touches the anterior edge
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    assert all("touches_fov_edge" in r[d].flags for d in lv.DISCS)


def test_small_fragments_removed_and_implausible_size_flagged():
    cls, disc_rows = spine(n_discs=5)
    cls[:, 5:7, 100:102] = 1  # a 2x2 fragment: not a disc
    y0, y1 = disc_rows[2]
    cls[:, y0:y1, 30:70] = 2
    cls[:, y0 + 2 : y1 - 2, 40:60] = 1  # L3-L4 shrunk to a quarter of the others (collapsed disc)
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    assert "implausibly_small" in r["L3-L4"].flags
    assert not labels[:, 5:7, 100:102].any()
    assert "implausibly_small" not in r["L4-L5"].flags


def test_single_slice_2d_counts_levels():
    cls, disc_rows = spine(n_discs=5, n_slices=1)
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 0.8, 0.8))
    r = rows_by_level(rows)
    assert all(r[d].found for d in lv.DISCS)
    assert r["L4-L5"].size_mm == pytest.approx(8 * 40 * 0.64)


def test_gap_in_the_disc_row_skips_a_level_instead_of_shifting_the_count():
    cls, disc_rows = spine(n_discs=5)
    y0, y1 = disc_rows[2]
    cls[:, y0:y1] = np.where(cls[:, y0:y1] == 1, 2, cls[:, y0:y1])  # L3-L4 not segmented at all
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    assert not r["L3-L4"].found
    assert r["L1-L2"].found and r["L2-L3"].found
    y0, y1 = disc_rows[0]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L1-L2"]}
    assert "gap_between_discs" in flags and "disc_level_missing" in flags


def test_rudimentary_sacral_disc_is_not_taken_for_l5s1():
    cls, disc_rows = spine(n_discs=5, sacrum=True)
    y = disc_rows[-1][1] + 15
    cls[:, y : y + 3, 45:60] = 1  # S1-S2 remnant: thin, short, inside the sacrum
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    y0, y1 = disc_rows[-1]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L5-S1"]}
    assert "small_disc_below_L5-S1_ignored" in flags and r["L1-L2"].found
    assert LEVEL_DOUBT_FLAG not in flags  # small and short: a remnant, no doubt raised


def test_dropped_candidate_large_enough_to_be_a_thin_l5s1_raises_the_naming_doubt_flag():
    cls, disc_rows = spine(n_discs=5, sacrum=True)
    y = disc_rows[-1][1] + 15
    cls[:, y : y + 5, 35:65] = 1  # 0.47 of the median disc's area, 0.75 of its depth: dropped, but could be L5-S1
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    y0, y1 = disc_rows[-1]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L5-S1"]}  # the rule itself is unchanged
    assert "small_disc_below_L5-S1_ignored" in flags and LEVEL_DOUBT_FLAG in flags
    # without the doubt thresholds the same image carries no doubt flag
    quiet = PostprocessSettings(remnant_doubt_size_fraction=2.0)
    assert LEVEL_DOUBT_FLAG not in assign_levels(probs_of(cls), (1.0, 1.0, 1.0), quiet)[2]


def test_lateral_blob_off_the_midline_is_not_a_disc():
    cls, disc_rows = spine(n_discs=5, n_slices=40)
    cls[:10] = 0  # the column occupies slices 10..39
    y0 = (disc_rows[1][1] + disc_rows[2][0]) // 2
    cls[0:6, y0 : y0 + 6, 40:60] = 1  # lateral blob between L2-L3 and L3-L4, far from the midline
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    assert not labels[0:6, y0 : y0 + 6].any()
    assert all(r.found for r in rows if r.level in lv.DISCS)


def test_two_discs_fused_by_a_thin_bridge_are_split_and_named():
    cls, disc_rows = spine(n_discs=5, n_slices=12)
    (a0, a1), (b0, b1) = disc_rows[3], disc_rows[4]
    cls[0, a0:b1, 50:52] = 1  # a 2-voxel bridge on one lateral slice joins L4-L5 and L5-S1
    labels, rows, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    assert set(np.unique(labels[5, a0:a1, 40:48])) == {lv.DISC_LABELS["L4-L5"]}
    assert set(np.unique(labels[5, b0:b1, 40:48])) == {lv.DISC_LABELS["L5-S1"]}
    assert all(r.found for r in rows if r.level in lv.DISCS)


def test_disc_outline_keeps_confident_voxels_but_detection_uses_argmax():
    cls, disc_rows = spine(n_discs=5)
    probs = probs_of(cls, p=0.99)
    y0, y1 = disc_rows[2]
    probs[:, 1, y0, :] = 0.6  # an uncertain rim row of L3-L4: still disc at the argmax
    probs[:, 2, y0, :] = 0.2
    probs[:, 0, y0, :] = 0.2
    labels, rows, flags = assign_levels(probs, (1.0, 1.0, 1.0))
    r = rows_by_level(rows)
    assert not labels[:, y0, 40:60].any()
    assert (labels[:, y0 + 1 : y1, 40:60] == lv.DISC_LABELS["L3-L4"]).all()
    assert r["L3-L4"].voxels == int((labels == lv.DISC_LABELS["L3-L4"]).sum())
    labels05, _, _ = assign_levels(probs, (1.0, 1.0, 1.0), PostprocessSettings(disc_outline_probability=0.5))
    assert (labels05[:, y0, 40:60] == lv.DISC_LABELS["L3-L4"]).all()


def test_fast_argmax_matches_numpy_including_ties():
    from DiscAnalysisLib.segmentation.postprocess import argmax_classes

    rng = np.random.default_rng(0)
    p = rng.integers(0, 3, (2, 3, 40, 50)).astype(np.float32)  # many exact ties
    assert np.array_equal(argmax_classes(p), np.argmax(p, axis=1))
    q = rng.random((3, 3, 20, 30)).astype(np.float32)
    assert np.array_equal(argmax_classes(q), np.argmax(q, axis=1))


def test_slice_smoothing_fills_a_one_slice_dip_in_the_outline_but_not_detection():
    cls, disc_rows = spine(n_discs=5, n_slices=9)
    probs = probs_of(cls, p=0.99)
    y0, y1 = disc_rows[2]
    probs[4, 1, y0, :] = 0.6  # one slice is unsure about the top rim of L3-L4 (still disc at the argmax)
    probs[4, 0, y0, :] = 0.2
    probs[4, 2, y0, :] = 0.2
    on = PostprocessSettings(disc_outline_probability=0.9, slice_smoothing_mm=2.0)
    off = PostprocessSettings(disc_outline_probability=0.9, slice_smoothing_mm=0.0)
    lab_on, rows_on, _ = assign_levels(probs, (1.0, 1.0, 1.0), on)
    lab_off, rows_off, _ = assign_levels(probs, (1.0, 1.0, 1.0), off)
    assert not lab_off[4, y0, 40:60].any()
    assert (lab_on[4, y0, 40:60] == lv.DISC_LABELS["L3-L4"]).all()  # neighbours at 0.99 outvote the dip
    assert [(r.level, r.found, r.confidence) for r in rows_on] == [(r.level, r.found, r.confidence) for r in rows_off]
    # slices 3 mm apart show different anatomy: no smoothing there
    lab_thick, _, _ = assign_levels(probs, (3.0, 1.0, 1.0), on)
    assert not lab_thick[4, y0, 40:60].any()
    # a single slice is never smoothed
    lab_2d, _, _ = assign_levels(probs[4:5], (1.0, 1.0, 1.0), on)
    assert not lab_2d[0, y0, 40:60].any()
