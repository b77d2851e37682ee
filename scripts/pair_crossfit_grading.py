#!/usr/bin/env python
"""Out-of-fold score of two cross-fitted recipes averaged fold by fold (an honest two-network ensemble estimate).

    python scripts/pair_crossfit_grading.py runs4/e90 runs6/r96

Both directories must come from ``train_grading.py --cv-folds 5`` with the same folds (``--cv-seed``) and split,
so that for every non-test disc both fold networks that predict it never saw it in training. Per disc the two
networks' TTA-averaged probabilities (temperature 1, a patient's images averaged) are averaged, and scored like
every grading decision: (balanced accuracy + quadratic kappa) / 2. Prints the temperature of the pair (fitted
like the shipped ensemble's, on the pooled out-of-fold logits, here both networks' TTA variants of each image
together: the temperature for an ensemble of the two recipes' members). Also prints each recipe alone and the
calibration (mean largest probability against accuracy), to show how averaging flattens the probabilities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from crossfit_grading import load_folds, per_disc, selection_score  # noqa: E402

from DiscAnalysisLib.grading import metrics  # noqa: E402
from DiscAnalysisLib.grading.predict import fit_temperature  # noqa: E402


def summary(name: str, probs: np.ndarray, y: np.ndarray) -> dict:
    pred = probs.argmax(1) + 1
    conf = metrics.confusion(y, pred)
    row = {"name": name, "score": selection_score(y, pred), "balanced_accuracy": metrics.balanced_accuracy(y, pred),
           "kappa_quadratic": metrics.cohen_kappa(y, pred, weights="quadratic"), "accuracy": float(np.mean(pred == y)),
           "mean_confidence": float(probs.max(1).mean()), "recall": (np.diag(conf) / conf.sum(1)).round(3).tolist(),
           "confusion": conf.tolist()}
    print(f"| {name} | {row['score']:.3f} | {row['balanced_accuracy']:.3f} | {row['kappa_quadratic']:.3f} | "
          f"{row['accuracy']:.3f} | {row['mean_confidence']:.3f} | {' '.join(f'{r:.2f}' for r in row['recall'])} |")
    return row


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |accuracy - mean confidence| per equal-width bin, weighted by the bin's share."""
    b = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(correct[b == i].mean() - confidence[b == i].mean()) * np.mean(b == i) for i in np.unique(b)))


def calibrate_confidence(pool: dict, temperature: float) -> None:
    """How well the largest probability states P(grade right), out of fold at the pair temperature, and two maps
    checked by nested cross-fitting over the same folds: isotonic (reported; its ends reach exactly 0 and 1 on a
    few discs, so it is not used) and a two-parameter logistic map P = sigmoid(a * logit(q) + b), printed as
    ``CONFIDENCE_CALIBRATION`` for DiscAnalysisLib/grading/predict.py (session-6 rule: adopt only if the nested
    ECE is lower by >= 0.02 and <= 0.05)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    probs, y, folds, _ = per_disc(pool, temperature)
    conf, correct = probs.max(1), (probs.argmax(1) + 1 == y).astype(int)
    z = np.log(conf / (1 - conf))[:, None]

    def isotonic(train):
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(conf[train], correct[train])
        return lambda idx: fitted.predict(conf[idx])

    def logistic(train):
        fitted = LogisticRegression(C=np.inf).fit(z[train], correct[train])
        return lambda idx: fitted.predict_proba(z[idx])[:, 1]

    raw = ece(conf, correct)
    print(f"confidence: accuracy {correct.mean():.3f}; largest probability mean {conf.mean():.3f}, ECE {raw:.3f}")
    for name, fit in (("isotonic", isotonic), ("logistic", logistic)):
        nested = np.zeros(len(conf))
        for f in np.unique(folds):
            inner = folds != f
            nested[~inner] = fit(inner)(~inner)
        cal = ece(nested, correct)
        print(f"  {name} map (nested): mean {nested.mean():.3f}, ECE {cal:.3f} -> "
              f"{'passes' if raw - cal >= 0.02 and cal <= 0.05 else 'fails'} the bar")
    lr = LogisticRegression(C=np.inf).fit(z, correct)
    print(f"CONFIDENCE_CALIBRATION = ({lr.coef_[0, 0]:.4f}, {lr.intercept_[0]:.4f})")


def paired_oof(pools) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-disc OOF probabilities of two cross-fitted recipes (their ``load_folds`` pools) on the same discs and
    folds: (sorted keys, grades, folds, probabilities of the first, of the second). Stops when the folds differ
    (pairing would not be out of fold)."""
    per = []
    for pool in pools:
        probs, y, folds, keys = per_disc(pool)
        per.append(tuple(dict(zip(keys, v, strict=True)) for v in (probs, y, folds)))
    keys = sorted(per[0][0])
    if set(keys) != set(per[1][0]) or any(per[0][2][k] != per[1][2][k] for k in keys):
        raise SystemExit("the two directories do not hold the same discs in the same folds; pairing would not be out of fold")
    y = np.array([per[0][1][k] for k in keys])
    folds = np.array([per[0][2][k] for k in keys])
    a, b = (np.array([p[0][k] for k in keys]) for p in per)
    return keys, y, folds, a, b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs=2, type=Path)
    ap.add_argument("--kind", default="final", choices=("final", "swa"))
    args = ap.parse_args(argv)
    pools = [load_folds(d, args.kind) for d in args.dirs]
    _, y, _, a, b = paired_oof(pools)
    print(f"| out of fold, {len(y)} discs | score | BA | QWK | accuracy | mean confidence | recall grade 1-5 |")
    print("|---|---|---|---|---|---|---|")
    summary(args.dirs[0].name, a, y)
    summary(args.dirs[1].name, b, y)
    pair = summary(f"{args.dirs[0].name} + {args.dirs[1].name}, per fold", (a + b) / 2, y)
    print("pair confusion rows", pair["confusion"])
    if not all(np.array_equal(pools[0][k], pools[1][k]) for k in ("patient", "level", "grade", "fold")):
        raise SystemExit("the two directories list their images in different orders; cannot fit the pair temperature")
    both = np.concatenate([pools[0]["logits"], pools[1]["logits"]], axis=0)  # (variants of both, images, 5)
    temperature = fit_temperature(both, pools[0]["grade"] - 1)
    print(f"pair temperature (pooled out-of-fold logits of both networks): {temperature!r}")
    calibrate_confidence({**pools[0], "logits": both}, temperature)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
