"""The shipped segmentation model on real scans it was not trained on.

The shipped weights were trained without lumbar_t2_3d subject 11 (see Resources/Models/README.md), so
subject 11 is a fair held-out case. radiospineomics is never used for training (no licence file).
The floors below sit well under what the model scores (docs/validation.md), so a regression - not noise -
makes them fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_data
from DiscAnalysisLib import levels as lv

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

HELD_OUT = "11"
DICE_FLOOR = 0.65  # per-level mean over L1-L2..L5-S1 on the central slabs (measured 0.877 on the whole volume, docs/validation.md)
SLABS = slice(24, 40)  # 16 central sagittal slices (1 mm) of the 67, to keep the test fast


def _dice(a, b):
    return 2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1)


def test_held_out_subject_discs_named_and_segmented():
    from DiscAnalysisLib.segmentation import segment_image

    img = sitk.ReadImage(str(shared_data("lumbar_t2_3d", f"{HELD_OUT}_T2w.nrrd")))[:, :, SLABS]
    lab = sitk.ReadImage(str(shared_data("lumbar_t2_3d", f"{HELD_OUT}_discs.nrrd")))[:, :, SLABS]
    ref = lv.convert_labels(sitk.GetArrayFromImage(lab), "from_l5s1")
    res = segment_image(img)
    pred = sitk.GetArrayFromImage(res.labels)
    assert res.labels.GetSize() == img.GetSize() and res.labels.GetDirection() == img.GetDirection()
    dices = {n: _dice(pred == lv.DISC_LABELS[n], ref == lv.DISC_LABELS[n]) for n in lv.DISCS}
    assert np.mean(list(dices.values())) >= DICE_FLOOR, dices
    assert min(dices.values()) >= DICE_FLOOR - 0.1, dices  # every level named right (a shifted level scores ~0)
    assert res.labels.GetOrigin() == img.GetOrigin()
    rows = {r.level: r for r in res.levels}
    assert all(rows[n].found and rows[n].confidence > 0.5 for n in lv.DISCS)
    assert rows["S1"].found  # the sacrum is seen below L5-S1
    assert "sacrum_not_detected" not in res.flags


def test_radiospineomics_slice_l1l2_found_and_named():
    """A 2D slice from another scanner at 0.55 mm, showing thoracic discs above L1-L2."""
    from DiscAnalysisLib.segmentation import segment_image

    base = shared_data("radiospineomics", "sample_data")
    img = sitk.ReadImage(str(base / "images" / "P0741_756_IMG00005.nrrd"))
    ref = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(base / "masks" / "L1_L2_IVD-P0741_756_IMG00005.nrrd")))) > 0
    res = segment_image(img)
    pred = sitk.GetArrayFromImage(res.labels)
    # 0.74 measured with the default tight outline (0.87 at the argmax in session 1): this data set outlines discs more
    # generously than lumbar_t2_3d (docs/validation.md)
    assert _dice(pred == lv.DISC_LABELS["L1-L2"], ref) >= 0.6
    assert res.labels.GetSize() == img.GetSize()
