"""Proxy task for the cohort classifiers: Pfirrmann >= 3 vs <= 2 from the 12 regional disc markers.

No public data set has annular-fissure or discogenic-pain labels, so the fissure/pain pipeline (random forest
on 12 regional T2 markers, 75/25 splits repeated 10 times) is exercised on a real task with public labels:
the Sudirman lumbar MRI data set with LSMA-PQR Pfirrmann grades (``../shared/data/pfirrmann_sudirman``; CC-BY-4.0;
one mid-sagittal T2w slice per patient; grades of L3-L4, L4-L5, L5-S1).

Steps, per image:

1. Disc masks. Preferred: the project's segmentation (``DiscAnalysisLib.segmentation.segment_image``) when it
   is importable and its weights load. Otherwise (**fallback, a weaker localisation**): an ellipse inscribed in
   each disc box of the data set's YOLO annotations (classes 0 degenerative disc, 1 normal disc, 4 lumbar disc
   bulge, 5 thoracic disc bulge; the three lowest boxes are L3-L4, L4-L5, L5-S1, top to bottom). The ellipse's
   semi-axes are capped at the median half-width / half-height of the image's class 0/1 boxes, so that the
   larger "disc bulge" boxes do not give bigger masks (box class and size are never used as features, but an
   uncapped bulge box would carry label information into the masks). An ellipse in an axis-aligned box ignores
   disc tilt and wedge shape: it includes endplate/bone at the ends and misses disc corners.
2. Intensity normalisation: the image is divided by its 99th percentile (8-bit PNGs with arbitrary windowing;
   no reference tissue is segmented in the fallback).
3. The 12 markers (Eur Spine J 2022;31:1992-1999, table 1): mean and SD of the whole disc and of 5 equal
   ventral-to-dorsal zones. With ``DiscAnalysisLib.markers.compute_markers`` when importable (its zones follow
   the disc's own AP axis); otherwise our minimal version: zones are 5 equal-width bands of the mask's
   horizontal extent along the image's column axis (anterior = left in these images).
4. Classifiers: random forest (100 trees), gradient boosting and logistic regression, plus references (a
   majority-class predictor, logistic regression on the whole-disc mean only, and a leakage control: a random
   forest on the mask geometry alone, area/width/height in pixels), all on the same 10 repeated group-aware
   75/25 splits by patient (``DiscAnalysisLib.classify``); test-split metrics only. For comparison, the random
   forest is also scored on random disc-level splits that ignore patients (what a group-unaware evaluation
   would report).

Usage (from the repository root)::

    python scripts/proxy_pfirrmann_classifier.py --out /tmp/proxy_pfirrmann [--data ../shared/data/pfirrmann_sudirman]

Writes markers.csv, metrics.csv / metrics.json (mean and SD over repeats), per-repeat metrics, importances,
ROC and learning-curve PNGs into --out. Nothing derived from the data is written into the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscAnalysisLib import classify  # noqa: E402

log = logging.getLogger("proxy_pfirrmann")

LEVELS_BOTTOM_UP = ("L5-S1", "L4-L5", "L3-L4")
GRADE_COLUMN = {"L5-S1": "D5", "L4-L5": "D4", "L3-L4": "D3"}
DISC_LABEL = {"L3-L4": 122, "L4-L5": 123, "L5-S1": 124}
MARKERS = ("si_mean", "si_sd", *(f"si_z{k}_{s}" for k in range(1, 6) for s in ("mean", "sd")))
DISC_BOX_CLASSES = (0, 1, 4, 5)


# ------------------------------------------------------------------------------------------ masks
def read_boxes(path: Path) -> np.ndarray:
    if not path.is_file() or path.stat().st_size == 0:
        return np.zeros((0, 5))
    return np.loadtxt(path, ndmin=2)


def disc_boxes_bottom_up(boxes: np.ndarray) -> list[np.ndarray]:
    """Disc-like boxes ordered bottom to top, merging a bulge box that overlaps a disc box."""
    d = boxes[np.isin(boxes[:, 0].astype(int), DISC_BOX_CLASSES)]
    d = d[np.argsort(-d[:, 2])]
    out: list[np.ndarray] = []
    for b in d:
        if out and abs(out[-1][2] - b[2]) < 0.5 * min(out[-1][4], b[4]):
            if int(out[-1][0]) in (4, 5) and int(b[0]) in (0, 1):
                out[-1] = b  # prefer the disc box over the overlapping bulge box
            continue
        out.append(b)
    return out


def ellipse_labelmap(shape: tuple[int, int], boxes: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Labelmap (SPINEPS disc values) with an ellipse in each of the three lowest disc boxes."""
    h, w = shape
    lab = np.zeros(shape, dtype=np.uint8)
    reasons = {}
    ordered = disc_boxes_bottom_up(boxes)
    normal = boxes[np.isin(boxes[:, 0].astype(int), (0, 1))]
    cap_w = np.median(normal[:, 3]) if len(normal) else np.inf
    cap_h = np.median(normal[:, 4]) if len(normal) else np.inf
    yy, xx = np.mgrid[0:h, 0:w]
    for i, level in enumerate(LEVELS_BOTTOM_UP):
        if i >= len(ordered):
            reasons[level] = "fewer than three disc boxes in the annotation"
            continue
        _, cx, cy, bw, bh = ordered[i]
        a = min(bw, cap_w) * w / 2.0
        b = min(bh, cap_h) * h / 2.0
        inside = ((xx + 0.5 - cx * w) / a) ** 2 + ((yy + 0.5 - cy * h) / b) ** 2 <= 1.0
        lab[inside & (lab == 0)] = DISC_LABEL[level]
    return lab, reasons


# ---------------------------------------------------------------------------------------- markers
def own_markers(img: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Whole-disc and 5-zone (equal-width bands along the column axis, zone 1 = left = ventral) mean/SD."""
    vals = img[mask]
    out = {"si_mean": float(vals.mean()), "si_sd": float(vals.std(ddof=1))}
    cols = np.nonzero(mask)[1]
    lo, hi = cols.min(), cols.max() + 1
    edges = np.linspace(lo, hi, 6)
    colgrid = np.broadcast_to(np.arange(mask.shape[1]) + 0.5, mask.shape)
    for k in range(5):
        zone = mask & (colgrid >= edges[k]) & (colgrid < edges[k + 1])
        v = img[zone]
        out[f"si_z{k + 1}_mean"] = float(v.mean()) if v.size else float("nan")
        out[f"si_z{k + 1}_sd"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return out


def try_import_markers():
    try:
        from DiscAnalysisLib.markers import compute_markers  # type: ignore[attr-defined]

        return compute_markers
    except ImportError:
        return None


def try_import_segmentation():
    try:
        from DiscAnalysisLib.segmentation import segment_image  # type: ignore[attr-defined]

        return segment_image
    except ImportError:
        return None


def segmentation_labelmap(png: Path, boxes: np.ndarray, segment_image, seg_state: dict):
    """Step 1 and 2 of the module docstring for one image: (image, normalised array, labelmap array, mask method,
    reasons per level). Also used by scripts/compare_signal_grade.py."""
    import SimpleITK as sitk

    from DiscAnalysisLib.image_io import read_image

    image = read_image(png)
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    p99 = float(np.percentile(arr, 99))
    norm = arr / p99 if p99 > 0 else arr
    reasons: dict[str, str] = {}
    lab = None
    method = "yolo_box_ellipse (fallback)"
    if segment_image is not None and not seg_state.get("failed"):
        try:
            lab = sitk.GetArrayFromImage(segment_image(image).labels)
            # The documented runs (docs/validation.md) predate the CSF the segmentation now adds (label 61);
            # it is removed so that they stay reproducible (compare_signal_grade.py adds its own CSF rule).
            lab[lab == 61] = 0
            method = "DiscAnalysisLib.segmentation"
        except Exception as exc:  # noqa: BLE001 - any failure: fall back, once, and say so
            seg_state["failed"] = f"{type(exc).__name__}: {exc}"
            log.warning("segmentation unavailable (%s); using the YOLO-box ellipse fallback", seg_state["failed"])
    if lab is None:
        lab, reasons = ellipse_labelmap(arr.shape, boxes)
    return image, norm, lab, method, reasons


def marker_rows(png: Path, image, norm: np.ndarray, lab: np.ndarray, method: str, reasons: dict, compute_markers,
                columns: tuple[str, ...] = MARKERS) -> list[dict]:
    """Step 3 for one image: one row per graded level with ``columns`` of the markers report (the first
    ``MARKERS`` must all be present for a row without a reason)."""
    import SimpleITK as sitk

    rows = []
    report = None
    marker_method = "own minimal (column bands)"
    if compute_markers is not None:
        img_n = sitk.GetImageFromArray(norm.astype(np.float32))
        img_n.CopyInformation(image)
        lab_img = sitk.GetImageFromArray(lab.astype(np.uint8))
        lab_img.CopyInformation(image)
        try:
            report = compute_markers(img_n, lab_img)
            marker_method = "DiscAnalysisLib.markers"
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: DiscAnalysisLib.markers failed (%s); own markers used", png.name, exc)
    for level in LEVELS_BOTTOM_UP:
        row = {"level": level, "mask_method": method, "marker_method": marker_method, "reason": reasons.get(level, "")}
        mask = lab == DISC_LABEL[level]
        if mask.any():
            rr, cc = np.nonzero(mask)
            row.update(mask_area_px=int(mask.sum()), mask_width_px=int(cc.max() - cc.min() + 1),
                       mask_height_px=int(rr.max() - rr.min() + 1), mask_row_px=float(rr.mean()))
        if row["reason"] or mask.sum() < 10:
            row["reason"] = row["reason"] or "disc mask empty or smaller than 10 pixels"
            rows.append(row)
            continue
        if report is not None:
            r = next((x for x in report.rows() if x.get("level") == level), {})
            vals = {m: r.get(m) for m in columns}
            if any(vals[m] is None for m in MARKERS if m in vals):
                row["reason"] = f"markers unavailable ({r.get('reason', '')})"
            elif any(v is None for v in vals.values()):
                row["marker_note"] = str(r.get("reason", ""))
            row.update({m: ("" if v is None else (float(v) if m in MARKERS else v)) for m, v in vals.items()})
        else:
            row.update(own_markers(norm, mask))
        rows.append(row)
    return rows


def markers_for_image(png: Path, boxes: np.ndarray, segment_image, compute_markers, seg_state: dict) -> list[dict]:
    image, norm, lab, method, reasons = segmentation_labelmap(png, boxes, segment_image, seg_state)
    return marker_rows(png, image, norm, lab, method, reasons, compute_markers)


def build_marker_table(data: Path, out: Path, limit: int | None) -> Path:
    grades = {}
    with open(data / "PfirrmannGrade.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            grades[int(r["Patient_ID"])] = r
    segment_image, compute_markers = try_import_segmentation(), try_import_markers()
    log.info("segmentation importable: %s; markers importable: %s", segment_image is not None, compute_markers is not None)
    seg_state: dict = {}
    pngs = sorted((data / "images").glob("*.png"))[:limit]
    rows = []
    t0 = time.perf_counter()
    for i, png in enumerate(pngs):
        # the patient number is the 7th "_"-separated field (index 6): 0000_T2_TSE_SAG_384_0002_<patient>_008_R;
        # 10 patients have two images (two series), which share the patient's grades and group
        patient = int(png.stem.split("_")[6])
        g = grades.get(patient)
        boxes = read_boxes(data / "boxes" / f"{png.stem}.txt")
        for row in markers_for_image(png, boxes, segment_image, compute_markers, seg_state):
            grade = g.get(GRADE_COLUMN[row["level"]], "") if g else ""
            if not grade:
                row["reason"] = row["reason"] or "no Pfirrmann grade"
            rows.append({
                "patient": f"P{patient:04d}", "image": png.name, **row, "pfirrmann": grade,
                "degenerated": ("grade_3_5" if grade and int(grade) >= 3 else "grade_1_2") if grade else "",
            })
        if (i + 1) % 100 == 0:
            log.info("%d / %d images (%.0f s)", i + 1, len(pngs), time.perf_counter() - t0)
    if seg_state.get("failed"):
        for r in rows:
            r["segmentation_note"] = f"segmentation failed: {seg_state['failed']}"
    path = classify.write_rows_csv(rows, out / "markers.csv")
    return path


# ------------------------------------------------------------------------------------- evaluation
def majority_summary(table: classify.MarkerTable, settings: classify.ClassifierSettings) -> dict:
    accs, bals = [], []
    for tr, te in classify.repeated_splits(table, settings):
        vals, counts = np.unique(table.labels[tr], return_counts=True)
        pred = vals[np.argmax(counts)]
        accs.append(float(np.mean(table.labels[te] == pred)))
        bals.append(0.5)
    return {"model": "majority_class", "accuracy_mean": float(np.mean(accs)), "accuracy_sd": float(np.std(accs, ddof=1)),
            "balanced_accuracy_mean": 0.5, "roc_auc_mean": 0.5}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"
    ap.add_argument("--data", default=str(default_data), help="the pfirrmann_sudirman folder (default: "
                    "$DISCANALYSIS_DATA or ../shared/data)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke test)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-markers", action="store_true", help="reuse OUT/markers.csv")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, out = Path(args.data), Path(args.out)
    if not (data / "PfirrmannGrade.csv").is_file():
        print(f"data not found: {data}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    markers_csv = out / "markers.csv"
    if not (args.reuse_markers and markers_csv.is_file()):
        markers_csv = build_marker_table(data, out, args.limit)
    t_markers = time.perf_counter() - t0

    # rows with a reason are kept in markers.csv; the table loader drops rows with missing markers
    table = classify.load_marker_table(markers_csv, "degenerated", features=MARKERS, group_column="patient",
                                       id_columns=("level",))
    results = []
    # references: the whole-disc mean alone, and a leakage control: the mask geometry alone (size of the disc
    # mask; the annotation's box type must not tell the grade through the masks)
    geometry = ("mask_area_px", "mask_width_px", "mask_height_px")
    runs = [("random_forest", MARKERS), ("gradient_boosting", MARKERS), ("logistic_regression", MARKERS),
            ("logistic_regression", ("si_mean",)), ("random_forest", geometry)]
    for model, feats in runs:
        settings = classify.ClassifierSettings(model=model, repeats=args.repeats, seed=args.seed)
        sub = table if feats == MARKERS else classify.load_marker_table(
            markers_csv, "degenerated", features=feats, group_column="patient", id_columns=("level",))
        t1 = time.perf_counter()
        ev = classify.evaluate(sub, settings)
        name = model if feats == MARKERS else f"{model}_{'si_mean_only' if feats == ('si_mean',) else 'mask_geometry_only'}"
        s = {"model": name, **{k: v for k, v in ev.summary().items() if k != "model"}, "seconds": time.perf_counter() - t1}
        results.append(s)
        classify.write_rows_csv(list(ev.per_repeat), out / f"per_repeat_{name}.csv")
        classify.write_rows_csv(ev.importance_rows(), out / f"importances_{name}.csv")
        classify.plot_roc(ev, out / f"roc_{name}.png", f"{name}: Pfirrmann >= 3 vs <= 2")
        if model == "random_forest":
            classify.plot_importances(ev, out / f"importances_{name}.png")
            lc = classify.learning_curve_data(table, settings)
            classify.plot_learning_curve(lc, out / f"learning_curve_{name}.png", "random forest, group-aware splits")
            (out / f"learning_curve_{name}.json").write_text(json.dumps(lc, indent=2))
        log.info("%s: %s", name, {k: round(v, 3) for k, v in s.items() if k.endswith("_mean")})
    results.append({**majority_summary(table, classify.ClassifierSettings(repeats=args.repeats, seed=args.seed))})
    # what ignoring the patients would report: random 75/25 splits of discs (discs of a patient on both sides)
    ungrouped = classify.MarkerTable(table.features, table.labels, table.feature_names, None, table.ids,
                                     table.label_column, None, table.n_dropped, table.source)
    ev = classify.evaluate(ungrouped, classify.ClassifierSettings(repeats=args.repeats, seed=args.seed))
    results.append({"model": "random_forest_NOT_group_aware", **{k: v for k, v in ev.summary().items() if k != "model"}})
    info = {
        "n_discs": int(table.labels.size), "n_patients": len(set(table.groups.tolist())), "n_dropped": table.n_dropped,
        "class_counts": {c: int(np.sum(table.labels == c)) for c in table.classes},
        "markers_seconds": t_markers,
    }
    with open(markers_csv, newline="") as fh:
        first = next(csv.DictReader(fh))
    info["mask_method"], info["marker_method"] = first["mask_method"], first["marker_method"]
    classify.write_rows_csv(results, out / "metrics.csv")
    (out / "metrics.json").write_text(json.dumps({"data": info, "results": results}, indent=2))
    print(json.dumps(info, indent=2))
    keys = ("accuracy", "balanced_accuracy", "roc_auc", "precision_grade_3_5", "recall_grade_3_5", "f1_grade_3_5",
            "precision_grade_1_2", "recall_grade_1_2", "f1_grade_1_2")
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in results:
        cells = []
        for k in keys:
            m, s = r.get(f"{k}_mean"), r.get(f"{k}_sd")
            cells.append("" if m is None else (f"{m:.3f} ± {s:.3f}" if s is not None else f"{m:.3f}"))
        print(f"| {r['model']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
