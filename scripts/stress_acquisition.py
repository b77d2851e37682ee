#!/usr/bin/env python
"""How the shipped grading and level naming hold up when the acquisition changes (a proxy for other scanners).

    DISCANALYSIS_DATA=../shared/data python scripts/stress_acquisition.py grading [--conditions ...]
    DISCANALYSIS_DATA=../shared/data python scripts/stress_acquisition.py levels  [--conditions ...]
    DISCANALYSIS_DATA=../shared/data python scripts/stress_acquisition.py dice --folds runs/cont
    DISCANALYSIS_DATA=../shared/data python scripts/stress_acquisition.py export --conditions combined --out /tmp/stress

The issues' external checks use scans from scanners we do not have. This script re-runs the shipped product on
held-out pfirrmann_sudirman images after plausible acquisition changes, applied to the whole image before
anything else: lower and higher in-plane resolution (anti-aliased resampling; coordinates follow), blur
(reconstruction filter), gamma (contrast/weighting), Rician noise (magnitude images; sigma as a fraction of the
99th percentile), coil shading (a smooth multiplicative ramp 0.5 -> 1.5 along rows or columns), and several of
them at once, milder each ("combined").

``grading``: the shipped ensemble (with TTA) on the test split's discs, crops centred on the annotated boxes,
patient-level bootstrap of each condition's difference to the clean images (same discs, paired).
``levels``: ``segment_image`` (shipped weights and judge) on the 203 held-out images; an image is right when each
of its five lowest disc boxes holds exactly one predicted disc, of its level (as evaluate_segmentation.py).
``dice``: disc Dice and level names on the 3D lumbar_t2_3d subjects, each by its leave-one-subject-out network.
A report: nothing in the product is tuned on it (docs/validation.md, "Acquisition stress test").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

DATA = Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data"))


def _resize(arr: np.ndarray, factor: float) -> np.ndarray:
    from skimage.transform import resize

    shape = tuple(int(round(s * factor)) for s in arr.shape)
    return resize(arr, shape, order=1, anti_aliasing=factor < 1, preserve_range=True).astype(np.float32)


def _rician(arr: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = fraction * float(np.percentile(arr, 99))
    return np.hypot(arr + rng.normal(0, sigma, arr.shape), rng.normal(0, sigma, arr.shape)).astype(np.float32)


def _gamma(arr: np.ndarray, g: float) -> np.ndarray:
    top = max(float(arr.max()), 1e-6)
    return (top * (np.clip(arr, 0, None) / top) ** g).astype(np.float32)


def _ramp(arr: np.ndarray, axis: int) -> np.ndarray:
    t = np.linspace(0.5, 1.5, arr.shape[axis], dtype=np.float32)
    return (arr * (t[:, None] if axis == 0 else t[None, :])).astype(np.float32)


#: name -> (image transform, coordinate scale factor)
CONDITIONS = {
    "clean": (lambda a, s: a, 1.0),
    "half resolution": (lambda a, s: _resize(a, 0.5), 0.5),
    "4/3 resolution": (lambda a, s: _resize(a, 4 / 3), 4 / 3),
    "blur 1 px": (lambda a, s: ndi.gaussian_filter(a, 1.0), 1.0),
    "gamma 0.6": (lambda a, s: _gamma(a, 0.6), 1.0),
    "gamma 1.6": (lambda a, s: _gamma(a, 1.6), 1.0),
    "Rician noise 5 %": (lambda a, s: _rician(a, 0.05, s), 1.0),
    "shading along rows": (lambda a, s: _ramp(a, 0), 1.0),
    "shading along columns": (lambda a, s: _ramp(a, 1), 1.0),
    # several at once, milder each: half resolution, gamma 1.3, shading along columns, Rician noise 3 %
    "combined": (lambda a, s: _rician(_ramp(_gamma(_resize(a, 0.5), 1.3), 1), 0.03, s), 0.5),
}


def _seed(path: str) -> int:
    return sum(path.encode()) % (2**31)


def run_grading(names: list[str], n_boot: int) -> dict:
    from DiscAnalysisLib.grading import metrics
    from DiscAnalysisLib.grading.predict import load_model
    from DiscAnalysisLib.grading.sudirman import crop_width, load_samples

    model = load_model()
    split = json.loads((REPO / "Resources" / "Models" / "pfirrmann_split.json").read_text())
    samples, images = load_samples(DATA / "pfirrmann_sudirman")
    keep = set(split["test"])
    chosen = [s for s in samples if s.patient in keep]
    results, clean = {}, None
    for name in names:
        fn, f = CONDITIONS[name]
        t0 = time.time()
        cache: dict[str, np.ndarray] = {}
        probs = []
        for s in chosen:
            if s.image_path not in cache:
                cache[s.image_path] = fn(images[s.image_path], _seed(s.image_path))
            centre = tuple((c + 0.5) * f - 0.5 for c in s.center_rc)
            probs.append(model.probabilities(cache[s.image_path], centre, crop_width(s) * f, tta=True)[0])
        keys, y, p = metrics.mean_per_disc([(s.patient, s.level) for s in chosen], probs, [s.grade for s in chosen])
        pred = p.argmax(1) + 1
        row = {"balanced_accuracy": metrics.balanced_accuracy(y, pred),
               "kappa_quadratic": metrics.cohen_kappa(y, pred, weights="quadratic"),
               "accuracy": float(np.mean(pred == y)), "n": int(len(y)),
               "confusion": metrics.confusion(y, pred).tolist()}
        if name == "clean":  # always the first condition (main puts it there)
            clean = pred
        else:
            groups = [k[0] for k in keys]

            def diff(idx, pred=pred, y=y, clean=clean):
                return {"d_ba": metrics.balanced_accuracy(y[idx], pred[idx]) - metrics.balanced_accuracy(y[idx], clean[idx]),
                        "d_qwk": metrics.cohen_kappa(y[idx], pred[idx], weights="quadratic")
                        - metrics.cohen_kappa(y[idx], clean[idx], weights="quadratic")}

            point = diff(np.arange(len(y)))
            ci = metrics.bootstrap_ci(groups, diff, n_boot=n_boot, seed=0)
            row["difference"] = {k: (point[k], *ci[k]) for k in point}
            row["changed_grades"] = int(np.sum(pred != clean))
        results[name] = row
        extra = ""
        if "difference" in row:
            c = row["difference"]
            extra = (f"; vs clean: BA {c['d_ba'][0]:+.3f} ({c['d_ba'][1]:+.3f} to {c['d_ba'][2]:+.3f}), "
                     f"QWK {c['d_qwk'][0]:+.3f} ({c['d_qwk'][1]:+.3f} to {c['d_qwk'][2]:+.3f}), "
                     f"{row['changed_grades']} grades changed")
        print(f"{name}: BA {row['balanced_accuracy']:.3f}, QWK {row['kappa_quadratic']:.3f}, accuracy "
              f"{row['accuracy']:.3f} on {row['n']} discs ({time.time() - t0:.0f} s){extra}", flush=True)
    return results


def run_levels(names: list[str]) -> dict:
    import segmentation_data as sd
    import SimpleITK as sitk
    from evaluate_segmentation import discs_in_boxes

    from DiscAnalysisLib.image_io import read_image
    from DiscAnalysisLib.segmentation import network, segment_image

    net = network.load_model()
    sources = [(p, read_image(p)) for p in sd.sudirman_images("test")]  # read once, changed per condition
    results = {}
    for name in names:
        fn, _ = CONDITIONS[name]
        t0 = time.time()
        n_img = n_ok = n_err = 0
        for p, src in sources:
            arr = fn(sitk.GetArrayFromImage(src).astype(np.float32), _seed(str(p)))
            boxes = sd.sudirman_disc_boxes(p, arr.shape)
            if len(boxes) < 5:
                continue
            n_img += 1
            img = sitk.GetImageFromArray(arr)
            for k in src.GetMetaDataKeys():  # keeps the "spacing unknown" marker of a bitmap
                img.SetMetaData(k, src.GetMetaData(k))
            try:
                pred = sitk.GetArrayFromImage(segment_image(img, net=net).labels)
            except Exception:  # noqa: BLE001 - counted as wrong
                n_err += 1
                continue
            n_ok += all(right for _, right in discs_in_boxes(pred, boxes).values())
        results[name] = {"images": n_img, "all_five_right": n_ok, "errors": n_err}
        print(f"{name}: all five levels right in {n_ok}/{n_img} images ({100 * n_ok / max(n_img, 1):.1f} %), "
              f"{n_err} errors ({time.time() - t0:.0f} s)", flush=True)
    return results


def run_dice(names: list[str], folds: Path) -> dict:
    """Disc Dice and level names on the 4 lumbar_t2_3d subjects (another scanner, 3D), each segmented by the fold
    network that never trained on it (as ``evaluate_segmentation.py --folds``). The change is applied to every
    sagittal slice; conditions that resample the image are left out (the 1 mm reference would need resampling
    too, which would measure the grid, not the network)."""
    import segmentation_data as sd
    import SimpleITK as sitk
    from evaluate_segmentation import score_subject

    results = {}
    for name in names:
        fn, f = CONDITIONS[name]
        if f != 1.0:
            print(f"{name}: left out (resamples the image)", flush=True)
            continue
        t0 = time.time()
        dice, named, n = [], 0, 0
        for subject in sd.SUBJECTS_3D:
            img, lab = sd.load_3d_subject(subject)
            arr = sitk.GetArrayFromImage(img).astype(np.float32)
            out = sitk.GetImageFromArray(np.stack([fn(a, _seed(f"{subject}_{k}")) for k, a in enumerate(arr)]))
            out.CopyInformation(img)
            _, rows, _ = score_subject(out, lab, folds / f"fold{subject}" / "weights.pt")
            dice += [r["dice"] for r in rows]
            named += sum(r["named_correctly"] for r in rows)
            n += len(rows)
        results[name] = {"mean_disc_dice": float(np.mean(dice)), "named": named, "discs": n}
        print(f"{name}: mean disc Dice {np.mean(dice):.3f}, {named}/{n} discs named correctly ({time.time() - t0:.0f} s)",
              flush=True)
    return results


def export(names: list[str], out: Path) -> None:
    """8-bit PNG copies of the grading test patients' images under each condition, laid out like pfirrmann_sudirman
    (boxes and grades linked, not copied), for the end-to-end scripts: ``compare_signal_grade.py --data OUT/NAME``.
    For evaluation only: write them outside the repository and delete them after use."""
    from PIL import Image

    from DiscAnalysisLib.grading.sudirman import patient_of

    src = DATA / "pfirrmann_sudirman"
    test = set(json.loads((REPO / "Resources" / "Models" / "pfirrmann_split.json").read_text())["test"])
    for name in names:
        fn, _ = CONDITIONS[name]
        root = out / name.replace(" ", "_").replace("/", "-").replace("%", "pct")
        (root / "images").mkdir(parents=True, exist_ok=True)
        for entry in ("boxes", "PfirrmannGrade.csv", "boxes_classes.yaml"):
            if (src / entry).exists() and not (root / entry).exists():
                (root / entry).symlink_to((src / entry).resolve())
        n = 0
        for png in sorted((src / "images").glob("*.png")):
            if patient_of(png) not in test:
                continue
            with Image.open(png) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32)
            changed = np.clip(np.round(fn(arr, _seed(str(png)))), 0, 255).astype(np.uint8)
            Image.fromarray(changed).save(root / "images" / png.name)
            n += 1
        print(f"{name}: {n} images -> {root}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("grading", "levels", "dice", "export"))
    ap.add_argument("--folds", type=Path, default=REPO / "runs" / "cont",
                    help="dice: folder with fold<S>/weights.pt (the lumbar_t2_3d leave-one-subject-out networks)")
    ap.add_argument("--out", type=Path, default=None, help="export: folder for the changed copies (outside the repository)")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS), metavar="NAME")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    names = ["clean"] + [n for n in args.conditions if n != "clean"]
    if args.part == "export":
        if args.out is None:
            raise SystemExit("export needs --out FOLDER (outside the repository)")
        export(list(args.conditions), args.out)
        return 0
    if args.part == "dice":
        out = run_dice(names, args.folds)
    else:
        out = run_grading(names, args.n_boot) if args.part == "grading" else run_levels(names)
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
