"""Pfirrmann grading, synthetic data of known truth: crop geometry, losses, metrics, grouping, QC rows."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DiscAnalysisLib.grading import metrics
from DiscAnalysisLib.grading.api import NOT_GRADED, GradingSettings, grade_discs, sagittal_slices
from DiscAnalysisLib.grading.crop import disc_box_from_mask, extract_crop, normalise_crop
from DiscAnalysisLib.image_io import mark_spacing_unknown
from DiscAnalysisLib.levels import DISC_LABELS, DISCS


def _disc_image(shape=(200, 240), center=(90.0, 110.0), width=60.0, height=16.0, value=200.0, background=50.0):
    """A bright elliptical 'disc' on a darker background, with its mask."""
    r, c = np.mgrid[: shape[0], : shape[1]].astype(float)
    inside = ((r - center[0]) / (height / 2)) ** 2 + ((c - center[1]) / (width / 2)) ** 2 <= 1.0
    img = np.full(shape, background, np.float32)
    img[inside] = value
    return img, inside


# ------------------------------------------------------------------------------------------ crop geometry
def test_disc_box_from_mask_extents_and_edge():
    m = np.zeros((50, 60), bool)
    m[10:20, 5:45] = True
    box = disc_box_from_mask(m, spacing_rc=(2.0, 0.5))
    assert box.center_rc == (14.5, 24.5)
    assert box.width == pytest.approx(40 * 0.5)
    assert box.height == pytest.approx(10 * 2.0)
    assert not box.touches_edge
    m[0, 10] = True
    assert disc_box_from_mask(m).touches_edge
    assert disc_box_from_mask(np.zeros((5, 5), bool)) is None


def test_crop_is_centred_on_the_disc():
    img, mask = _disc_image(center=(90.3, 121.7))
    box = disc_box_from_mask(mask)
    crop, outside = extract_crop(img, box.center_rc, box.width, size=64, fov_factor=1.6)
    assert outside == 0.0
    bright = crop > 0.5
    rows, cols = np.nonzero(bright)
    assert abs(rows.mean() - 31.5) < 0.6 and abs(cols.mean() - 31.5) < 0.6
    # the disc spans width / (1.6 * width) of the crop: 64 / 1.6 = 40 pixels across
    assert abs((cols.max() - cols.min() + 1) - 40) <= 2


def test_crop_is_scale_normalised_across_pixel_sizes():
    """The same disc imaged at two pixel sizes gives the same crop once scaled to its width."""
    small, m_small = _disc_image(shape=(200, 240), center=(90, 110), width=50, height=14)
    big, m_big = _disc_image(shape=(400, 480), center=(180, 220), width=100, height=28)
    b1, b2 = disc_box_from_mask(m_small), disc_box_from_mask(m_big)
    c1, _ = extract_crop(small, b1.center_rc, b1.width)
    c2, _ = extract_crop(big, b2.center_rc, b2.width)
    assert np.corrcoef(c1.ravel(), c2.ravel())[0, 1] > 0.95
    # physical spacing: a 2x coarser grid with spacing 2 mm describes the same physical disc
    c3, _ = extract_crop(small, b1.center_rc, b1.width * 2.0, spacing_rc=(2.0, 2.0))
    assert np.allclose(c1, c3, atol=1e-5)


def test_anisotropic_spacing_is_respected():
    # Same physical disc (60 mm wide, 16 mm high) sampled with 1 mm rows and 0.5 mm columns.
    img_iso, m_iso = _disc_image(shape=(200, 240), center=(100, 120), width=60, height=16)
    img_an, m_an = _disc_image(shape=(200, 480), center=(100, 240), width=120, height=16)
    b_iso = disc_box_from_mask(m_iso)
    b_an = disc_box_from_mask(m_an, spacing_rc=(1.0, 0.5))
    assert b_an.width == pytest.approx(b_iso.width, rel=0.02)
    c1, _ = extract_crop(img_iso, b_iso.center_rc, b_iso.width)
    c2, _ = extract_crop(img_an, b_an.center_rc, b_an.width, spacing_rc=(1.0, 0.5))
    assert np.corrcoef(c1.ravel(), c2.ravel())[0, 1] > 0.95


def test_outside_fraction_and_normalisation_ignore_padding():
    img, mask = _disc_image(center=(20, 120))  # disc near the top border
    box = disc_box_from_mask(mask)
    crop, outside = extract_crop(img, box.center_rc, box.width)
    assert 0.2 < outside < 0.5
    # intensity scale does not depend on the scanner's arbitrary units
    crop2, _ = extract_crop(img * 7.3 + 100, box.center_rc, box.width)
    assert np.allclose(crop, crop2, atol=1e-4)
    assert np.all(normalise_crop(np.full((8, 8), 5.0)) == 0)


# ----------------------------------------------------------------------------------------------- losses
def test_focal_loss_matches_hand_computation():
    torch = pytest.importorskip("torch")
    from DiscAnalysisLib.grading.model import focal_loss, ordinal_emd_loss

    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0, 0.3], [0.1, 0.2, 0.3, 1.5, -0.5]])
    target = torch.tensor([0, 2])
    alpha = torch.tensor([2.0, 1.0, 0.5, 1.0, 3.0])
    z = logits.numpy().astype(float)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p[[0, 1], [0, 2]]
    expected = np.mean(np.array([2.0, 0.5]) * (1 - py) ** 2 * -np.log(py))
    assert float(focal_loss(logits, target, alpha, gamma=2.0)) == pytest.approx(expected, rel=1e-5)
    # gamma 0 and no alpha is plain cross-entropy
    ce = float(torch.nn.functional.cross_entropy(logits, target))
    assert float(focal_loss(logits, target, None, gamma=0.0)) == pytest.approx(ce, rel=1e-6)
    # ordinal term: a confident 2-grade miss costs more than a 1-grade miss
    far = torch.tensor([[0.0, 0.0, 0.0, 10.0, 0.0]])
    near = torch.tensor([[0.0, 0.0, 10.0, 0.0, 0.0]])
    t = torch.tensor([1])
    assert float(ordinal_emd_loss(far, t)) > float(ordinal_emd_loss(near, t)) > 0


# ---------------------------------------------------------------------------------------------- metrics
def _random_grades(n=300, seed=3):
    rng = np.random.default_rng(seed)
    y = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.05, 0.5, 0.25, 0.15, 0.05])
    pred = np.clip(y + rng.choice([-1, 0, 0, 0, 1, 2], size=n), 1, 5)
    return y, pred


def test_kappas_balanced_accuracy_f1_agree_with_sklearn():
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

    y, pred = _random_grades()
    assert metrics.cohen_kappa(y, pred, weights="quadratic") == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert metrics.cohen_kappa(y, pred, weights="linear") == pytest.approx(cohen_kappa_score(y, pred, weights="linear"))
    assert metrics.cohen_kappa(y, pred) == pytest.approx(cohen_kappa_score(y, pred))
    assert metrics.balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert metrics.macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))


def test_lins_ccc_hand_computation():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert metrics.lins_ccc(x, x) == pytest.approx(1.0)
    y = x + 1.0  # perfectly correlated but shifted: 2 var / (2 var + 1) with population var 2
    assert metrics.lins_ccc(x, y) == pytest.approx(4.0 / 5.0)
    y2 = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    sxy = np.mean((x - x.mean()) * (y2 - y2.mean()))
    assert metrics.lins_ccc(x, y2) == pytest.approx(2 * sxy / (x.var() + y2.var()))


def test_auc_and_groups():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    s[:20] = np.round(s[:20])  # some ties
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert [metrics.group_of(g) for g in (1, 2, 3, 4, 5)] == ["mild", "mild", "moderate", "severe", "severe"]
    p = np.array([[0.1, 0.2, 0.3, 0.25, 0.15]])
    assert np.allclose(metrics.group_probabilities(p), [[0.3, 0.3, 0.4]])


def test_bootstrap_resamples_patients():
    y, pred = _random_grades(n=90)
    patients = np.repeat(np.arange(30), 3)
    ci = metrics.bootstrap_ci(patients, lambda idx: {"acc": float(np.mean(y[idx] == pred[idx]))}, n_boot=300)
    acc = float(np.mean(y == pred))
    assert ci["acc"][0] < acc < ci["acc"][1]
    assert ci["acc"][1] - ci["acc"][0] < 0.4


# -------------------------------------------------------------------------------------- API rows and QC
class FakeModel:
    """Stands in for the CNN: fixed probabilities, real crop geometry (for the outside-the-image check)."""

    def __init__(self, probs=(0.05, 0.6, 0.2, 0.1, 0.05)):
        self.p = np.array(probs)
        self.calls = []

    def probabilities(self, slice2d, center_rc, width, *, spacing_rc=(1.0, 1.0), tta=True):
        _, outside = extract_crop(slice2d, center_rc, width, spacing_rc=spacing_rc, fov_factor=1.6)
        self.calls.append((center_rc, width))
        return self.p.copy(), outside

    def confidence(self, probabilities):
        return float(np.max(probabilities))


def _spine_2d(levels_present=("L3-L4", "L4-L5", "L5-S1"), lowest_at_edge=False):
    shape = (240, 200)
    img = np.full(shape, 60.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    rows = {"L1-L2": 30, "L2-L3": 70, "L3-L4": 110, "L4-L5": 150, "L5-S1": 190}
    if lowest_at_edge:
        rows["L5-S1"] = 232
    r, c = np.mgrid[: shape[0], : shape[1]]
    for level in levels_present:
        m = ((r - rows[level]) / 8.0) ** 2 + ((c - 90) / 30.0) ** 2 <= 1
        img[m] = 200
        lab[m] = DISC_LABELS[level]
    return sitk.GetImageFromArray(img), sitk.GetImageFromArray(lab)


def test_missing_and_cut_discs_are_not_graded():
    image, labels = _spine_2d(lowest_at_edge=True)
    mark_spacing_unknown(image)
    results = grade_discs(image, labels, GradingSettings(), model=FakeModel())
    assert [r.level for r in results] == list(DISCS)
    by = {r.level: r for r in results}
    for level in ("L1-L2", "L2-L3"):
        assert by[level].status == NOT_GRADED and "not found" in by[level].reason and by[level].grade is None
    assert by["L5-S1"].status == NOT_GRADED and "field of view" in by["L5-S1"].reason
    for level in ("L3-L4", "L4-L5"):
        r = by[level]
        assert r.graded and r.grade == 2 and r.group == "mild" and r.confidence == pytest.approx(0.6)
        assert r.expected_grade == pytest.approx(float(np.dot(r.probabilities, [1, 2, 3, 4, 5])))
    row = by["L5-S1"].to_row()
    assert row["grade"] == "" and row["p_grade1"] == "" and row["status"] == "not graded"
    row = by["L4-L5"].to_row()
    assert float(row["p_mild"]) == pytest.approx(0.65) and "pixel spacing unknown" in row["qc"]


def test_tiny_disc_is_not_graded():
    image, labels = _spine_2d(levels_present=("L4-L5",))
    arr = sitk.GetArrayFromImage(labels)
    arr[arr > 0] = 0
    arr[100:103, 100:103] = DISC_LABELS["L3-L4"]
    lab = sitk.GetImageFromArray(arr)
    by = {r.level: r for r in grade_discs(image, lab, model=FakeModel())}
    assert by["L3-L4"].status == NOT_GRADED and "too small" in by["L3-L4"].reason


def test_stack_uses_largest_slice_and_neighbours_and_reorients():
    # A 3D stack, numpy (k, j, i): i = anterior->posterior... built so that index j runs inferior->superior.
    nslices, rows, cols = 7, 240, 200
    img2d, lab2d = (sitk.GetArrayFromImage(x) for x in _spine_2d(levels_present=("L4-L5",)))
    img = np.zeros((nslices, rows, cols), np.float32)
    lab = np.zeros((nslices, rows, cols), np.uint8)
    for k, frac in enumerate((0, 0.2, 0.6, 1.0, 0.8, 0.3, 0)):
        if frac:
            img[k] = img2d
            m = lab2d > 0
            shrink = np.zeros_like(m)
            rr, cc = np.nonzero(m)
            keep = np.abs(cc - cc.mean()) <= frac * (cc.max() - cc.min()) / 2
            shrink[rr[keep], cc[keep]] = True
            lab[k][shrink] = DISC_LABELS["L4-L5"]
    # store j flipped (index j increases towards superior) and say so in the direction matrix
    image = sitk.GetImageFromArray(img[:, ::-1].copy())
    labels = sitk.GetImageFromArray(lab[:, ::-1].copy())
    # i -> posterior (+y), j -> superior (+z), k -> left (+x)
    direction = (0, 0, 1, 1, 0, 0, 0, 1, 0)
    for x in (image, labels):
        x.SetDirection(direction)
        x.SetSpacing((0.8, 0.8, 4.0))
    a, lb, spacing_rc, notes = sagittal_slices(image, labels)
    assert a.shape == (nslices, rows, cols) and spacing_rc == (0.8, 0.8) and not notes
    assert np.array_equal(lb, lab)  # back to superior->inferior rows
    fake = FakeModel()
    by = {r.level: r for r in grade_discs(image, labels, model=fake)}
    r = by["L4-L5"]
    assert r.graded and r.slices == (3, 4, 2) and r.width_unit == "mm"
    assert len(fake.calls) == 3


def test_labelmap_must_match_the_image_grid():
    from DiscAnalysisLib.errors import InputError

    image, _ = _spine_2d()
    with pytest.raises(InputError, match="grid"):
        grade_discs(image, sitk.Image(10, 10, sitk.sitkUInt8), model=FakeModel())
