#!/usr/bin/env python
"""Does the lowest-disc judge change level names off the Sudirman data? (sessions 5 and 7)

    DISCANALYSIS_DATA=../shared/data python scripts/check_lowest_disc_judge.py [--judge runs/judge/lowest_disc_judge.pt] \
        [--margin 4] [--folds runs/cont]

Runs the product's segmentation network and post-processing on images the judge never saw and names the
levels twice, with the size/depth rule alone and with the judge's two questions
(``assign_levels(lowest_is_l5s1=...)``), then prints for each image whether any disc name moved and the
judge's flags: lumbar_t2_3d held-out subjects with their leave-one-subject-out fold networks (``--folds``,
as ``evaluate_segmentation.py``; named right = the predicted label covering most of each reference disc),
the 4 radiospineomics slices (L1-L2 reference), the 4 BianqueNet sample images (no reference; pixel size
assumed as in the CLI) and the demo phantom (truth labels). Criteria (2)-(5) of the judge's shipping rule in
docs/validation.md (Issue 4, sessions 5 and 7). Default judge and margin: the shipped ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


from DiscAnalysisLib import levels as lv  # noqa: E402
from DiscAnalysisLib.image_io import read_image  # noqa: E402
from DiscAnalysisLib.progress import Progress  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402
from DiscAnalysisLib.segmentation import (  # noqa: E402
    SegmentationSettings,
    api,
    judge,  # noqa: E402
    network,
)
from DiscAnalysisLib.segmentation.postprocess import assign_levels  # noqa: E402
from DiscAnalysisLib.segmentation.preprocess import from_canonical  # noqa: E402

DATA = Path(os.environ.get("DISCANALYSIS_DATA", ROOT.parent / "shared" / "data"))


@cache
def _network(weights: str | None):
    return network.load_model(weights, sha256_of(weights) if weights else None)


def name_twice(image: sitk.Image, judge_net, weights: str | None = None, margin: float = judge.MARGIN):
    """Labelmaps (input layout) and flags with the rule alone and with the judge."""
    settings = SegmentationSettings(weights_path=weights, weights_sha256=sha256_of(weights) if weights else None)
    net = _network(weights)
    stack, probs = api._infer(image, settings, net, Progress.wrap(None))
    out = []
    for check in (None, judge.make_check(judge_net, stack.slices, stack.spacing_mm, margin, settings.postprocess)):
        labels_c, _, flags = assign_levels(probs, stack.spacing_mm, settings.postprocess, lowest_is_l5s1=check)
        out.append((from_canonical(stack, labels_c), flags))
    return out


def named(pred: np.ndarray, ref: np.ndarray) -> bool:
    """Every reference disc (project labels) is mostly covered by the predicted disc of its own level."""
    ok = True
    for name in lv.DISCS:
        m = ref == lv.DISC_LABELS[name]
        if m.any():
            vals, counts = np.unique(pred[m], return_counts=True)
            ok &= int(vals[np.argmax(counts)]) == lv.DISC_LABELS[name]
    return bool(ok)


def report(case: str, pair, ref: np.ndarray | None = None) -> None:
    (rule, f_rule), (jdg, f_jdg) = pair
    moved = not np.array_equal(rule, jdg)
    line = f"{case}: names {'CHANGED' if moved else 'unchanged'}; judge flags {[f for f in f_jdg if 'judge' in f]}"
    if ref is not None:
        line += f"; named right: rule {named(rule, ref)}, judge {named(jdg, ref)}"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default=None, help="weights written by train_lowest_disc_judge.py (default: the shipped judge)")
    ap.add_argument("--folds", type=Path, default=ROOT / "runs" / "cont", help="folder with fold<S>/weights.pt")
    ap.add_argument("--margin", type=float, default=judge.MARGIN, help="the judge's margin (judge.make_check; 0 = session 5)")
    args = ap.parse_args()
    judge_net = judge.load_judge(args.judge)
    for s in ("11", "20", "25", "42"):
        w = args.folds / f"fold{s}" / "weights.pt"
        img = sitk.ReadImage(str(DATA / "lumbar_t2_3d" / f"{s}_T2w.nrrd"))
        ref = lv.convert_labels(sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "lumbar_t2_3d" / f"{s}_discs.nrrd"))), "from_l5s1")
        report(f"lumbar_t2_3d {s} (fold network)", name_twice(img, judge_net, str(w), args.margin), ref)
    base = DATA / "radiospineomics" / "sample_data"
    for p in sorted((base / "images").glob("*.nrrd")):
        mask = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(base / "masks" / f"L1_L2_IVD-{p.name}")))) > 0
        ref = np.where(mask, lv.DISC_LABELS["L1-L2"], 0)
        pair = name_twice(sitk.ReadImage(str(p)), judge_net, margin=args.margin)
        report(f"radiospineomics {p.stem}", [(np.squeeze(a), f) for a, f in pair], ref)
    for p in sorted((DATA / "bianquenet" / "data_input").glob("*/*.BMP")):
        report(f"bianquenet {p.parent.name}", name_twice(read_image(p), judge_net, margin=args.margin))
    from DiscAnalysisLib.phantom import PhantomSettings, make_phantom

    ph = make_phantom(PhantomSettings())
    report("demo phantom", name_twice(ph.t2w, judge_net, margin=args.margin), sitk.GetArrayFromImage(ph.labels))


if __name__ == "__main__":
    main()
