#!/usr/bin/env python
"""Choose the disc-outline rule (slice averaging sigma x probability threshold) on each fold's TRAINING subjects.

    python scripts/select_outline_rule.py --folds runs/cont --out runs/outline_rule_cont.json

For every cross-validation fold (``<folds>/fold<S>/weights.pt``, trained without lumbar_t2_3d subject S) all
four subjects are segmented; discs are detected and named as the library does (unaveraged argmax), and the
outline of each detected disc is then drawn for every pair of (Gaussian slice-averaging sigma in mm,
threshold on the averaged disc probability) of the grid, exactly as ``PostprocessSettings.slice_smoothing_mm``
and ``disc_outline_probability`` do. Each fold picks the pair with the best mean disc Dice over its three
training subjects; the held-out subject's Dice is only reported for that choice (and for reference, in the
JSON, for every pair). The shipped default should be a choice of the folds, never of the held-out scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import segmentation_data as sd  # noqa: E402

from DiscAnalysisLib import levels as lv  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402
from DiscAnalysisLib.segmentation import network  # noqa: E402
from DiscAnalysisLib.segmentation.postprocess import PostprocessSettings, assign_levels, smooth_across_slices  # noqa: E402
from DiscAnalysisLib.segmentation.preprocess import normalise_slice, to_canonical  # noqa: E402

SIGMAS_MM = (0.0, 0.75, 1.0, 1.5, 2.0, 3.0)
THRESHOLDS = (0.5, 0.8, 0.9, 0.93, 0.95, 0.97, 0.98)


def grid_scores(probs: np.ndarray, ref: np.ndarray, spacing) -> dict[tuple[float, float], float]:
    """Mean disc Dice (L1-L2..L5-S1) for every (sigma, threshold); ``ref`` holds 1 = L5-S1 .. 5 = L1-L2."""
    labels, _, _ = assign_levels(probs, spacing, PostprocessSettings(disc_outline_probability=0.0, slice_smoothing_mm=0.0))
    out = {}
    for sigma in SIGMAS_MM:
        p = smooth_across_slices(probs[:, network.DISC], spacing[0], PostprocessSettings(slice_smoothing_mm=sigma))
        for t in THRESHOLDS:
            sure = p >= t
            dice = []
            for i, name in enumerate(lv.DISCS):
                r = ref == 5 - i
                m = (labels == lv.DISC_LABELS[name]) & sure
                dice.append(2 * (r & m).sum() / max(int(r.sum() + m.sum()), 1))
            out[(sigma, t)] = float(np.mean(dice))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=Path, required=True, help="folder with fold<S>/weights.pt")
    ap.add_argument("--out", type=Path, required=True, help="JSON with every score and each fold's choice")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    data = {}
    for s in sd.SUBJECTS_3D:
        img, lab = sd.load_3d_subject(s)
        st, lt = to_canonical(img), to_canonical(lab)
        data[s] = (np.stack([normalise_slice(x) for x in st.slices]), np.rint(lt.slices).astype(np.uint8), st.spacing_mm)
    scores: dict[str, dict] = {}
    result = {"grid": {"sigma_mm": SIGMAS_MM, "threshold": THRESHOLDS}, "folds": {}}
    for f in sd.SUBJECTS_3D:
        w = args.folds / f"fold{f}" / "weights.pt"
        if not w.exists():
            print(f"fold {f}: {w} missing, skipped", flush=True)
            continue
        net = network.load_model(str(w), sha256_of(w))
        scores[f] = {s: grid_scores(network.predict_probabilities(net, x), ref, sp) for s, (x, ref, sp) in data.items()}
        train = [s for s in sd.SUBJECTS_3D if s != f]
        best = max(scores[f][f], key=lambda c: (np.mean([scores[f][s][c] for s in train]), -c[0]))
        result["folds"][f] = {
            "chosen": {"sigma_mm": best[0], "threshold": best[1]},
            "train_mean_dice": float(np.mean([scores[f][s][best] for s in train])),
            "held_out_dice": scores[f][f][best],
            "scores": {s: {f"{c[0]}|{c[1]}": v for c, v in sc.items()} for s, sc in scores[f].items()},
        }
        print(f"fold {f}: chosen sigma {best[0]} mm, threshold {best[1]} (training subjects {result['folds'][f]['train_mean_dice']:.3f})"
              f" -> held-out {f}: {scores[f][f][best]:.3f}", flush=True)
    if scores:
        pooled = {c: float(np.mean([scores[f][s][c] for f in scores for s in scores[f] if s != f])) for c in next(iter(scores.values()))[next(iter(scores))]}
        best = max(pooled, key=lambda c: (pooled[c], -c[0]))
        result["pooled_training_best"] = {"sigma_mm": best[0], "threshold": best[1], "dice": pooled[best]}
        result["held_out_mean_with_fold_choices"] = float(np.mean([v["held_out_dice"] for v in result["folds"].values()]))
        print(f"best over all folds' training subjects: sigma {best[0]} mm, threshold {best[1]} ({pooled[best]:.3f}); "
              f"held-out mean with each fold's own choice: {result['held_out_mean_with_fold_choices']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
