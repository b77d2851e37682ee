#!/usr/bin/env python
"""Build the level-specific disc atlas shipped in Resources/Atlas/ (2D mid-sagittal and 3D).

Data: ../shared/data/lumbar_disc_labels_native (49 healthy subjects, Menezes-Reis et al. 2016, GPL-3.0 as
redistributed by JonathanRamos/fastcleverseg): labels 1..5 = L5-S1..L1-L2, 0.43 x 0.43 mm in-plane,
4.4 mm sagittal slices, cropped tightly around the discs, no orientation in the header.

Method (re-runnable, deterministic):
1. The 49 subjects are split with a fixed seed into an atlas pool (25), a tuning set (10, used by
   scripts/tune_registration.py) and a validation set (14, docs/validation.md). Only the pool builds
   the atlas, so tuning and validation never see an atlas subject.
2. Each volume is padded (the crops touch the discs) and given the PIR orientation of the lumbar_t2_3d
   scans of the same cohort (i anterior->posterior, j superior->inferior, k sagittal).
3. Per level and dimension, every pool disc is aligned to every other by centroid + the affine map
   between the two masks' second moments (the optimal-transport map between their Gaussians: unique,
   no principal-axis sign ambiguity) and the Dice overlap is measured. The atlas disc of a level is the
   medoid: the pool subject with the highest mean Dice to all others (real anatomy, as in the paper's
   single healthy atlas spine). For comparison the script also scores a mean shape (pool masks
   aligned to the medoid, averaged, thresholded at 0.5) the same way.
4. The medoid disc mask, cropped with an 8 mm margin, is written as a compressed binary NRRD.

Usage: DISCANALYSIS_DATA=../shared/data python scripts/build_disc_atlas.py [--data DIR] [--out DIR]
Prints the SHA-256 of each file (paste them into DiscAnalysisLib/registration/atlas.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data"))

from DiscAnalysisLib import levels  # noqa: E402
from DiscAnalysisLib.registration.geometry import midsagittal_slice  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402

SEED = 20261121
N_POOL, N_TUNE = 25, 10
PIR_DIRECTION = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
PAD_INPLANE, PAD_SLICES = 16, 2
ATLAS_MARGIN_MM = 8.0


def subjects(data: Path) -> list[str]:
    return sorted((p.name.split("_")[0] for p in data.glob("*_discs.nrrd")), key=int)


def split(ids: list[str]) -> dict[str, list[str]]:
    perm = [ids[i] for i in np.random.default_rng(SEED).permutation(len(ids))]
    return {"pool": sorted(perm[:N_POOL], key=int), "tune": sorted(perm[N_POOL:N_POOL + N_TUNE], key=int),
            "validation": sorted(perm[N_POOL + N_TUNE:], key=int)}


def load_native(data: Path, sid: str) -> sitk.Image:
    """A native labelmap in SPINEPS labels, padded and with the cohort's PIR orientation."""
    img = sitk.ReadImage(str(data / f"{sid}_discs.nrrd"))
    arr = levels.convert_labels(sitk.GetArrayFromImage(img), "from_l5s1")
    out = sitk.GetImageFromArray(arr)
    out.SetSpacing(img.GetSpacing())
    out = sitk.ConstantPad(out, [PAD_INPLANE, PAD_INPLANE, PAD_SLICES], [PAD_INPLANE, PAD_INPLANE, PAD_SLICES], 0)
    out.SetOrigin((0.0, 0.0, 0.0))
    out.SetDirection(PIR_DIRECTION)
    return out


def disc_mask(labelmap: sitk.Image, level: str, dim: int) -> sitk.Image:
    label = levels.label_of(level)
    if dim == 2:
        labels_2d, _, _ = midsagittal_slice(labelmap, label)
        return sitk.Cast(labels_2d == label, sitk.sitkUInt8)
    return sitk.Cast(labelmap == label, sitk.sitkUInt8)


def moments(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(float)
    d = mask.GetDimension()
    direction = np.asarray(mask.GetDirection()).reshape(d, d)
    pts = np.asarray(mask.GetOrigin()) + (idx * np.asarray(mask.GetSpacing())) @ direction.T
    return pts.mean(axis=0), np.cov(pts.T)


def _sqrtm(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 1e-12, None))) @ v.T


def moment_align(moving: sitk.Image, fixed: sitk.Image, interp=sitk.sitkLinear) -> sitk.Image:
    """Resample ``moving`` onto ``fixed`` by centroid + the Gaussian optimal-transport affine map."""
    cf, Cf = moments(fixed)
    cm, Cm = moments(moving)
    rm = _sqrtm(Cm)
    rm_inv = np.linalg.inv(rm)
    m = rm_inv @ _sqrtm(rm @ Cf @ rm) @ rm_inv  # maps moving -> fixed
    tx = sitk.AffineTransform(len(cf))
    tx.SetCenter(cf.tolist())
    tx.SetMatrix(np.linalg.inv(m).ravel().tolist())  # fixed point -> moving point
    tx.SetTranslation((cm - cf).tolist())
    out = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), fixed, tx, interp, 0.0, sitk.sitkFloat32)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def crop(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(mask)
    where = np.nonzero(arr)
    lo = [int(w.min()) for w in where][::-1]
    hi = [int(w.max()) for w in where][::-1]
    pad = [int(np.ceil(margin_mm / s)) for s in mask.GetSpacing()]
    if mask.GetDimension() == 3:
        pad[2] = PAD_SLICES  # 4.4 mm slices: two empty slices either side, as in the padded volumes
    padded = sitk.ConstantPad(mask, pad, pad, 0)
    start = [lo[a] for a in range(mask.GetDimension())]
    size = [hi[a] - lo[a] + 1 + 2 * pad[a] for a in range(mask.GetDimension())]
    return sitk.RegionOfInterest(padded, size, start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "lumbar_disc_labels_native",
                    help="native disc labels folder (default: $DISCANALYSIS_DATA/lumbar_disc_labels_native)")
    ap.add_argument("--out", type=Path, default=REPO / "Resources" / "Atlas")
    args = ap.parse_args(argv)
    ids = subjects(args.data)
    if len(ids) != 49:
        print(f"expected 49 subjects in {args.data}, found {len(ids)}; set --data", file=sys.stderr)
        return 2
    parts = split(ids)
    vols = {sid: load_native(args.data, sid) for sid in parts["pool"]}
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"seed": SEED, "split": parts, "levels": {}, "files": {}}
    for dim in (2, 3):
        for level in levels.DISCS:
            masks = {sid: disc_mask(v, level, dim) for sid, v in vols.items()}
            arrays = {sid: sitk.GetArrayFromImage(m) > 0 for sid, m in masks.items()}
            pool = list(masks)
            mean_dice = {}
            for f in pool:
                ds = [dice(sitk.GetArrayViewFromImage(moment_align(masks[m], masks[f])) > 0.5, arrays[f])
                      for m in pool if m != f]
                mean_dice[f] = float(np.mean(ds))
            medoid = max(mean_dice, key=mean_dice.get)
            # mean-shape alternative, scored the same way (leave-one-out would favour it even less)
            aligned = [sitk.GetArrayFromImage(moment_align(masks[m], masks[medoid])) for m in pool]
            mean_shape = sitk.GetImageFromArray((np.mean(aligned, axis=0) > 0.5).astype(np.uint8))
            mean_shape.CopyInformation(masks[medoid])
            ms = np.mean([dice(sitk.GetArrayViewFromImage(moment_align(masks[m], mean_shape)) > 0.5,
                               sitk.GetArrayViewFromImage(mean_shape) > 0) for m in pool])
            atlas = crop(masks[medoid], ATLAS_MARGIN_MM)
            name = f"disc_atlas_{dim}d_{level}.nrrd"
            sitk.WriteImage(atlas, str(args.out / name), useCompression=True)
            sha = sha256_of(args.out / name)
            info["files"][name] = sha
            info["levels"][f"{dim}d {level}"] = {
                "medoid_subject": medoid,
                "medoid_mean_dice": round(mean_dice[medoid], 4),
                "pool_median_of_mean_dice": round(float(np.median(list(mean_dice.values()))), 4),
                "mean_shape_mean_dice": round(float(ms), 4),
                "atlas_size": list(atlas.GetSize()),
                "atlas_voxels": int(sitk.GetArrayViewFromImage(atlas).sum()),
            }
            print(f"{dim}D {level}: medoid subject {medoid} (mean Dice {mean_dice[medoid]:.3f}, pool median "
                  f"{np.median(list(mean_dice.values())):.3f}; mean shape {ms:.3f}) -> {name} {sha}")
    (args.out / "atlas_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
