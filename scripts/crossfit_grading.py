#!/usr/bin/env python
"""Score cross-fitted grading networks on their out-of-fold predictions and apply the session-4 decision rule.

    python scripts/crossfit_grading.py --dirs runs4/e45 runs4/e90 --json runs4/crossfit.json

Each directory holds the ``*_oof.npz`` files that ``train_grading.py --cv-folds K --fold i --swa-fraction F``
wrote, one per fold. A candidate is a directory and a weight kind: ``final`` (last epoch) or ``swa``
(weights averaged over the last epochs). For each candidate the folds' out-of-fold logits are pooled (every
non-test patient must appear in exactly one fold) and scored like every grading decision in this project:
(balanced accuracy + quadratic kappa) / 2 with TTA, one prediction per disc (probabilities averaged over a
patient's images), temperature 1. The rule (docs/validation.md, "Session 4: cross-fitting"): the best pooled
score is chosen; its fold networks replace the shipped ensemble only if its score on the validation patients
of the split alone reaches ``--val-bar`` (0.711, the mean validation score of single shipped-recipe runs). The
ensemble temperature is fitted on the chosen candidate's pooled out-of-fold logits. The test patients are
never read. Prints the decision and the ``MODEL_FILES`` lines (paths and SHA-256) to paste into
``DiscAnalysisLib/grading/predict.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscAnalysisLib.grading import metrics  # noqa: E402
from DiscAnalysisLib.grading.predict import fit_temperature, probabilities_from_logits  # noqa: E402

KINDS = {"final": ("logits", ""), "swa": ("logits_swa", "_swa")}
#: Candidate values of each grade's log-probability offset (stage 2).
OFFSET_GRID = np.linspace(-2, 2, 41)


def load_folds(directory: Path, kind: str) -> dict:
    """Pooled out-of-fold logits (variants, discs, 5) and disc keys of one candidate, with its weight files."""
    key, suffix = KINDS[kind]
    files = sorted(directory.glob("*_oof.npz"))
    if not files:
        raise SystemExit(f"no *_oof.npz in {directory}: run train_grading.py --cv-folds ... --out {directory}/...")
    logits, grade, patient, level, weights, fold = [], [], [], [], [], []
    for i, f in enumerate(files):
        z = np.load(f)
        if key not in z:
            raise SystemExit(f"{f} has no {key} (train with --swa-fraction for the swa kind)")
        logits.append(z[key])
        grade.append(z["grade"])
        patient.append(z["patient"])
        level.append(z["level"])
        fold.append(np.full(len(z["grade"]), i))
        weights.append(f.with_name(f.name.replace("_oof.npz", suffix + ".pt")))
    patients_per_fold = [set(p.tolist()) for p in patient]
    for i, a in enumerate(patients_per_fold):
        for b in patients_per_fold[i + 1:]:
            if a & b:
                raise SystemExit(f"{directory}: a patient appears in two folds; the out-of-fold files do not belong together")
    return {"logits": np.concatenate(logits, axis=1), "grade": np.concatenate(grade),
            "patient": np.concatenate(patient), "level": np.concatenate(level), "weights": [str(w) for w in weights],
            "fold": np.concatenate(fold),
            "n_folds": len(files)}


def per_disc(pool: dict, temperature: float = 1.0, patients=None):
    """One probability vector per disc (TTA variants and a patient's images averaged), its grade and fold."""
    lg = pool["logits"]  # (variants, discs, 5)
    probs = np.array([probabilities_from_logits(lg[:, i], temperature) for i in range(lg.shape[1])])
    folds = pool.get("fold", np.zeros(len(probs), int))
    keys = [(int(pid), str(lev)) for pid, lev in zip(pool["patient"], pool["level"], strict=True)]
    keep = [i for i, k in enumerate(keys) if patients is None or k[0] in patients]
    fold_of = {keys[i]: int(folds[i]) for i in keep}
    ks, y, mean = metrics.mean_per_disc([keys[i] for i in keep], probs[keep], [int(pool["grade"][i]) for i in keep])
    return mean, y, np.array([fold_of[k] for k in ks]), ks


def decide(probs: np.ndarray, offsets=None) -> np.ndarray:
    """Grades 1-5: argmax of log-probabilities plus per-grade offsets (none: plain argmax)."""
    if offsets is None:
        return probs.argmax(1) + 1
    return (np.log(np.clip(probs, 1e-12, None)) + np.asarray(offsets)).argmax(1) + 1


def selection_score(y, pred) -> float:
    return (metrics.balanced_accuracy(y, pred) + metrics.cohen_kappa(y, pred, weights="quadratic")) / 2


def fit_offsets(probs: np.ndarray, y: np.ndarray, grid=OFFSET_GRID, sweeps: int = 3) -> np.ndarray:
    """Per-grade log-probability offsets (grade 2 fixed at 0) maximising the selection score (coordinate search).

    Ties keep the offset nearest 0, so a grade's offset moves only when that improves the score.
    """
    b = np.zeros(5)
    best = selection_score(y, decide(probs, b))
    for _ in range(sweeps):
        for k in (0, 2, 3, 4):
            for v in sorted(grid, key=abs):
                trial = b.copy()
                trial[k] = v
                sc = selection_score(y, decide(probs, trial))
                if sc > best + 1e-12:
                    best, b = sc, trial
    return b


def nested_offsets(probs, y, folds) -> tuple[np.ndarray, list[list[float]]]:
    """Predictions with offsets fitted on the other folds' discs only, and the offsets of each fold."""
    pred = np.zeros(len(y), int)
    fitted = []
    for f in np.unique(folds):
        inner = folds != f
        b = fit_offsets(probs[inner], y[inner])
        fitted.append(b.round(3).tolist())
        pred[~inner] = decide(probs[~inner], b)
    return pred, fitted


def score(pool: dict, temperature: float = 1.0, patients=None) -> dict:
    """Selection score of pooled logits, optionally restricted to some patients."""
    probs, y, _, keys = per_disc(pool, temperature, patients)
    pred = decide(probs)
    ba = metrics.balanced_accuracy(y, pred)
    qwk = metrics.cohen_kappa(y, pred, weights="quadratic")
    return {"score": (ba + qwk) / 2, "balanced_accuracy": ba, "kappa_quadratic": qwk,
            "accuracy": float(np.mean(pred == y)), "n_discs": int(len(y)), "n_patients": len({k[0] for k in keys}),
            "confusion": metrics.confusion(y, pred).tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", nargs="+", required=True, help="one directory of fold runs per schedule")
    ap.add_argument("--split", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--val-bar", type=float, default=0.711)
    ap.add_argument("--score-bar", type=float, default=None,
                    help="the chosen candidate must also reach this pooled OOF score (session 6: 0.678)")
    ap.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=tuple(KINDS), help="weight kinds to consider")
    ap.add_argument("--json", default=None)
    ap.add_argument("--ship", action="store_true",
                    help="when the rule replaces the shipped ensemble, copy the chosen members to "
                         "Resources/Models/pfirrmann_grading_cv<i>.pt (then paste the printed MODEL_FILES)")
    args = ap.parse_args(argv)

    from DiscAnalysisLib.resources import sha256_of

    split = json.loads(Path(args.split).read_text())
    val, test = set(split["val"]), set(split["test"])
    results, pools = {}, {}
    for d in args.dirs:
        for kind in args.kinds:
            name = f"{Path(d).name}/{kind}"
            pool = load_folds(Path(d), kind)
            if test & set(pool["patient"].tolist()):
                raise SystemExit(f"{d}: test patients in the out-of-fold files; refusing to score")
            pools[name] = pool
            results[name] = {"pooled": score(pool), "validation_patients": score(pool, patients=val),
                             "n_folds": pool["n_folds"]}
    chosen = max(results, key=lambda n: results[n]["pooled"]["score"])
    passes = results[chosen]["validation_patients"]["score"] >= args.val_bar
    if args.score_bar is not None:
        passes = passes and results[chosen]["pooled"]["score"] >= args.score_bar
    pool = pools[chosen]
    temperature = fit_temperature(pool["logits"], pool["grade"] - 1)
    # stage 2: grade offsets, checked by nested cross-fitting over the folds
    probs, y, folds, _ = per_disc(pool, temperature)
    plain = selection_score(y, decide(probs))
    nested_pred, nested_fitted = nested_offsets(probs, y, folds)
    nested = selection_score(y, nested_pred)
    offsets = fit_offsets(probs, y)
    stage2 = {"score_without_offsets": plain, "nested_score_with_offsets": nested,
              "nested_balanced_accuracy": metrics.balanced_accuracy(y, nested_pred),
              "nested_kappa_quadratic": metrics.cohen_kappa(y, nested_pred, weights="quadratic"),
              "nested_confusion": metrics.confusion(y, nested_pred).tolist(), "offsets_per_outer_fold": nested_fitted,
              "offsets_all_folds": offsets.round(3).tolist(), "adopted": bool(passes and nested > plain + 0.01)}
    out = {"candidates": results, "chosen": chosen, "val_bar": args.val_bar, "score_bar": args.score_bar, "replaces_shipped": bool(passes),
           "temperature": float(temperature), "with_temperature": score(pool, temperature), "offsets": stage2,
           "members": [{"file": w, "sha256": sha256_of(w)} for w in pool["weights"]]}
    text = json.dumps(out, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    print("\n| candidate | pooled OOF score | BA | QWK | accuracy | discs | validation patients: score | BA | QWK |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in results.items():
        a, v = r["pooled"], r["validation_patients"]
        print(f"| {n} | {a['score']:.3f} | {a['balanced_accuracy']:.3f} | {a['kappa_quadratic']:.3f} | {a['accuracy']:.3f} "
              f"| {a['n_discs']} | {v['score']:.3f} | {v['balanced_accuracy']:.3f} | {v['kappa_quadratic']:.3f} |")
    print(f"\nchosen {chosen}; validation-patient score {results[chosen]['validation_patients']['score']:.3f} "
          f"(bar {args.val_bar}), pooled score {results[chosen]['pooled']['score']:.3f} (bar {args.score_bar}) -> {'replace the shipped ensemble' if passes else 'keep the shipped ensemble'}; "
          f"ensemble temperature {temperature:.4f}")
    print(f"stage 2 (temperature {temperature:.3f}): score without offsets {plain:.3f}, nested with offsets {nested:.3f} "
          f"(BA {stage2['nested_balanced_accuracy']:.3f}, QWK {stage2['nested_kappa_quadratic']:.3f}) -> "
          f"{'adopt' if stage2['adopted'] else 'not adopted'} offsets {stage2['offsets_all_folds']}")
    if args.ship and passes:
        import shutil

        lines = []
        for i, m in enumerate(out["members"]):
            dest = REPO / "Resources" / "Models" / f"pfirrmann_grading_cv{i}.pt"
            shutil.copyfile(m["file"], dest.with_name(dest.name + ".tmp"))
            dest.with_name(dest.name + ".tmp").replace(dest)
            lines.append(f'    ("Models/{dest.name}", "{m["sha256"]}"),')
        print("copied; paste into DiscAnalysisLib/grading/predict.py:\nMODEL_FILES = (\n" + "\n".join(lines)
              + f"\n)\nENSEMBLE_TEMPERATURE = {temperature!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
