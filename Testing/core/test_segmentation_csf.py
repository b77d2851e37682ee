"""The CSF reference rule of the segmentation (segmentation.csf) and its effect on the markers' ΔSI."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from DiscAnalysisLib import levels
from DiscAnalysisLib.segmentation.csf import CsfSettings, label_csf

DISC, BODY, CSF = levels.DISC_LABELS["L3-L4"], levels.VERTEBRA_LABELS["L3"], levels.CSF_LABEL


def _column(n_slices=1, noise=0.0, seed=0):
    """Canonical (slices, rows S->I, cols A->P) at 1 mm: column in cols 10-39, then ligament (dark) 40,
    CSF (bright) 41-50, ligament 51-52, epidural fat (medium bright) 53-58, muscle (dark) beyond."""
    rng = np.random.default_rng(seed)
    shape = (n_slices, 60, 100)
    lab = np.zeros(shape, np.uint8)
    lab[:, 5:25, 10:40] = BODY
    lab[:, 25:32, 10:40] = DISC
    lab[:, 32:55, 10:40] = BODY
    img = np.full(shape, 80.0)
    img[:, :, 10:40] = 150.0
    img[:, :, 41:51] = 600.0
    img[:, :, 53:59] = 380.0
    img += rng.normal(0, noise, shape)
    return lab, img


def test_csf_is_the_bright_canal_behind_the_column_not_fat_or_labels():
    lab, img = _column(noise=10.0)
    out, n = label_csf(lab, img, (1.0, 1.0, 1.0))
    csf = out == CSF
    assert n == csf.sum() > 0
    assert csf[:, :, 41:51].sum() >= 0.9 * csf.sum()  # inside the canal
    assert not csf[:, :, 53:59].any()  # epidural fat is not CSF (3-class threshold)
    assert not csf[:, :5].any() and not csf[:, 55:].any()  # only rows that hold the column
    np.testing.assert_array_equal(out[lab != 0], lab[lab != 0])  # labelled pixels untouched


def test_two_class_threshold_also_takes_the_fat():
    lab, img = _column(noise=10.0)
    out, _ = label_csf(lab, img, (1.0, 1.0, 1.0), CsfSettings(classes=2, depth_mm=20.0))
    assert (out == CSF)[:, :, 53:59].any()  # why the product uses three classes


def test_window_scales_with_the_pixel_size():
    lab, img = _column()
    # at 2 mm per column the 1-11 mm window is columns 40-45 behind the column: the CSF starts inside it
    out, n = label_csf(lab, img, (1.0, 1.0, 2.0))
    assert n > 0 and (out == CSF)[:, :, 46:].sum() == 0


def test_3d_keeps_to_the_slices_near_the_mid_sagittal_one():
    lab, img = _column(n_slices=21)
    for k in range(21):  # the disc is largest in slice 10 (mid-sagittal) and shrinks laterally
        lab[k, 25:32, 10:10 + abs(k - 10)] = 0
    out, _ = label_csf(lab, img, (2.0, 1.0, 1.0), CsfSettings(half_width_mm=8.0))
    with_csf = np.nonzero((out == CSF).any(axis=(1, 2)))[0]
    assert with_csf.min() >= 10 - 4 and with_csf.max() <= 10 + 4  # mid slice 10 +- 8 mm / 2 mm


def test_no_contrast_or_no_column_leaves_the_labels_unchanged():
    lab, img = _column()
    flat = np.full_like(img, 100.0)
    out, n = label_csf(lab, flat, (1.0, 1.0, 1.0))
    assert n == 0 and out is lab
    out, n = label_csf(np.zeros_like(lab), img, (1.0, 1.0, 1.0))
    assert n == 0


def test_segmentation_adds_csf_that_gives_the_markers_a_delta_si():
    """End to end on the phantom (whose dural sac is known): the CSF found lies in the sac and has the sac's
    signal (ΔSI's scale), and every disc gets a ΔSI from the segmentation's own labels. (ΔSI itself is not
    compared: BianqueNet's histogram peaks on one noisy slice move by ~5 % for a 0.5 % change of scale.)"""
    from DiscAnalysisLib.markers import compute_markers
    from DiscAnalysisLib.phantom import make_phantom
    from DiscAnalysisLib.segmentation.api import SegmentationSettings, segment_image

    ph = make_phantom()
    seg = segment_image(ph.t2w)
    img = sitk.GetArrayFromImage(ph.t2w)
    ours = sitk.GetArrayFromImage(seg.labels) == CSF
    truth = sitk.GetArrayFromImage(ph.labels) == CSF
    assert ours.sum() > 500 and (ours & truth).sum() >= 0.95 * ours.sum()
    assert abs(np.median(img[ours]) / np.median(img[truth]) - 1) < 0.02
    assert "no_csf_reference" not in seg.flags
    markers = compute_markers(ph.t2w, seg.labels)
    assert all(markers[level].delta_si is not None for level in levels.DISCS)
    # without the rule the markers have no reference tissue
    plain = segment_image(ph.t2w, SegmentationSettings(csf=None))
    assert not (sitk.GetArrayFromImage(plain.labels) == CSF).any()
    assert compute_markers(ph.t2w, plain.labels)["L3-L4"].delta_si is None
