#!/usr/bin/env python
"""Out-of-fold check of a per-grade decision bias on the grading ensemble (experiment, session 8).

    python scripts/decision_bias_grading.py runs4/e90 runs6/r96 [--objective score|ba]

The shipped ensemble grades by the argmax of its averaged probabilities. Balanced accuracy weighs the rare
grades 1 and 5 as much as grade 2, so a per-grade additive bias on the log-probabilities (grade 2 fixed at 0)
might trade a little accuracy on common grades for recall on rare ones. The bias is chosen on four folds' discs
(coordinate search, each bias in [-2, 2] step 0.1, 3 sweeps from 0) to maximise the objective, and applied to the
fifth: the pooled nested score is an honest estimate of what the bias would do on new patients. Input: two
cross-fitted recipes averaged fold by fold, exactly as ``pair_crossfit_grading.py`` scores the shipped pairs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from crossfit_grading import load_folds, selection_score  # noqa: E402
from pair_crossfit_grading import paired_oof, summary  # noqa: E402

from DiscAnalysisLib.grading import metrics  # noqa: E402

GRID = np.round(np.arange(-2.0, 2.0001, 0.1), 1)


def objective_of(name: str):
    if name == "ba":
        return metrics.balanced_accuracy
    return selection_score


def fit_bias(logp: np.ndarray, y: np.ndarray, objective, sweeps: int = 3) -> np.ndarray:
    """Per-grade bias (grade 2 fixed at 0) maximising objective(y, argmax(logp + b) + 1) by coordinate search."""
    b = np.zeros(5)
    best = objective(y, (logp + b).argmax(1) + 1)
    for _ in range(sweeps):
        for g in (0, 2, 3, 4):
            for v in sorted(GRID, key=abs):  # ties keep the smaller |b|
                trial = b.copy()
                trial[g] = v
                s = objective(y, (logp + trial).argmax(1) + 1)
                if s > best + 1e-12:
                    best, b = s, trial
    return b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs=2, type=Path)
    ap.add_argument("--objective", default="score", choices=("score", "ba"))
    args = ap.parse_args(argv)
    _, y, folds, a, b = paired_oof([load_folds(d, "final") for d in args.dirs])
    p = (a + b) / 2
    logp = np.log(np.clip(p, 1e-9, 1))
    objective = objective_of(args.objective)
    nested = np.zeros(len(y), dtype=int)
    print(f"objective {args.objective}; biases per outer fold (grades 1-5):")
    for f in np.unique(folds):
        inner = folds != f
        b = fit_bias(logp[inner], y[inner], objective)
        nested[~inner] = (logp[~inner] + b).argmax(1) + 1
        print(f"  fold {f}: {b.tolist()}")
    print(f"| out of fold, {len(y)} discs | score | BA | QWK | accuracy | mean confidence | recall grade 1-5 |")
    print("|---|---|---|---|---|---|---|")
    summary("pair, argmax", p, y)
    onehot = np.eye(5)[nested - 1]
    summary(f"pair + nested bias ({args.objective})", onehot, y)
    print("nested confusion rows", metrics.confusion(y, nested).tolist())
    print(f"bias on all folds: {fit_bias(logp, y, objective).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
