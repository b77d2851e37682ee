#!/usr/bin/env python
"""Pfirrmann CNN vs the markers' signal-based grade (ΔSI), end to end, on the held-out grading test patients.

    python scripts/compare_signal_grade.py --data ../shared/data/pfirrmann_sudirman --out /tmp/signal_grade

For every image of the test patients of ``Resources/Models/pfirrmann_split.json`` (the CNN's held-out split):

1. the project's own segmentation -> disc labelmap (``segmentation_labelmap`` of
   ``scripts/proxy_pfirrmann_classifier.py``, the same code and image normalisation the cohort-classifier
   proxy uses on these images);
2. a CSF reference region (label 61, below), because ΔSI is scaled by the CSF signal and the segmentation
   labels discs and vertebral bodies only;
3. ``DiscAnalysisLib.markers.compute_markers`` -> ΔSI -> ``signal_grade`` (``marker_rows`` of the proxy
   script), i.e. the grade whose BianqueNet ΔSI distribution (``Resources/NormalRanges/delta_si_by_grade.csv``)
   is nearest in SDs;
4. the CNN twice: from the annotation boxes (as ``evaluate_grading.py``) and end to end from the same
   segmentation labelmap (``grade_discs``, with TTA).

A patient with two images gets the mean ΔSI (then one signal grade) and the mean CNN probabilities. The
metrics (those of ``evaluate_grading.py``) are computed on the discs every method could grade, and the
script says how many each could grade and why not.

CSF reference (evaluation only, defined before looking at any result and not tuned): in every image row that
holds a segmented vertebral body or disc, a window from 1 mm to 10 mm dorsal of the most dorsal labelled pixel
(the spinal canal behind the vertebral column; in this data set dorsal = increasing column), unlabelled pixels
only; CSF = the window pixels brighter than the Otsu threshold of all window pixels of the image. Pixel size:
the segmentation's assumption for bitmaps (280 mm field of view). Without it (``--no-csf``) the markers give
no ΔSI at all on these images: "delta_si: no CSF (label 61) as reference tissue".

Writes ``discs.csv`` (one row per test disc and method inputs), ``metrics.json`` and ``table.md`` into --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscAnalysisLib import levels  # noqa: E402
from DiscAnalysisLib.grading import metrics  # noqa: E402

log = logging.getLogger("compare_signal_grade")

GRADED_LEVELS = ("L3-L4", "L4-L5", "L5-S1")
CSF_GAP_MM = 1.0
CSF_DEPTH_MM = 10.0


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def add_csf_reference(lab: np.ndarray, img: np.ndarray, pixel_mm: float, gap_mm: float = CSF_GAP_MM,
                      depth_mm: float = CSF_DEPTH_MM) -> tuple[np.ndarray, int]:
    """``lab`` with label 61 on the bright pixels of the canal window dorsal of the vertebral column (see the
    module docstring); returns the new labelmap and the number of CSF pixels (0: none found).

    The rule became the product's (``DiscAnalysisLib.segmentation.csf``, which the segmentation now applies
    itself, with three Otsu classes); this comparison keeps the two-class version its numbers were made with.
    """
    from DiscAnalysisLib.segmentation.csf import CsfSettings, label_csf

    out, n = label_csf(lab[None], img[None], (1.0, pixel_mm, pixel_mm),
                       CsfSettings(gap_mm=gap_mm, depth_mm=depth_mm, classes=2))
    return out[0], n


def group_auc_from_delta_si(y: np.ndarray, dsi: np.ndarray, grade_means: dict[int, float]) -> dict[str, float]:
    """One-vs-rest AUCs of the 3 groups from ΔSI itself (a continuous score; the grade alone has ties):
    mild = high ΔSI, severe = low ΔSI, moderate = ΔSI close to the grade-3 mean."""
    g = np.array([metrics.group_of(v) for v in y])
    return {
        "auc_mild": metrics.roc_auc(g == "mild", dsi),
        "auc_moderate": metrics.roc_auc(g == "moderate", -np.abs(dsi - grade_means[3])),
        "auc_severe": metrics.roc_auc(g == "severe", -dsi),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"))
    ap.add_argument("--split", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--subset", default="test", choices=("test", "val"))
    ap.add_argument("--weights", nargs="*", default=None,
                    help="CNN weights file(s) (default: the shipped, SHA-256-checked model(s))")
    ap.add_argument("--temperature", type=float, default=None, help="common temperature of an ensemble given with --weights")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-csf", action="store_true", help="no CSF reference region (markers as the product runs them)")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refit-on", default="train", choices=("train", "none"),
                    help="also map ΔSI to grades with a class-balanced logistic regression fitted on these patients")
    ap.add_argument("--cache", default=None,
                    help="folder for the segmentation labelmaps (reused when present: re-runs only the markers and CNN)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import SimpleITK as sitk
    import torch

    from DiscAnalysisLib.grading.api import GradingSettings, grade_discs
    from DiscAnalysisLib.grading.predict import load_model
    from DiscAnalysisLib.grading.sudirman import disc_boxes, load_samples
    from DiscAnalysisLib.markers import compute_markers
    from DiscAnalysisLib.markers.normal_ranges import grade_table, signal_grade
    from DiscAnalysisLib.segmentation import segment_image
    from DiscAnalysisLib.segmentation.preprocess import ASSUMED_FOV_MM

    torch.set_num_threads(args.threads)
    proxy, evaluate = _script("proxy_pfirrmann_classifier"), _script("evaluate_grading")
    model = load_model(args.weights, temperature=args.temperature)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = json.loads(Path(args.split).read_text())
    patients = set(split[args.subset])
    data = Path(args.data)
    all_samples, images = load_samples(data)
    samples = [s for s in all_samples if s.patient in patients]
    truth = {(s.patient, s.level): s.grade for s in samples}
    pngs = sorted({s.image_path for s in samples})[: args.limit]

    # the CNN from the annotation boxes (evaluate_grading.py), per (patient, level)
    keep_pat = {int(Path(p).stem.split("_")[6]) for p in pngs}
    keys_box, _, probs_box = evaluate.predict_split(model, [s for s in samples if s.image_path in set(pngs)], images, keep_pat)
    box = dict(zip(keys_box, probs_box, strict=True))

    seg_state: dict = {}

    def run_images(image_paths, truth, with_cnn):
        """Segmentation -> CSF -> markers (-> CNN) for each image; rows and per-(patient, level) values."""
        rows, per_key = [], {}
        t0 = time.perf_counter()
        for i, png in enumerate(map(Path, image_paths)):
            pid = int(png.stem.split("_")[6])
            boxes = proxy.read_boxes(data / "boxes" / f"{png.stem}.txt")
            seg = segment_image if args.cache is None else _cached(segment_image, Path(args.cache) / f"{png.stem}.nrrd")
            image, norm, lab, method, reasons = proxy.segmentation_labelmap(png, boxes, seg, seg_state)
            if method != "DiscAnalysisLib.segmentation":
                raise SystemExit(f"the project's segmentation did not run ({seg_state.get('failed')}); not end to end")
            n_csf = 0
            lab_m = lab
            if not args.no_csf:
                lab_m, n_csf = add_csf_reference(lab, norm, ASSUMED_FOV_MM / lab.shape[1])
            mrows = {r["level"]: r for r in proxy.marker_rows(png, image, norm, lab_m, method, reasons, compute_markers,
                                                              columns=(*proxy.MARKERS, "delta_si", "signal_grade"))}
            cnn = {}
            if with_cnn:
                lab_img = sitk.GetImageFromArray(lab.astype(np.uint8))
                lab_img.CopyInformation(image)
                cnn = {r.level: r for r in grade_discs(image, lab_img, GradingSettings(), model=model)}
            ann = disc_boxes(data / "boxes" / f"{png.stem}.txt", lab.shape)[-3:]
            for level, (_, br, bc, bw, bh) in zip(reversed(GRADED_LEVELS), reversed(ann), strict=True):
                m = mrows.get(level, {})
                mask = lab == levels.label_of(level)
                if mask.any():
                    rr, cc = np.nonzero(mask)
                    in_box = bool(abs(rr.mean() - br) <= bh / 2 and abs(cc.mean() - bc) <= bw / 2)
                else:
                    in_box = None
                dsi = m.get("delta_si", "")
                c = cnn.get(level)
                row = {
                    "patient": pid, "image": png.name, "level": level, "reference_grade": truth[(pid, level)],
                    "segmented": bool(mask.any()), "segmented_disc_in_annotation_box": in_box, "csf_pixels": n_csf,
                    "delta_si": dsi, "signal_grade": m.get("signal_grade", ""),
                    "signal_reason": (m.get("reason") or m.get("marker_note", "")) if dsi in ("", None) else "",
                }
                if with_cnn:
                    row["cnn_seg_grade"] = c.grade if c is not None and c.graded else ""
                    row["cnn_seg_reason"] = "" if c is not None and c.graded else (c.reason if c is not None else "no row")
                    if c is not None and c.graded:
                        row.update({f"cnn_seg_p{g}": float(p) for g, p in zip(metrics.GRADES, c.probabilities, strict=True)})
                rows.append(row)
                d = per_key.setdefault((pid, level), {"dsi": [], "seg": [], "in_box": []})
                if dsi not in ("", None):
                    d["dsi"].append(float(dsi))
                if c is not None and c.graded:
                    d["seg"].append(np.asarray(c.probabilities, float))
                d["in_box"].append(in_box)
            if (i + 1) % 20 == 0 or i + 1 == len(image_paths):
                log.info("%d / %d images (%.0f s)", i + 1, len(image_paths), time.perf_counter() - t0)
        return rows, per_key

    t0 = time.perf_counter()
    rows, per_key = run_images(pngs, truth, with_cnn=True)

    from DiscAnalysisLib.image_io import write_csv

    write_csv(rows, out / "discs.csv")

    keys = sorted(per_key)
    means = {g: m for g, m, _ in grade_table()}
    n_all = len(keys)
    has_sig = [k for k in keys if per_key[k]["dsi"]]
    has_seg = [k for k in keys if per_key[k]["seg"]]
    common = [k for k in keys if per_key[k]["dsi"] and per_key[k]["seg"] and k in box]
    y = np.array([truth[k] for k in common])
    dsi = np.array([np.mean(per_key[k]["dsi"]) for k in common])
    sig_pred = np.array([signal_grade(v) for v in dsi])
    sig_probs = np.eye(5)[sig_pred - 1]
    seg_probs = np.array([np.mean(per_key[k]["seg"], axis=0) for k in common])
    box_probs = np.array([box[k] for k in common])
    res = {
        "cnn_boxes": metrics.all_metrics(y, box_probs.argmax(1) + 1, box_probs),
        "cnn_segmentation": metrics.all_metrics(y, seg_probs.argmax(1) + 1, seg_probs),
        "signal_grade": {**metrics.all_metrics(y, sig_pred, sig_probs), **group_auc_from_delta_si(y, dsi, means)},
    }
    preds = {"cnn_boxes": box_probs.argmax(1) + 1, "cnn_segmentation": seg_probs.argmax(1) + 1, "signal_grade": sig_pred}
    refit_info = None
    if args.refit_on != "none":
        # ΔSI -> grade recalibrated on this data set (what the ΔSI feature can do once its scale is learnt here):
        # class-balanced multinomial logistic regression on ΔSI, fitted on the training patients only
        from sklearn.linear_model import LogisticRegression

        fit_pat = set(split[args.refit_on])
        fit_truth = {(q.patient, q.level): q.grade for q in all_samples if q.patient in fit_pat}
        fit_pngs = sorted({q.image_path for q in all_samples if q.patient in fit_pat})[: args.limit]
        _, fit_key = run_images(fit_pngs, fit_truth, with_cnn=False)
        fk = [k for k in sorted(fit_key) if fit_key[k]["dsi"]]
        xtr = np.array([[np.mean(fit_key[k]["dsi"])] for k in fk])
        ytr = np.array([fit_truth[k] for k in fk])
        clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(xtr / 100.0, ytr)
        refit_probs = np.zeros((len(y), 5))
        refit_probs[:, clf.classes_ - 1] = clf.predict_proba(dsi[:, None] / 100.0)
        preds["signal_refit"] = refit_probs.argmax(1) + 1
        res["signal_refit"] = metrics.all_metrics(y, preds["signal_refit"], refit_probs)
        refit_info = {"patients": args.refit_on, "n_discs": len(fk), "n_discs_reference": len(fit_key),
                      "grades": np.bincount(ytr, minlength=6)[1:].tolist(),
                      "grade_boundaries_delta_si": _boundaries(clf)}
    groups = [k[0] for k in common]
    ci = {}
    for name, pr in preds.items():
        def fn(idx, pr=pr):
            return {"balanced_accuracy": metrics.balanced_accuracy(y[idx], pr[idx]),
                    "kappa_quadratic": metrics.cohen_kappa(y[idx], pr[idx], weights="quadratic")}
        ci[name] = metrics.bootstrap_ci(groups, fn, n_boot=2000, seed=0)
    in_box = [k for k in keys if any(per_key[k]["in_box"])]
    agree = np.array([all(per_key[k]["in_box"]) for k in common])
    level_agrees = {n: {"n": int(agree.sum()), "balanced_accuracy": metrics.balanced_accuracy(y[agree], p[agree]),
                        "kappa_quadratic": metrics.cohen_kappa(y[agree], p[agree], weights="quadratic")}
                    for n, p in preds.items()}
    # the segmentation network used the boxes (never the grades) of patients whose number mod 5 is in
    # SUDIRMAN_TRAIN_MOD as weak labels: the patients it never saw, separately
    seg_mod = _script("segmentation_data").SUDIRMAN_TRAIN_MOD
    unseen = np.array([k[0] % 5 not in seg_mod for k in common])
    seg_unseen = {n: {"n": int(unseen.sum()), "n_patients": len({k[0] for k, u in zip(common, unseen, strict=True) if u}),
                      "balanced_accuracy": metrics.balanced_accuracy(y[unseen], p[unseen]),
                      "kappa_quadratic": metrics.cohen_kappa(y[unseen], p[unseen], weights="quadratic")}
                  for n, p in preds.items()}
    summary = {
        "subset": args.subset, "csf_reference": not args.no_csf, "weights": model.source,
        "n_discs_reference": n_all, "n_patients": len({k[0] for k in keys}),
        "n_graded_cnn_boxes": sum(k in box for k in keys), "n_graded_cnn_segmentation": len(has_seg),
        "n_graded_signal": len(has_sig), "n_common": len(common),
        "n_segmented_disc_in_annotation_box": len(in_box),
        "grades_common": np.bincount(y, minlength=6)[1:].tolist() if len(y) else [],
        "signal_reasons": sorted({r["signal_reason"] for r in rows if r["signal_reason"]}),
        "cnn_seg_reasons": sorted({r["cnn_seg_reason"] for r in rows if r["cnn_seg_reason"]}),
        "metrics": res, "ci95": ci, "signal_refit": refit_info, "where_segmented_level_agrees_with_box": level_agrees,
        "patients_unseen_by_segmentation_training": seg_unseen,
        "confusion_rows_truth_cols_pred": {n: metrics.confusion(y, p).tolist() for n, p in preds.items()},
        "per_level": {n: {lv: {"n": int(sum(k[1] == lv for k in common)),
                               "balanced_accuracy": metrics.balanced_accuracy(*_sel(y, p, common, lv)),
                               "kappa_quadratic": metrics.cohen_kappa(*_sel(y, p, common, lv), weights="quadratic")}
                          for lv in GRADED_LEVELS} for n, p in preds.items()},
        "delta_si_by_reference_grade": {int(g): [float(np.median(dsi[y == g])), int(np.sum(y == g))]
                                         for g in metrics.GRADES if np.any(y == g)},
        "seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = table_md(summary)
    (out / "table.md").write_text(md + "\n")
    print(md)
    return 0


def _cached(segment_image, path: Path):
    """segment_image that stores its labelmap at ``path`` and reads it back when it is there."""
    import SimpleITK as sitk

    def run(image):
        if path.is_file():
            return SimpleNamespace(labels=sitk.ReadImage(str(path)))
        res = segment_image(image)
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(res.labels, str(path), True)
        return res

    return run


def _boundaries(clf) -> list[str]:
    """Predicted grade of the refitted logistic regression along ΔSI 0-200: "grade g from ΔSI x" steps."""
    grid = np.linspace(0, 200, 2001)
    pred = clf.classes_[clf.predict_proba(grid[:, None] / 100.0).argmax(1)]
    return [f"grade {int(pred[0])} from 0"] + [f"grade {int(pred[i + 1])} from {grid[i + 1]:.1f}"
                                               for i in np.nonzero(np.diff(pred))[0]]


def _sel(y, p, keys, level):
    m = np.array([k[1] == level for k in keys])
    return y[m], p[m]


def table_md(s: dict) -> str:
    titles = {"cnn_boxes": "CNN, annotation boxes", "cnn_segmentation": "CNN, own segmentation",
              "signal_grade": "signal grade (ΔSI, BianqueNet table), own segmentation",
              "signal_refit": "ΔSI refitted on training patients, own segmentation"}
    names = tuple(n for n in titles if n in s["metrics"])
    head = tuple(titles[n] for n in names)
    lines = [
        f"{s['subset']} split: {s['n_discs_reference']} graded discs of {s['n_patients']} patients. Graded: CNN from boxes "
        f"{s['n_graded_cnn_boxes']}, CNN from the segmentation {s['n_graded_cnn_segmentation']}, signal grade "
        f"{s['n_graded_signal']}; compared on the {s['n_common']} discs graded by all three (grades 1-5: "
        f"{s['grades_common']}). Segmented disc of the level inside the annotation box of that level: "
        f"{s['n_segmented_disc_in_annotation_box']} of {s['n_discs_reference']}.",
        "",
        "| metric | " + " | ".join(head) + " |",
        "|---|" + "---|" * len(names),
    ]
    for k in s["metrics"]["cnn_boxes"]:
        cells = []
        for n in names:
            v = s["metrics"][n][k]
            if k in s["ci95"][n]:
                lo, hi = s["ci95"][n][k]
                cells.append(f"{v:.3f} ({lo:.3f}-{hi:.3f})")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for n, h in zip(names, head, strict=True):
        lines += ["", f"Confusion, {h} (rows reference 1-5, columns predicted 1-5):", "", "```"]
        lines += [" ".join(f"{c:4d}" for c in row) for row in s["confusion_rows_truth_cols_pred"][n]]
        lines += ["```"]
    lines += ["", "| level | n | " + " | ".join(f"{h}: BA / QWK" for h in head) + " |", "|---|---|" + "---|" * len(names)]
    for lv in GRADED_LEVELS:
        cells = [f"{s['per_level'][n][lv]['balanced_accuracy']:.3f} / {s['per_level'][n][lv]['kappa_quadratic']:.3f}" for n in names]
        lines.append(f"| {lv} | {s['per_level']['cnn_boxes'][lv]['n']} | " + " | ".join(cells) + " |")
    la = s["where_segmented_level_agrees_with_box"]
    lines += ["", f"Only the {la['cnn_boxes']['n']} discs whose segmented level lies in the annotation box of that level "
              "(BA / QWK): " + "; ".join(f"{titles[n]} {la[n]['balanced_accuracy']:.3f} / {la[n]['kappa_quadratic']:.3f}"
                                         for n in names)]
    su = s["patients_unseen_by_segmentation_training"]
    lines += ["", f"Only the {su['cnn_boxes']['n']} discs of the {su['cnn_boxes']['n_patients']} patients whose boxes the "
              "segmentation network never saw in training (BA / QWK): " + "; ".join(
                  f"{titles[n]} {su[n]['balanced_accuracy']:.3f} / {su[n]['kappa_quadratic']:.3f}" for n in names)]
    if s.get("signal_refit"):
        r = s["signal_refit"]
        lines += ["", f"ΔSI refit: {r['n_discs']} of {r['n_discs_reference']} discs of the {r['patients']} patients (grades "
                  f"{r['grades']}); predicted: {', '.join(r['grade_boundaries_delta_si'])} (BianqueNet grade means "
                  "121.7, 94.9, 72.5, 45.3, 20.7)."]
    lines += ["", "Median ΔSI by reference grade (n): " + ", ".join(
        f"{g}: {v[0]:.1f} ({v[1]})" for g, v in s["delta_si_by_reference_grade"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
