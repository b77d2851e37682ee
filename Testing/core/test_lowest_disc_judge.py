"""The lowest_is_l5s1 hook of assign_levels (both questions) and the lowest-disc judge experiment
(scripts/lowest_disc_judge.py: crop geometry, the pairwise check)."""

from __future__ import annotations

import numpy as np
import pytest
from test_segmentation_postprocess import probs_of, spine

from conftest import load_script
from DiscAnalysisLib import levels as lv
from DiscAnalysisLib.segmentation.postprocess import (
    JUDGE_DROPPED_FLAG,
    JUDGE_KEPT_FLAG,
    LEVEL_DOUBT_FLAG,
    PostprocessSettings,
    assign_levels,
)

SP = (1.0, 1.0, 1.0)
judge = load_script("scripts/lowest_disc_judge.py")


def thin_l5s1_image():
    """Five discs above a sacrum; the lowest (L5-S1) is thin enough for the size/depth rule to drop it."""
    cls, disc_rows = spine(n_discs=5, sacrum=True)
    y0, y1 = disc_rows[-1]
    cls[:, y0:y1, 30:70] = 2
    cls[:, y0 + 2 : y0 + 4, 35:65] = 1  # 2 rows of 8: a quarter of the median area, still deep
    return cls, disc_rows


def answers(*replies):
    """A stand-in for judge.make_check: returns the given answers in turn and records the candidate counts."""
    asked = []

    def lowest_is_l5s1(discs):
        asked.append(len(discs))
        return replies[len(asked) - 1]

    return lowest_is_l5s1, asked


def test_judge_keeps_a_thin_lowest_disc_the_rule_would_drop():
    cls, disc_rows = thin_l5s1_image()
    _, _, flags = assign_levels(probs_of(cls), SP)
    assert "small_disc_below_L5-S1_ignored" in flags  # the rule alone drops it
    check, asked = answers(True)
    labels, _, flags = assign_levels(probs_of(cls), SP, lowest_is_l5s1=check)
    assert asked == [5]  # asked once, with every candidate (L1-L2 .. L5-S1)
    assert JUDGE_KEPT_FLAG in flags and "small_disc_below_L5-S1_ignored" not in flags and LEVEL_DOUBT_FLAG not in flags
    y0, _ = disc_rows[-1]
    assert set(np.unique(labels[:, y0 + 2 : y0 + 4, 40:60])) == {lv.DISC_LABELS["L5-S1"]}
    y0, y1 = disc_rows[-2]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L4-L5"]}
    # a judge that agrees with the rule changes nothing
    check, _ = answers(False)
    lab_judge, _, flags_judge = assign_levels(probs_of(cls), SP, lowest_is_l5s1=check)
    lab_rule, _, flags_rule = assign_levels(probs_of(cls), SP)
    assert np.array_equal(lab_judge, lab_rule) and flags_judge == flags_rule


def test_judge_drops_a_lowest_candidate_the_rule_keeps_and_the_names_move_up():
    cls, disc_rows = spine(n_discs=6, sacrum=True)  # six full-size discs: T12-L1 .. L5-S1 by the rule
    labels_rule, _, _ = assign_levels(probs_of(cls), SP)
    y0, y1 = disc_rows[-1]
    assert set(np.unique(labels_rule[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L5-S1"]}
    check, asked = answers(False)  # the judge says the disc above the lowest is L5-S1
    labels, _, flags = assign_levels(probs_of(cls), SP, lowest_is_l5s1=check)
    assert asked == [6] and JUDGE_DROPPED_FLAG in flags
    y0, y1 = disc_rows[-2]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L5-S1"]}
    y0, y1 = disc_rows[0]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L1-L2"]}
    # the same answer is not asked for when that question is switched off
    check, asked = answers(False)
    off = PostprocessSettings(judge_drops_kept=False)
    labels_off, _, flags_off = assign_levels(probs_of(cls), SP, off, lowest_is_l5s1=check)
    assert asked == [] and np.array_equal(labels_off, labels_rule) and JUDGE_DROPPED_FLAG not in flags_off


def test_judge_agreeing_with_a_full_column_changes_nothing():
    cls, _ = spine(n_discs=5, sacrum=True)
    check, asked = answers(True)
    lab_judge, _, flags_judge = assign_levels(probs_of(cls), SP, lowest_is_l5s1=check)
    lab_rule, _, flags_rule = assign_levels(probs_of(cls), SP)
    assert asked == [5] and np.array_equal(lab_judge, lab_rule) and flags_judge == flags_rule


def test_crop_is_centred_and_scaled_to_the_disc_spacing():
    img = np.zeros((200, 150), np.float32)
    img[99:102, 74:77] = 100.0  # a bright dot at (100, 75) px = (50, 37.5) mm at 0.5 mm
    c = judge.crop(img, (0.5, 0.5), (50.0, 37.5), spacing_between_discs_mm=20.0)
    assert c.shape == (judge.CROP_PX, judge.CROP_PX)
    r, col = np.unravel_index(np.argmax(c), c.shape)
    assert abs(r - (judge.CROP_PX - 1) / 2) <= 1.5 and abs(col - (judge.CROP_PX - 1) / 2) <= 1.5
    assert c.min() >= 0 and c.max() <= 1.5
    # half the disc spacing: the crop spans half the millimetres, so the dot covers more pixels
    near = judge.crop(img, (0.5, 0.5), (50.0, 37.5), spacing_between_discs_mm=10.0)
    assert np.count_nonzero(near > 0.5) > 2 * np.count_nonzero(c > 0.5)
    assert judge.disc_spacing_mm(np.array([[0, 0, 0], [0, 30, 40.0]])) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        judge.disc_spacing_mm(np.zeros((1, 3)))


def test_make_check_compares_the_lowest_disc_with_the_one_above():
    import torch

    cls, _ = thin_l5s1_image()
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self, low, above):
            super().__init__()
            self.out = torch.tensor([[low], [above]])

        def forward(self, x):
            calls.append(tuple(x.shape))
            return self.out

    assert judge.make_check(Spy(1.0, 0.0), cls.astype(np.float32), SP)(_discs(cls)) is True
    assert judge.make_check(Spy(0.0, 1.0), cls.astype(np.float32), SP)(_discs(cls)) is False
    assert calls == [(2, 1, judge.CROP_PX, judge.CROP_PX)] * 2


def _discs(cls):
    from DiscAnalysisLib.segmentation.postprocess import find_discs

    return find_discs(probs_of(cls), SP, PostprocessSettings())


def test_judge_weights_round_trip(tmp_path):
    import torch

    path = tmp_path / "judge.pt"
    torch.save(judge.build_network().state_dict(), path)
    assert judge.scores(judge.load_judge(str(path)), np.zeros((2, judge.CROP_PX, judge.CROP_PX), np.float32)).shape == (2,)
