"""Speed of Pfirrmann grading per disc, with and without test-time augmentation (prints numbers).

    PYTHONPATH=. python Testing/benchmarks/bench_grading.py

Synthetic 2D slice with five labelled discs; the ratio TTA / no-TTA is measured in the same process.
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from DiscAnalysisLib.grading.api import GradingSettings, grade_discs
from DiscAnalysisLib.grading.predict import load_model
from DiscAnalysisLib.levels import DISC_LABELS


def main() -> None:
    import torch

    torch.set_num_threads(2)
    shape = (384, 384)
    img = np.full(shape, 60.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    r, c = np.mgrid[: shape[0], : shape[1]]
    for i, value in enumerate(DISC_LABELS.values()):
        m = ((r - 60 - 60 * i) / 9.0) ** 2 + ((c - 180) / 30.0) ** 2 <= 1
        img[m] = 200
        lab[m] = value
    image, labels = sitk.GetImageFromArray(img), sitk.GetImageFromArray(lab)
    model = load_model()
    grade_discs(image, labels, model=model)  # warm-up
    times = {}
    for tta in (False, True):
        t0 = time.perf_counter()
        n = 5
        for _ in range(n):
            grade_discs(image, labels, GradingSettings(tta=tta), model=model)
        times[tta] = (time.perf_counter() - t0) / (n * 5)
    print(f"per disc: {times[False] * 1000:.1f} ms without TTA, {times[True] * 1000:.1f} ms with TTA "
          f"(ratio {times[True] / times[False]:.1f})")


if __name__ == "__main__":
    main()
