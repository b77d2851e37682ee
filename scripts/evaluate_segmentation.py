#!/usr/bin/env python
"""Evaluate the disc segmentation on data the evaluated weights were not trained on.

    python scripts/evaluate_segmentation.py --folds runs --out runs/eval     # cross-validation + external checks

1. Leave-one-subject-out over lumbar_t2_3d: subject S is segmented with ``<folds>/fold<S>/weights.pt``
   (trained without S, see train_segmentation.py). Per level (L1-L2..L5-S1): Dice, mean symmetric surface
   distance (mm), % volume difference ((pred - ref) / ref), sensitivity, precision - the measures of the
   voxel-based relaxometry paper's Table 2 - and whether every level was named correctly.
2. radiospineomics (never trained on): L1-L2 disc Dice and level name on its 2 annotated slices.
3. pfirrmann_sudirman localisation check on the 204 held-out patients (the other 311 serve as weak box
   labels in training, split by patient number): disc boxes ordered top to bottom, the lowest five are
   L1-L2..L5-S1; a box passes when exactly one predicted lumbar disc has its centroid
   inside it and that disc carries the box's level.

Weights for 2 and 3: ``--weights`` (default: the shipped ones). Results: printed, and JSON/Markdown in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import segmentation_data as sd  # noqa: E402

from DiscAnalysisLib import levels as lv  # noqa: E402
from DiscAnalysisLib.image_io import read_image  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402
from DiscAnalysisLib.segmentation import SegmentationSettings, network, segment_image  # noqa: E402


# ------------------------------------------------------------------------------------------- metrics
def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, border_value=0)


def mean_surface_distance_mm(a: np.ndarray, b: np.ndarray, spacing_zyx) -> float:
    """Symmetric mean surface distance (mm) between two boolean masks (numpy z, y, x order spacing)."""
    if not a.any() or not b.any():
        return float("nan")
    sa, sb = surface(a), surface(b)
    da = ndi.distance_transform_edt(~sb, sampling=spacing_zyx)[sa]
    db = ndi.distance_transform_edt(~sa, sampling=spacing_zyx)[sb]
    return float((da.sum() + db.sum()) / (len(da) + len(db)))


def level_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx) -> dict:
    tp = int((pred & ref).sum())
    p, r = int(pred.sum()), int(ref.sum())
    return {
        "dice": 2 * tp / (p + r) if p + r else float("nan"),
        "msd_mm": mean_surface_distance_mm(pred, ref, spacing_zyx),
        "volume_diff_pct": 100.0 * (p - r) / r if r else float("nan"),
        "sensitivity": tp / r if r else float("nan"),
        "precision": tp / p if p else float("nan"),
    }


def named_correctly(pred_labels: np.ndarray, ref: np.ndarray, name: str) -> bool:
    """The predicted disc label covering most of the reference disc is the reference level."""
    vals = pred_labels[ref]
    vals = vals[(vals >= 120) & (vals <= 124)]
    if vals.size == 0:
        return False
    return int(np.bincount(vals).argmax()) == lv.DISC_LABELS[name]


# --------------------------------------------------------------------------------------- evaluations
def score_subject(img: sitk.Image, lab: sitk.Image, weights: Path):
    """Segment a lumbar_t2_3d image with the given fold weights and score each disc level against its reference
    labels (``lab``, 1 = L5-S1 ... 5 = L1-L2): (segmentation result, per-level metric rows, seconds)."""
    settings = SegmentationSettings(weights_path=str(weights), weights_sha256=sha256_of(weights))
    t0 = time.perf_counter()
    res = segment_image(img, settings)
    secs = time.perf_counter() - t0
    pred = sitk.GetArrayFromImage(res.labels)
    ref_l = lv.convert_labels(sitk.GetArrayFromImage(lab), "from_l5s1")
    sp = tuple(reversed(img.GetSpacing()))
    rows = []
    for name in lv.DISCS:
        ref = ref_l == lv.DISC_LABELS[name]
        rows.append({"level": name, **level_metrics(pred == lv.DISC_LABELS[name], ref, sp),
                     "named_correctly": named_correctly(pred, ref, name)})
    return res, rows, secs


def evaluate_cv(folds: Path) -> dict:
    rows = []
    cases = []
    for s in sd.SUBJECTS_3D:
        w = folds / f"fold{s}" / "weights.pt"
        if not w.exists():
            print(f"  fold {s}: {w} missing, skipped", flush=True)
            continue
        img, lab = sd.load_3d_subject(s)
        res, levels_rows, secs = score_subject(img, lab, w)
        rows += [{"subject": s, **r} for r in levels_rows]
        all_named = all(r["named_correctly"] for r in levels_rows)
        cases.append({"subject": s, "all_levels_named": all_named, "flags": list(res.flags), "seconds": secs})
        mean_d = np.mean([r["dice"] for r in levels_rows])
        print(f"  held-out {s}: mean disc Dice {mean_d:.3f}, all levels named: {all_named}, flags {res.flags}, {secs:.1f} s", flush=True)
    return {"rows": rows, "cases": cases}


def evaluate_radiospineomics(settings: SegmentationSettings) -> list[dict]:
    out = []
    for name, img, refs in sd.radiospineomics_cases():
        res = segment_image(img, settings)
        pred = sitk.GetArrayFromImage(res.labels)
        sp = tuple(reversed(img.GetSpacing()))
        ref = refs["L1-L2"]
        m = level_metrics(pred == lv.DISC_LABELS["L1-L2"], ref, sp)
        any_disc = level_metrics((pred >= 120) & (pred <= 124), ref, sp)
        named = named_correctly(pred, ref, "L1-L2")
        vd = {f"dice_{v}": level_metrics(pred == lv.VERTEBRA_LABELS[v], refs[v], sp)["dice"] for v in ("L1", "L2") if v in refs}
        out.append({"case": name, **m, "dice_any_disc_label": any_disc["dice"], "named_L1-L2": named, **vd, "flags": list(res.flags)})
        print(f"  radiospineomics {name}: L1-L2 Dice {m['dice']:.3f} (any disc label {any_disc['dice']:.3f}), named {named}, "
              f"vertebra Dice {vd}, flags {res.flags}", flush=True)
    return out


def read_boxes(image_path: Path, shape) -> list[tuple[float, float, float, float]]:
    return sd.sudirman_disc_boxes(image_path, shape)


def discs_in_boxes(pred: np.ndarray, boxes) -> dict[str, tuple[bool, bool]]:
    """Per lumbar disc level, top to bottom, for the five lowest ``boxes`` (row0, row1, col0, col1): does the box
    hold exactly one predicted disc (by centroid), and is it of that level? ``pred``: a 2D labelmap."""
    discs = []
    for name in lv.DISCS:
        m = pred == lv.DISC_LABELS[name]
        if m.any():
            discs.append((name, ndi.center_of_mass(m)))
    out = {}
    for name, (r0, r1, c0, c1) in zip(lv.DISCS, boxes[-5:], strict=True):
        inside = [n for n, (r, c) in discs if r0 <= r <= r1 and c0 <= c <= c1]
        out[name] = (len(inside) == 1, len(inside) == 1 and inside[0] == name)
    return out


def evaluate_sudirman(settings: SegmentationSettings, limit: int | None, split: str = "test") -> dict:
    images = sd.sudirman_images(split)[:limit]  # "test": patients never used as weak labels in training
    per_level = {n: {"boxes": 0, "one_disc": 0, "right_level": 0} for n in lv.DISCS}
    n_img = n_all_ok = n_low3_ok = n_err = 0
    failures = []
    t0 = time.time()
    for i, p in enumerate(images):
        img = read_image(p)
        boxes = read_boxes(p, (img.GetSize()[1], img.GetSize()[0]))
        if len(boxes) < 5:
            continue
        n_img += 1
        try:
            res = segment_image(img, settings)
            pred = sitk.GetArrayFromImage(res.labels)
        except Exception as exc:  # noqa: BLE001 - counted as a failure of every level
            pred = np.zeros((img.GetSize()[1], img.GetSize()[0]), np.uint8)
            n_err += 1
            failures.append({"image": p.name, "error": str(exc)[:200]})
        all_ok = True
        low3_ok = True
        for name, (one, right) in discs_in_boxes(pred, boxes).items():
            st = per_level[name]
            st["boxes"] += 1
            st["one_disc"] += one
            st["right_level"] += right
            all_ok &= right
            if name in ("L3-L4", "L4-L5", "L5-S1"):
                low3_ok &= right
        n_all_ok += all_ok
        n_low3_ok += low3_ok
        if not all_ok and len(failures) < 40:
            failures.append({"image": p.name, "flags": list(res.flags) if "res" in locals() else []})
        if (i + 1) % 50 == 0:
            print(f"  sudirman {i + 1}/{len(images)} ({time.time() - t0:.0f} s): all lumbar levels right in "
                  f"{n_all_ok}/{n_img}", flush=True)
    summary = {
        "images": n_img,
        "errors": n_err,
        "all_5_levels_right_pct": 100.0 * n_all_ok / max(n_img, 1),
        "lowest_3_levels_right_pct": 100.0 * n_low3_ok / max(n_img, 1),
        "per_level": {
            n: {**v, "one_disc_pct": 100.0 * v["one_disc"] / max(v["boxes"], 1),
                "right_level_pct": 100.0 * v["right_level"] / max(v["boxes"], 1)}
            for n, v in per_level.items()
        },
        "failures_sample": failures,
    }
    print(f"  sudirman: {n_img} images; all 5 lumbar levels right in {summary['all_5_levels_right_pct']:.1f} %, "
          f"lowest 3 (graded) right in {summary['lowest_3_levels_right_pct']:.1f} %", flush=True)
    return summary


def markdown(cv: dict, rso: list[dict], sud: dict | None) -> str:
    lines = []
    if cv["rows"]:
        lines += ["| level | Dice | MSD (mm) | volume diff (%) | sensitivity | precision | named correctly |",
                  "|---|---|---|---|---|---|---|"]
        for name in [*lv.DISCS, "all"]:
            rs = [r for r in cv["rows"] if name in ("all", r["level"])]

            def ms(k, rs=rs):
                v = np.array([r[k] for r in rs], float)
                return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"

            named = sum(r["named_correctly"] for r in rs)
            lines.append(f"| {name} | {ms('dice')} | {ms('msd_mm')} | {ms('volume_diff_pct')} | {ms('sensitivity')} | "
                         f"{ms('precision')} | {named}/{len(rs)} |")
        lines.append("")
        for c in cv["cases"]:
            lines.append(f"- held-out subject {c['subject']}: all levels named {c['all_levels_named']}, flags "
                         f"{', '.join(c['flags']) or 'none'}")
    if rso:
        lines += ["", "| radiospineomics slice | L1-L2 Dice | Dice ignoring level | MSD (mm) | named L1-L2 | L1 body Dice | L2 body Dice |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['dice']:.3f} | {r['dice_any_disc_label']:.3f} | {r['msd_mm']:.2f} | {r['named_L1-L2']} | "
                  f"{r.get('dice_L1', float('nan')):.3f} | {r.get('dice_L2', float('nan')):.3f} |" for r in rso]
    if sud:
        lines += ["", f"Sudirman localisation: {sud['images']} images; all five lumbar boxes right: "
                  f"{sud['all_5_levels_right_pct']:.1f} %; lowest three (graded) right: {sud['lowest_3_levels_right_pct']:.1f} %.",
                  "", "| level | boxes | exactly one disc (%) | right level (%) |", "|---|---|---|---|"]
        lines += [f"| {n} | {v['boxes']} | {v['one_disc_pct']:.1f} | {v['right_level_pct']:.1f} |" for n, v in sud["per_level"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=Path, default=ROOT / "runs", help="folder with fold<S>/weights.pt")
    ap.add_argument("--weights", help="weights for the external checks (default: shipped)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "eval")
    ap.add_argument("--sudirman-limit", type=int, default=None, help="only the first N Sudirman images")
    ap.add_argument("--sudirman-split", default="test", choices=("test", "train"),
                    help="'train' = the weak-label patients (for developing post-processing rules, not for reporting)")
    ap.add_argument("--skip", nargs="*", default=(), choices=("cv", "radiospineomics", "sudirman"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ext = SegmentationSettings(weights_path=args.weights, weights_sha256=sha256_of(args.weights) if args.weights else None)
    result = {"weights_external": args.weights or network.WEIGHTS_FILE}
    cv = {"rows": [], "cases": []}
    rso: list[dict] = []
    sud = None
    if "cv" not in args.skip:
        print("leave-one-subject-out over lumbar_t2_3d:", flush=True)
        cv = evaluate_cv(args.folds)
    if "radiospineomics" not in args.skip:
        rso = evaluate_radiospineomics(ext)
    if "sudirman" not in args.skip:
        sud = evaluate_sudirman(ext, args.sudirman_limit, args.sudirman_split)
    result.update({"cv": cv, "radiospineomics": rso, "sudirman": sud})
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=2, default=float))
    md = markdown(cv, rso, sud)
    (args.out / "evaluation.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
