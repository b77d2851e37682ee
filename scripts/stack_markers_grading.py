#!/usr/bin/env python
"""Do the markers (ΔSI, DHI) add to the grading CNN? Stacking experiment, decided out of fold.

    python scripts/stack_markers_grading.py runs4/e90 runs6/r96 --cache runs7/seg_cache --out runs7/stack

For every non-test image of ``pfirrmann_sudirman``: the product path ``read_image`` -> ``segment_image``
(shipped weights, CSF label 61 as the product adds it) -> ``compute_markers``. Per (patient, level) the ΔSI and
DHI of the segmented disc whose centroid lies in that level's annotation box (the disc the CNN's crop is centred
on); a patient's images averaged. The CNN input is the out-of-fold pair probabilities of the two cross-fitted
recipes (as ``pair_crossfit_grading.py``). A multinomial logistic regression is fitted on four folds' discs and
predicts the fifth (nested over the same folds):

* S0 (control): the CNN's log-probabilities only;
* S (information only): the same plus ΔSI and DHI (missing values: the fitting folds' median plus a missing indicator);
* S' (the candidate): the CNN's log-probabilities kept as they are (coefficient 1, no biases) plus a learnt
  per-grade weight on the standardised ΔSI and DHI (``offset_stack``). Refitting the CNN's part (S0, S) moves the
  class trade-off the CNN was trained for and loses 0.035-0.08 by itself, so only S' asks what the markers add.

Prints the pooled out-of-fold score ((balanced accuracy + quadratic kappa) / 2) of the pair, S0 and S, and
writes the per-disc marker table to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from crossfit_grading import load_folds, selection_score  # noqa: E402
from pair_crossfit_grading import paired_oof  # noqa: E402

from DiscAnalysisLib import levels  # noqa: E402
from DiscAnalysisLib.grading import metrics  # noqa: E402

log = logging.getLogger("stack_markers_grading")
GRADED = ("L3-L4", "L4-L5", "L5-S1")
FEATURES = ("delta_si", "dhi")


def markers_per_disc(data: Path, patients: set[int], cache: Path | None, limit: int | None = None) -> dict:
    """(patient, level) -> {feature: [values of the patient's images]} for the graded levels."""
    import SimpleITK as sitk

    from DiscAnalysisLib.grading.sudirman import disc_boxes, patient_of
    from DiscAnalysisLib.image_io import read_image
    from DiscAnalysisLib.markers import compute_markers
    from DiscAnalysisLib.segmentation import segment_image

    pngs = sorted(p for p in (data / "images").glob("*.png") if patient_of(p) in patients)[:limit]
    out: dict = {}
    t0 = time.perf_counter()
    for i, png in enumerate(pngs):
        image = read_image(png)
        cached = cache / f"{png.stem}.nrrd" if cache else None
        if cached is not None and cached.is_file():
            labels = sitk.ReadImage(str(cached))
        else:
            labels = segment_image(image).labels
            if cached is not None:
                cache.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(labels, str(cached.with_suffix(".tmp.nrrd")))
                cached.with_suffix(".tmp.nrrd").rename(cached)
        lab = sitk.GetArrayFromImage(labels)
        lab2 = lab[0] if lab.ndim == 3 else lab
        try:
            report = compute_markers(image, labels)
            by_level = {m.level: m for m in report.levels}
        except Exception as exc:  # noqa: BLE001 - experiment: a failed image gives missing markers, said in the log
            log.warning("%s: markers failed (%s)", png.name, exc)
            by_level = {}
        boxes = disc_boxes(data / "boxes" / f"{png.stem}.txt", lab2.shape)[-3:]
        pid = patient_of(png)
        for level, (_, br, bc, bw, bh) in zip(reversed(GRADED), reversed(boxes), strict=True):
            vals = {f: None for f in FEATURES}
            for name, lbl in levels.DISC_LABELS.items():
                mask = lab2 == lbl
                if not mask.any():
                    continue
                rr, cc = np.nonzero(mask)
                if abs(rr.mean() - br) <= bh / 2 and abs(cc.mean() - bc) <= bw / 2 and name in by_level:
                    m = by_level[name]
                    vals = {f: getattr(m, f) for f in FEATURES}
                    break
            d = out.setdefault((pid, level), {f: [] for f in FEATURES})
            for f in FEATURES:
                if vals[f] is not None and np.isfinite(vals[f]):
                    d[f].append(float(vals[f]))
        if (i + 1) % 50 == 0 or i + 1 == len(pngs):
            log.info("%d / %d images (%.0f s)", i + 1, len(pngs), time.perf_counter() - t0)
    return out


def design(logp: np.ndarray, feats: np.ndarray | None, train: np.ndarray) -> np.ndarray:
    """Stacker inputs: log-probabilities, then each feature (missing -> training median) and its missing flag."""
    cols = [logp]
    if feats is not None:
        for j in range(feats.shape[1]):
            v = feats[:, j]
            miss = ~np.isfinite(v)
            med = np.nanmedian(v[train]) if np.any(~miss[train]) else 0.0
            cols += [np.where(miss, med, v)[:, None], miss[:, None].astype(float)]
    return np.hstack(cols)


def nested_stack(logp: np.ndarray, feats: np.ndarray | None, y: np.ndarray, folds: np.ndarray, c: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probs = np.zeros((len(y), 5))
    for f in np.unique(folds):
        train = folds != f
        x = design(logp, feats, train)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))
        clf.fit(x[train], y[train])
        p = np.zeros((int((~train).sum()), 5))
        p[:, clf.classes_ - 1] = clf.predict_proba(x[~train])
        probs[~train] = p
    return probs


def offset_stack(logp: np.ndarray, feats: np.ndarray, y: np.ndarray, folds: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """S': logit_g = log p_g + w_g . z, nested over the folds. The CNN's log-probabilities keep coefficient 1 and
    there are no biases; z = features standardised on the fitting folds (missing -> 0, the fitting folds' mean),
    so the CNN's average class trade-off stays; W fitted by class-balanced multinomial log-loss + l2 ||W||^2."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    probs = np.zeros((len(y), 5))
    k = feats.shape[1]
    for f in np.unique(folds):
        train = folds != f
        mu, sd = np.nanmean(feats[train], 0), np.nanstd(feats[train], 0)
        z = np.nan_to_num((feats - mu) / sd, nan=0.0)
        counts = np.bincount(y[train], minlength=6)[1:]
        w_cls = (len(y[train]) / (5 * counts))[y[train] - 1]
        onehot = np.eye(5)[y[train] - 1]

        def loss(w, z=z, train=train, w_cls=w_cls, onehot=onehot):
            wm = w.reshape(5, k)
            lp = log_softmax(logp[train] + z[train] @ wm.T, axis=1)
            nll = -np.sum(w_cls * np.sum(onehot * lp, 1)) / np.sum(w_cls)
            p = np.exp(lp)
            grad_logit = (p - onehot) * w_cls[:, None] / np.sum(w_cls)
            return nll + l2 * np.sum(w ** 2), (grad_logit.T @ z[train]).ravel() + 2 * l2 * w

        res = minimize(loss, np.zeros(5 * k), jac=True, method="L-BFGS-B")
        wm = res.x.reshape(5, k)
        probs[~train] = np.exp(log_softmax(logp[~train] + z[~train] @ wm.T, axis=1))
        log.info("fold %d: W (grades x features %s) = %s", f, FEATURES, np.round(wm, 3).tolist())
    return probs


def row(name: str, probs: np.ndarray, y: np.ndarray) -> dict:
    pred = probs.argmax(1) + 1
    conf = metrics.confusion(y, pred)
    r = {"name": name, "score": selection_score(y, pred), "balanced_accuracy": metrics.balanced_accuracy(y, pred),
         "kappa_quadratic": metrics.cohen_kappa(y, pred, weights="quadratic"), "accuracy": float(np.mean(pred == y)),
         "recall": (np.diag(conf) / conf.sum(1)).round(3).tolist()}
    print(f"| {name} | {r['score']:.3f} | {r['balanced_accuracy']:.3f} | {r['kappa_quadratic']:.3f} | "
          f"{r['accuracy']:.3f} | {' '.join(f'{x:.2f}' for x in r['recall'])} |")
    return r


def main(argv=None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs=2, type=Path)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman")
    ap.add_argument("--cache", type=Path, default=None, help="folder for the segmentation labelmaps")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    keys, y, folds, a, b = paired_oof([load_folds(d, "final") for d in args.dirs])
    pair = (a + b) / 2

    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "markers_per_disc.json"
    if table.is_file():
        raw = {tuple(json.loads(k)): v for k, v in json.loads(table.read_text()).items()}
    else:
        raw = markers_per_disc(args.data, {k[0] for k in keys}, args.cache, args.limit)
        tmp = table.with_suffix(".tmp")
        tmp.write_text(json.dumps({json.dumps(list(k)): v for k, v in raw.items()}))
        tmp.rename(table)
    feats = np.array([[np.mean(raw[k][f]) if k in raw and raw[k][f] else np.nan for f in FEATURES] for k in keys])
    print(f"discs {len(y)}; missing: " + ", ".join(f"{f} {int(np.isnan(feats[:, j]).sum())}" for j, f in enumerate(FEATURES)))
    for g in metrics.GRADES:
        sel = y == g
        print(f"grade {g}: n {sel.sum()}, median " + ", ".join(f"{f} {np.nanmedian(feats[sel, j]):.3f}" for j, f in enumerate(FEATURES)))
    logp = np.log(np.clip(pair, 1e-9, None))
    print(f"| out of fold, {len(y)} discs | score | BA | QWK | accuracy | recall grade 1-5 |")
    print("|---|---|---|---|---|---|")
    res = [row("pair (shipped ensemble's OOF estimate)", pair, y),
           row("S0: stacker on the CNN only", nested_stack(logp, None, y, folds), y),
           row("S: stacker on the CNN + ΔSI + DHI (information only)", nested_stack(logp, feats, y, folds), y),
           row("S': CNN log-probabilities + W . (ΔSI, DHI) (candidate)", offset_stack(logp, feats, y, folds), y)]
    (args.out / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
