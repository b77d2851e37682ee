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
    import os

    from DiscAnalysisLib.grading.predict import MODEL_FILES
    from DiscAnalysisLib.resources import verified_path

    shipped = load_model()
    models = {"shipped": shipped}
    paths = [verified_path(*m) for m in MODEL_FILES]
    for size in sorted(set(g[0] for g in shipped.geometries)) if len(set(shipped.geometries)) > 1 else ():
        members = [p for p, g in zip(paths, shipped.geometries, strict=True) if g[0] == size]
        models[f"the {size} px members alone"] = load_model(members, temperature=shipped.temperature)
    if len(MODEL_FILES) > 1:  # one member alone, for the ratio ensemble / single
        models["first member alone"] = load_model(paths[0])
    for name, model in models.items():
        grade_discs(image, labels, model=model)  # warm-up
        times, cpu = {}, {}
        for tta in (False, True):
            t0, c0 = time.perf_counter(), time.process_time()
            n = 5
            for _ in range(n):
                grade_discs(image, labels, GradingSettings(tta=tta), model=model)
            times[tta] = (time.perf_counter() - t0) / (n * 5)
            cpu[tta] = (time.process_time() - c0) / (n * 5)
        print(f"{name} ({len(model.nets)} network(s)), per disc: {times[False] * 1000:.1f} ms without TTA, "
              f"{times[True] * 1000:.1f} ms with TTA (ratio {times[True] / times[False]:.1f}); CPU "
              f"{cpu[False] * 1000:.1f} / {cpu[True] * 1000:.1f} ms; load average {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
