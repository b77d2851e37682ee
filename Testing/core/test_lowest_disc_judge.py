"""The lowest_is_l5s1 hook of assign_levels (both questions) and the lowest-disc judge
(DiscAnalysisLib.segmentation.judge: crop geometry, the pairwise check and its margin, the shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from test_segmentation_postprocess import probs_of, spine

from DiscAnalysisLib import levels as lv
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.segmentation import judge
from DiscAnalysisLib.segmentation.postprocess import (
    JUDGE_DROPPED_FLAG,
    JUDGE_KEPT_FLAG,
    LEVEL_DOUBT_FLAG,
    PostprocessSettings,
    assign_levels,
)

SP = (1.0, 1.0, 1.0)


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

    assert judge.make_check(Spy(1.0, 0.0), cls.astype(np.float32), SP, margin=0.0)(_discs(cls)) is True
    assert judge.make_check(Spy(0.0, 1.0), cls.astype(np.float32), SP, margin=0.0)(_discs(cls)) is False
    assert calls == [(2, 1, judge.CROP_PX, judge.CROP_PX)] * 2


class _Fixed:
    """A judge network stand-in that scores (lowest, above) as given."""

    def __init__(self, low, above):
        import torch

        self.out = torch.tensor([[low], [above]])

    def __call__(self, x):
        return self.out


@pytest.mark.parametrize(("low", "above", "kept"), [(5.0, 0.0, True), (3.0, 0.0, False), (-3.0, 0.0, False)])
def test_margin_keeps_a_thin_disc_the_rule_drops_only_when_the_judge_is_sure(low, above, kept):
    cls, _ = thin_l5s1_image()
    discs = _discs(cls)
    from DiscAnalysisLib.segmentation.postprocess import remnant_rule_drops

    assert remnant_rule_drops(discs, PostprocessSettings())  # so the question is "keep it?"
    assert judge.make_check(_Fixed(low, above), cls.astype(np.float32), SP, margin=4.0)(discs) is kept


@pytest.mark.parametrize(("low", "above", "kept"), [(-5.0, 0.0, False), (-3.0, 0.0, True), (3.0, 0.0, True)])
def test_margin_drops_a_candidate_the_rule_keeps_only_when_the_judge_is_sure(low, above, kept):
    cls, _ = spine(n_discs=6, sacrum=True)
    discs = _discs(cls)
    from DiscAnalysisLib.segmentation.postprocess import remnant_rule_drops

    assert not remnant_rule_drops(discs, PostprocessSettings())  # so the question is "drop it?"
    assert judge.make_check(_Fixed(low, above), cls.astype(np.float32), SP, margin=4.0)(discs) is kept


def _discs(cls):
    from DiscAnalysisLib.segmentation.postprocess import find_discs

    return find_discs(probs_of(cls), SP, PostprocessSettings())


def test_judge_weights_round_trip(tmp_path):
    import torch

    path = tmp_path / "judge.pt"
    torch.save(judge.build_network().state_dict(), path)
    assert judge.scores(judge.load_judge(str(path)), np.zeros((2, judge.CROP_PX, judge.CROP_PX), np.float32)).shape == (2,)


def test_shipped_judge_is_checked_and_loads():
    net = judge.load_judge()  # the shipped file, after its SHA-256 check
    assert judge.scores(net, np.zeros((2, judge.CROP_PX, judge.CROP_PX), np.float32)).shape == (2,)
    assert judge.shipped_judge() is judge.shipped_judge()


def test_inference_form_of_the_judge_computes_the_same_logits():
    """load_judge folds BatchNorm into the convolutions (for speed): the shipped weights, loaded plainly, give the
    same logits on real-looking crops (smooth blobs) to well under the margin's scale."""
    import torch

    from DiscAnalysisLib.resources import verified_path

    plain = judge.build_network()
    plain.load_state_dict(torch.load(verified_path(judge.WEIGHTS_FILE, judge.WEIGHTS_SHA256), weights_only=True))
    plain.eval()
    rng = np.random.default_rng(3)
    crops = np.stack([ndi.gaussian_filter(rng.random((judge.CROP_PX, judge.CROP_PX)), s) for s in (1, 2, 3, 4)])
    crops = (crops - crops.min()) / (crops.max() - crops.min())
    with torch.no_grad():
        want = plain(torch.from_numpy(crops[:, None].astype(np.float32)))[:, 0].numpy()
    got = judge.scores(judge.load_judge(), crops)
    assert np.abs(got - want).max() < 1e-4
    assert np.ptp(want) > 0.1  # the crops tell the network something (the comparison is not of constants)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in judge.load_judge().modules())


def test_judge_weights_with_a_wrong_checksum_or_shape_are_refused(tmp_path):
    import torch

    path = tmp_path / "judge.pt"
    torch.save(judge.build_network().state_dict(), path)
    with pytest.raises(InputError, match="SHA-256"):
        judge.load_judge(str(path), expected_sha256="0" * 64)
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(InputError, match="does not match the lowest-disc judge"):
        judge.load_judge(str(path))


def test_segment_image_asks_the_shipped_judge_unless_switched_off(monkeypatch):
    """Wiring: segment_image passes the judge to assign_levels (a stand-in that vetoes the lowest disc moves every
    name up and flags it); level_judge=False is the rule alone; the real shipped judge leaves the phantom's names."""
    import SimpleITK as sitk

    from DiscAnalysisLib.phantom import PhantomSettings, make_phantom
    from DiscAnalysisLib.segmentation.api import SegmentationSettings, segment_image

    ph = make_phantom(PhantomSettings())
    truth = sitk.GetArrayFromImage(ph.labels)
    real = segment_image(ph.t2w)
    assert not any("judge" in f for f in real.flags)
    lab = sitk.GetArrayFromImage(real.labels)
    l5s1 = truth == lv.DISC_LABELS["L5-S1"]
    assert np.mean(lab[l5s1] == lv.DISC_LABELS["L5-S1"]) > 0.5

    monkeypatch.setattr(judge, "shipped_judge", lambda: _Fixed(-10.0, 0.0))
    vetoed = segment_image(ph.t2w)
    assert JUDGE_DROPPED_FLAG in vetoed.flags
    lab_v = sitk.GetArrayFromImage(vetoed.labels)
    l4l5 = truth == lv.DISC_LABELS["L4-L5"]
    assert np.mean(lab_v[l4l5] == lv.DISC_LABELS["L5-S1"]) > 0.5  # every name one level up
    off = segment_image(ph.t2w, SegmentationSettings(level_judge=False))
    assert JUDGE_DROPPED_FLAG not in off.flags
    assert np.array_equal(sitk.GetArrayFromImage(off.labels), lab)
    assert SegmentationSettings().to_row()["judge_margin"] == judge.MARGIN


def test_cli_segment_can_switch_the_judge_off(tmp_path):
    import json

    import SimpleITK as sitk

    from DiscAnalysisLib.cli.main import main
    from DiscAnalysisLib.phantom import PhantomSettings, make_phantom

    img = tmp_path / "t2w.nrrd"
    sitk.WriteImage(make_phantom(PhantomSettings()).t2w, str(img))
    for extra, expected in (([], True), (["--no-level-judge"], False)):
        qc = tmp_path / f"qc{len(extra)}.json"
        assert main(["--progress", "none", "segment", str(img), "--out", str(tmp_path / "lab.nrrd"), "--qc", str(qc), *extra]) == 0
        settings = json.loads(qc.read_text())["settings"]
        assert settings["level_judge"] is expected
        assert settings["judge_margin"] == (judge.MARGIN if expected else None)
