"""The keep_lowest hook of assign_levels and the lowest-disc judge experiment (scripts/lowest_disc_judge.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_segmentation_postprocess import probs_of, spine

from conftest import load_script
from DiscAnalysisLib import levels as lv
from DiscAnalysisLib.segmentation.postprocess import KEPT_LOWEST_FLAG, LEVEL_DOUBT_FLAG, assign_levels

judge = load_script("scripts/lowest_disc_judge.py")


def thin_l5s1_image():
    """Five discs above a sacrum; the lowest (L5-S1) is thin enough for the size/depth rule to drop it."""
    cls, disc_rows = spine(n_discs=5, sacrum=True)
    y0, y1 = disc_rows[-1]
    cls[:, y0:y1, 30:70] = 2
    cls[:, y0 + 2 : y0 + 4, 35:65] = 1  # 2 rows of 8: a quarter of the median area, still deep
    return cls, disc_rows


def test_without_the_hook_the_rule_drops_the_thin_lowest_disc():
    cls, _ = thin_l5s1_image()
    _, _, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    assert "small_disc_below_L5-S1_ignored" in flags and KEPT_LOWEST_FLAG not in flags


def test_hook_keeps_the_lowest_disc_and_names_it_l5s1():
    cls, disc_rows = thin_l5s1_image()
    seen = []
    labels, _, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0), keep_lowest=lambda d: seen.append(len(d)) or True)
    assert seen == [5]  # asked once, with every candidate (L1-L2 .. L5-S1)
    assert KEPT_LOWEST_FLAG in flags and "small_disc_below_L5-S1_ignored" not in flags and LEVEL_DOUBT_FLAG not in flags
    y0, _ = disc_rows[-1]
    assert set(np.unique(labels[:, y0 + 2 : y0 + 4, 40:60])) == {lv.DISC_LABELS["L5-S1"]}
    y0, y1 = disc_rows[-2]
    assert set(np.unique(labels[:, y0:y1, 40:60])) == {lv.DISC_LABELS["L4-L5"]}
    # a hook that agrees with the rule changes nothing
    lab_drop, _, flags_drop = assign_levels(probs_of(cls), (1.0, 1.0, 1.0), keep_lowest=lambda d: False)
    lab_none, _, flags_none = assign_levels(probs_of(cls), (1.0, 1.0, 1.0))
    assert np.array_equal(lab_drop, lab_none) and flags_drop == flags_none


def test_hook_is_not_asked_when_the_rule_keeps_the_lowest_disc():
    cls, _ = spine(n_discs=5, sacrum=True)
    seen = []
    assign_levels(probs_of(cls), (1.0, 1.0, 1.0), keep_lowest=lambda d: seen.append(1) or False)
    assert seen == []


def test_judge_crop_is_centred_and_scaled_to_the_disc_spacing():
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


def test_judge_check_compares_the_lowest_disc_with_the_one_above(tmp_path):
    import torch

    path = tmp_path / "judge.pt"
    torch.save(judge.build_network().state_dict(), path)
    net = judge.load_judge(str(path))
    assert judge.scores(net, np.zeros((2, judge.CROP_PX, judge.CROP_PX), np.float32)).shape == (2,)
    cls, _ = thin_l5s1_image()
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return torch.tensor([[1.0], [0.0]])  # the lowest candidate scores higher

    _, _, flags = assign_levels(probs_of(cls), (1.0, 1.0, 1.0),
                                keep_lowest=judge.make_check(Spy(), cls.astype(np.float32), (1.0, 1.0, 1.0)))
    assert calls == [2] and KEPT_LOWEST_FLAG in flags
