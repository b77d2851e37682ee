#!/usr/bin/env python
"""Evaluate the Pfirrmann grading CNN on the held-out test patients of the committed split.

    python scripts/evaluate_grading.py --data ../shared/data/pfirrmann_sudirman [--weights FILE [FILE ...]]

Reads the split from ``Resources/Models/pfirrmann_split.json`` (written by train_grading.py), grades every
test disc with test-time augmentation from its annotation box (the same crop geometry as at inference from
a labelmap), averages the probabilities of a patient's images when a patient has two, and reports balanced
accuracy, Cohen's kappa (unweighted, quadratic), Lin's CCC, macro-F1, per-grade precision/recall, the
confusion matrix and one-vs-rest AUCs of the mild/moderate/severe groups, with 95 % bootstrap intervals
over patients (2,000 resamples). Writes a markdown block (``--md``), a JSON of the numbers (``--json``)
and the confusion-matrix figure (``--figure``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscAnalysisLib.grading import metrics  # noqa: E402
from DiscAnalysisLib.grading.predict import load_model  # noqa: E402
from DiscAnalysisLib.grading.sudirman import crop_width, load_samples  # noqa: E402


def predict_split(model, samples, images, patients, tta=True):
    """One prediction per (patient, level): probabilities averaged over the patient's images."""
    keep = set(patients)
    chosen = [s for s in samples if s.patient in keep]
    probs = [model.probabilities(images[s.image_path], s.center_rc, crop_width(s), tta=tta)[0] for s in chosen]
    return metrics.mean_per_disc([(s.patient, s.level) for s in chosen], probs, [s.grade for s in chosen])


def signal_baseline(samples, images, split, subset):
    """A signal-only baseline: nucleus signal relative to the crop's bright reference (CSF), mapped to
    grades by a class-balanced multinomial logistic regression fitted on the training patients.

    Feature: mean of the normalised crop (1st percentile 0, 99th percentile - CSF/fat - 1) inside an
    ellipse of half the disc's width and a quarter of the crop's height around the disc centre, i.e. the
    nucleus-to-CSF signal ratio that Pfirrmann's signal criterion describes. Shows what the CNN adds
    over signal alone.
    """
    from sklearn.linear_model import LogisticRegression

    from DiscAnalysisLib.grading.crop import extract_crop

    n = 64
    r, c = np.mgrid[:n, :n] - (n - 1) / 2
    # disc width spans n / fov_factor (= 40) pixels; nucleus ellipse: half of that wide, 8 pixels high
    ell = (c / 10.0) ** 2 + (r / 4.0) ** 2 <= 1

    def feats(part):
        keep = set(split[part])
        out, y, keys = [], [], []
        for s in samples:
            if s.patient in keep:
                crop, _ = extract_crop(images[s.image_path], s.center_rc, crop_width(s))
                out.append([crop[ell].mean()])
                y.append(s.grade)
                keys.append((s.patient, s.level))
        return np.array(out), np.array(y), keys

    xtr, ytr, _ = feats("train")
    xte, yte, keys = feats(subset)
    clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit(xtr, ytr)
    probs = clf.predict_proba(xte)
    full = np.zeros((len(yte), 5))
    full[:, clf.classes_ - 1] = probs
    _, yy, pm = metrics.mean_per_disc(keys, full, yte)  # average a patient's images, as for the CNN
    return metrics.all_metrics(yy, pm.argmax(1) + 1, pm)


PAIRED_METRICS = ("balanced_accuracy", "accuracy", "kappa", "kappa_quadratic", "macro_f1", "group_accuracy")


def paired_comparisons(files, samples, images, patients, keys, y, probs, groups, n_boot) -> list[dict]:
    """Each other model's metrics on the same discs and the bootstrap interval of the paired differences."""
    out = []
    pred = probs.argmax(1) + 1
    for f in files:
        other = load_model() if f == "shipped" else load_model(f)
        k2, y2, p2 = predict_split(other, samples, images, patients, tta=True)
        assert k2 == keys and np.array_equal(y2, y)
        pred2 = p2.argmax(1) + 1
        m2 = metrics.all_metrics(y, pred2, p2)
        m1 = metrics.all_metrics(y, pred, probs)

        def diff(idx, pred2=pred2, p2=p2):
            a = metrics.all_metrics(y[idx], pred[idx], probs[idx])
            b = metrics.all_metrics(y[idx], pred2[idx], p2[idx])
            return {k: a[k] - b[k] for k in PAIRED_METRICS}

        ci = metrics.bootstrap_ci(groups, diff, n_boot=n_boot, seed=0)
        out.append({"weights": str(f), "metrics": m2, "confusion": metrics.confusion(y, pred2).tolist(),
                    "difference": {k: (m1[k] - m2[k], *ci[k]) for k in PAIRED_METRICS}})
    return out


def upper_levels(model, data_root: Path, patients) -> dict:
    """Predicted grade counts at L1-L2 / L2-L3 (boxed but not graded in the data set) and L3-L4, same patients.

    The 4th and 5th merged disc box from the bottom are L2-L3 and L1-L2 (images with fewer than five disc
    boxes are left out); probabilities averaged over a patient's images. Plausibility only: no reference.
    """
    from PIL import Image

    from DiscAnalysisLib.grading.sudirman import BULGE_WIDTH_FACTOR, PREFERRED_CLASSES, disc_boxes, patient_of

    keep = set(patients)
    acc: dict[tuple[int, str], list] = {}
    for png in sorted((Path(data_root) / "images").glob("*.png")):
        if patient_of(png) not in keep or not (Path(data_root) / "boxes" / f"{png.stem}.txt").is_file():
            continue
        with Image.open(png) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32)
        boxes = disc_boxes(Path(data_root) / "boxes" / f"{png.stem}.txt", arr.shape)
        if len(boxes) < 5:
            continue
        for level, (c, r, col, bw, _) in zip(("L3-L4", "L2-L3", "L1-L2"), list(reversed(boxes))[2:5], strict=True):
            width = bw * (BULGE_WIDTH_FACTOR if c not in PREFERRED_CLASSES else 1.0)
            acc.setdefault((patient_of(png), level), []).append(model.probabilities(arr, (r, col), width)[0])
    out = {}
    for level in ("L1-L2", "L2-L3", "L3-L4"):
        probs = np.array([np.mean(v, axis=0) for k, v in sorted(acc.items()) if k[1] == level])
        if len(probs):
            out[level] = {"n": int(len(probs)), "grade_counts": np.bincount(probs.argmax(1) + 1, minlength=6)[1:].tolist(),
                          "mean_confidence": float(np.mean([model.confidence(p) for p in probs]))}
    return out


def external_check(model, data_root: Path) -> list[str]:
    """Grades on the 3D lumbar T2 set of healthy 20-40-year-olds (another scanner, all five levels).

    No reference grades exist for it; in this age group most discs are expected to be mild (I-II), with
    some grade III, mostly at L4-L5 / L5-S1. A sanity check of transfer (scanner, 3D stack, L1-L3), not an
    accuracy figure.
    """
    import SimpleITK as sitk

    from DiscAnalysisLib.grading.api import GradingSettings, grade_discs
    from DiscAnalysisLib.image_io import read_image
    from DiscAnalysisLib.levels import convert_labels

    folder = data_root / "lumbar_t2_3d"
    lines = ["| case | " + " | ".join(("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")) + " |", "|---|---|---|---|---|---|"]
    for t2 in sorted(folder.glob("*_T2w.nrrd")):
        case = t2.name[: -len("_T2w.nrrd")]
        image = read_image(t2)
        lab = read_image(folder / f"{case}_discs.nrrd")
        conv = sitk.GetImageFromArray(convert_labels(sitk.GetArrayFromImage(lab).astype(int), "from_l5s1"))
        conv.CopyInformation(lab)
        res = grade_discs(image, conv, GradingSettings(), model=model)
        cells = [f"{r.grade} ({r.confidence:.2f})" if r.graded else "not graded" for r in res]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def confusion_figure(cm: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(5):
        for j in range(5):
            frac = cm[i, j] / max(cm[i].sum(), 1)
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if frac > 0.5 else "black")
    ax.set_xticks(range(5), [str(g) for g in metrics.GRADES])
    ax.set_yticks(range(5), [str(g) for g in metrics.GRADES])
    ax.set_xlabel("predicted grade")
    ax.set_ylabel("reference grade")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"))
    ap.add_argument("--weights", nargs="+", default=None,
                    help="weights file(s) to evaluate (default: the shipped, SHA-256-checked model); several = ensemble")
    ap.add_argument("--temperature", type=float, default=None,
                    help="common temperature of an ensemble given with --weights (see build_grading_ensemble.py)")
    ap.add_argument("--compare-weights", nargs="+", default=(), metavar="FILE",
                    help="other single weights files, or 'shipped' (the shipped, SHA-256-checked model or ensemble with "
                         "its temperature), scored on the same discs (with TTA): each one's metrics and the paired "
                         "patient-bootstrap difference (evaluated model minus it) of the main metrics")
    ap.add_argument("--split", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--subset", default="test", choices=("test", "val"))
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--figure", default=str(REPO / "docs" / "grading_confusion.png"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.subset == "val" and (args.weights is None or "shipped" in (args.compare_weights or [])):
        raise SystemExit("the shipped grading networks were trained on the validation patients (cross-fitting, session 4): "
                         "--subset val would score them on training data; use --subset test, or name other --weights")
    model = load_model(args.weights, temperature=args.temperature)
    split = json.loads(Path(args.split).read_text())
    samples, images = load_samples(args.data)
    patients = split[args.subset]
    keys, y, probs = predict_split(model, samples, images, patients, tta=True)
    _, y0, probs0 = predict_split(model, samples, images, patients, tta=False)
    pred = probs.argmax(1) + 1
    groups = [k[0] for k in keys]

    res = metrics.all_metrics(y, pred, probs)
    res_no_tta = metrics.all_metrics(y0, probs0.argmax(1) + 1, probs0)

    def fn(idx):
        return metrics.all_metrics(y[idx], pred[idx], probs[idx])

    ci = metrics.bootstrap_ci(groups, fn, n_boot=args.n_boot, seed=0)
    cm = metrics.confusion(y, pred)
    prf = metrics.precision_recall_f1(y, pred)
    per_level = {}
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        m = np.array([k[1] == level for k in keys])
        per_level[level] = {
            "n": int(m.sum()),
            "balanced_accuracy": metrics.balanced_accuracy(y[m], pred[m]),
            "kappa_quadratic": metrics.cohen_kappa(y[m], pred[m], weights="quadratic"),
        }
    conf = np.array([model.confidence(p) for p in probs])  # the reported confidence (calibrated when the model has a map)
    calib = {
        "mean_confidence": float(conf.mean()),
        "mean_largest_probability": float(probs.max(1).mean()),
        "calibrated": model.confidence_calibration is not None,
        "accuracy": float(np.mean(pred == y)),
        "accuracy_when_confidence_ge_0.5": float(np.mean((pred == y)[conf >= 0.5])) if np.any(conf >= 0.5) else None,
        "fraction_confidence_ge_0.5": float(np.mean(conf >= 0.5)),
    }

    baseline = signal_baseline(samples, images, split, args.subset)
    upper = upper_levels(model, args.data, patients)
    compared = paired_comparisons(args.compare_weights, samples, images, patients, keys, y, probs, groups, args.n_boot)

    out = {
        "signal_baseline": baseline,
        "subset": args.subset,
        "n_discs": int(len(y)),
        "n_patients": int(len(set(groups))),
        "weights": model.source,
        "metrics_tta": res,
        "ci95_tta": ci,
        "metrics_no_tta": res_no_tta,
        "confusion_rows_truth_cols_pred": cm.tolist(),
        "per_grade_precision_recall_f1_support": {str(g): v for g, v in prf.items()},
        "per_level": per_level,
        "calibration": calib,
        "compared_with": compared,
        "upper_levels_plausibility": upper,
    }
    text = json.dumps(out, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")

    lines = [
        f"Held-out {args.subset} split: {len(y)} discs of {len(set(groups))} patients "
        f"(grades 1-5: {np.bincount(y, minlength=6)[1:].tolist()}).",
        "",
        "| metric | CNN with TTA (95 % CI, patient bootstrap) | CNN without TTA | signal-only baseline |",
        "|---|---|---|---|",
    ]
    for k, v in res.items():
        lo, hi = ci[k]
        lines.append(f"| {k} | {v:.3f} ({lo:.3f}-{hi:.3f}) | {res_no_tta[k]:.3f} | {baseline[k]:.3f} |")
    lines += ["", "| grade | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for g, (p, r, f, n) in prf.items():
        lines.append(f"| {g} | {p:.3f} | {r:.3f} | {f:.3f} | {n} |")
    lines += ["", "Confusion matrix (rows reference grade 1-5, columns predicted 1-5):", "", "```"]
    lines += [" ".join(f"{c:4d}" for c in row) for row in cm]
    lines += ["```", "", "| level | n | balanced accuracy | quadratic kappa |", "|---|---|---|---|"]
    for level, d in per_level.items():
        lines.append(f"| {level} | {d['n']} | {d['balanced_accuracy']:.3f} | {d['kappa_quadratic']:.3f} |")
    lines += ["", f"Confidence ({'calibrated' if calib['calibrated'] else 'largest probability'}): mean "
              f"{calib['mean_confidence']:.3f} (largest probability {calib['mean_largest_probability']:.3f}) vs accuracy {calib['accuracy']:.3f}; "
              f"{calib['fraction_confidence_ge_0.5']:.0%} of discs have confidence >= 0.5, accuracy among them "
              f"{calib['accuracy_when_confidence_ge_0.5']:.3f}."]
    lines += ["", "Upper levels (boxed, not graded; predicted grade counts 1-5, mean confidence): " + "; ".join(
        f"{lv} {d['grade_counts']} ({d['mean_confidence']:.2f}, n {d['n']})" for lv, d in upper.items())]
    for c in compared:
        lines += ["", f"Paired with `{c['weights']}` on the same {len(y)} discs (this model minus that one; 95 % "
                  "patient-bootstrap interval of the difference):", "",
                  "| metric | this model | that model | difference (95 % CI) |", "|---|---|---|---|"]
        for k, d in c["difference"].items():
            lines.append(f"| {k} | {res[k]:.3f} | {c['metrics'][k]:.3f} | {d[0]:+.3f} ({d[1]:+.3f} to {d[2]:+.3f}) |")
        lines += ["", "Its confusion matrix: " + " ".join(str(r) for r in c["confusion"])]
    ext_root = Path(args.data).parent
    if (ext_root / "lumbar_t2_3d").is_dir():
        lines += ["", "Other scanner (lumbar_t2_3d, healthy 20-40 y, 3D stack, all five levels; grade (confidence)):", ""]
        lines += external_check(model, ext_root)
    md = "\n".join(lines)
    print(md)
    if args.md:
        Path(args.md).write_text(md + "\n")
    if args.figure:
        confusion_figure(cm, Path(args.figure), f"Pfirrmann CNN, held-out {args.subset} ({len(y)} discs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
