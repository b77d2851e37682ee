"""CSF reference region for the signal-intensity difference (ΔSI) of the markers.

ΔSI (BianqueNet) scales each disc's signal by the cerebrospinal fluid's, so the markers need CSF
(label ``levels.CSF_LABEL``) in the labelmap. The network has no CSF class (no training set with a usable
licence labels it), so the segmentation adds it with a fixed anatomical rule, decided before any result
was looked at and not tuned (first used in ``scripts/compare_signal_grade.py`` for issue 6):

* in every image row (superior-inferior) of a sagittal slice that holds a segmented vertebral body or disc,
  a window from ``gap_mm`` to ``gap_mm + depth_mm`` dorsal of the most dorsal labelled pixel: the spinal
  canal behind the vertebral column (the posterior longitudinal ligament is ~1 mm; the lumbar canal is
  15-20 mm deep, so 1-11 mm stays inside it);
* only unlabelled pixels, and in a 3D stack only the slices within ``half_width_mm`` of the mid-sagittal
  slice (the slice with the most disc voxels): the dural sac is ~15-20 mm wide, and lateral windows would
  take in foramina and fat;
* CSF = the window pixels in the brightest of three Otsu classes of all window pixels (multi-Otsu): on
  T2w, CSF is the brightest tissue of the canal, epidural fat the next (FSE), ligaments, nerve roots and
  bone the darkest. Two classes (the first version of the rule) took the fat in as well: on the phantom
  36 % of the "CSF" was fat, against 0 % with three. A window with fewer than three grey levels falls
  back to two classes.

Works in the canonical sagittal layout of :mod:`.preprocess` (slices left-right, rows superior ->
inferior, columns anterior -> posterior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import levels


@dataclass(frozen=True)
class CsfSettings:
    gap_mm: float = 1.0
    depth_mm: float = 10.0
    half_width_mm: float = 8.0
    classes: int = 3


def label_csf(labels: np.ndarray, image: np.ndarray, spacing_mm: tuple[float, float, float],
              settings: CsfSettings = CsfSettings()) -> tuple[np.ndarray, int]:
    """``labels`` (n, rows, cols) with ``levels.CSF_LABEL`` added on the CSF of the spinal canal, and the
    number of CSF pixels (0: no canal window or no contrast in it; ``labels`` is then returned unchanged).

    ``image``: the intensities on the same canonical grid; ``spacing_mm``: (left-right, superior-inferior,
    anterior-posterior) in mm.
    """
    from skimage.filters import threshold_multiotsu, threshold_otsu

    spine_labels = [*levels.VERTEBRA_LABELS.values(), *levels.DISC_LABELS.values()]
    spine = np.isin(labels, spine_labels)
    n, _, n_cols = labels.shape
    ap_mm = float(spacing_mm[2])
    first = int(math.ceil(settings.gap_mm / ap_mm))
    last = int(math.ceil((settings.gap_mm + settings.depth_mm) / ap_mm))

    rows_with_spine = spine.any(axis=2)  # (n, rows)
    if n > 1:
        discs = np.isin(labels, list(levels.DISC_LABELS.values())).sum(axis=(1, 2))
        mid = int(np.argmax(discs))
        reach = int(math.floor(settings.half_width_mm / float(spacing_mm[0])))
        keep = np.zeros(n, bool)
        keep[max(0, mid - reach): mid + reach + 1] = True
        rows_with_spine &= keep[:, None]
    # most dorsal labelled column of every (slice, row)
    edge = n_cols - 1 - np.argmax(spine[..., ::-1], axis=2)
    cols = np.arange(n_cols)
    window = (rows_with_spine[..., None] & (cols >= (edge + first)[..., None])
              & (cols <= (edge + last)[..., None]) & (labels == 0))
    values = image[window]
    if values.size < 2 or not np.isfinite(values).all() or np.ptp(values) == 0:
        return labels, 0
    threshold = None
    if settings.classes > 2:
        try:
            threshold = threshold_multiotsu(values, classes=settings.classes)[-1]
        except ValueError:  # fewer grey levels in the window than classes: two classes will do
            threshold = None
    if threshold is None:
        threshold = threshold_otsu(values)
    csf = window & (image > threshold)
    out = labels.copy()
    out[csf] = levels.CSF_LABEL
    return out, int(csf.sum())
