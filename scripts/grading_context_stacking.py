#!/usr/bin/env python
"""Does disc context (level, the same patient's other discs) add to the grading networks? (session-5 experiment)

    python scripts/grading_context_stacking.py --dir runs4/e90

Reads the cross-fitted networks' out-of-fold files (``*_oof.npz``, as ``crossfit_grading.py``), one
probability vector per disc, and fits a class-balanced multinomial logistic regression (scikit-learn, C = 1)
on four candidate feature sets, nested over the same patient folds (fit on four folds' discs, predict the
fifth). Prints the pooled selection score (BA + QWK) / 2, BA, QWK, accuracy and per-grade recall next to
plain argmax. The test patients are never read. Results and the decision rule: docs/validation.md
("Session 5: disc context").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from crossfit_grading import decide, load_folds, per_disc, selection_score  # noqa: E402

from DiscAnalysisLib.grading import metrics  # noqa: E402

LEVELS = ("L3-L4", "L4-L5", "L5-S1")


def feature_sets(probs: np.ndarray, keys: list) -> dict[str, np.ndarray]:
    lp = np.log(np.clip(probs, 1e-9, None))
    lev = np.array([[k[1] == name for name in LEVELS] for k in keys], float)
    pid = np.array([k[0] for k in keys])
    ctx = np.zeros_like(lp)
    for i in range(len(keys)):
        others = (pid == pid[i]) & (np.arange(len(keys)) != i)
        ctx[i] = lp[others].mean(0) if others.any() else lp[i]
    return {"A: log-probabilities": lp, "B: A + level": np.hstack([lp, lev]),
            "C: B + other discs": np.hstack([lp, lev, ctx]), "D: A + other discs": np.hstack([lp, ctx])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="folder with the folds' *_oof.npz")
    args = ap.parse_args(argv)
    probs, y, folds, keys = per_disc(load_folds(args.dir, "final"))
    pred = decide(probs)
    print(f"plain argmax: score {selection_score(y, pred):.4f} BA {metrics.balanced_accuracy(y, pred):.3f}")
    for name, x in feature_sets(probs, keys).items():
        pred = np.zeros(len(y), int)
        for f in np.unique(folds):
            inner = folds != f
            model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x[inner], y[inner])
            pred[~inner] = model.predict(x[~inner])
        ba, q = metrics.balanced_accuracy(y, pred), metrics.cohen_kappa(y, pred, weights="quadratic")
        recall = [round(float(np.mean(pred[y == g] == g)), 2) for g in metrics.GRADES]
        print(f"{name}: score {(ba + q) / 2:.4f} BA {ba:.3f} QWK {q:.3f} accuracy {np.mean(pred == y):.3f} recall {recall}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
