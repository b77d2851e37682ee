#!/usr/bin/env python
"""Bayesian optimisation (optuna TPE) of the B-spline registration parameters.

Objective (Iriondo et al., Registration, Eq. 1): L = mean over discs of (1 - Dice + SD of the Jacobian
determinant), Dice between the warped patient disc and the atlas disc, Jacobian SD over the atlas disc.
Searched: final B-spline grid spacing (mm), B-spline iterations, rigidity-penalty weight.

Data: real 2D mid-sagittal disc masks of the *tuning* subjects of lumbar_disc_labels_native (the split
made by scripts/build_disc_atlas.py: atlas-pool subjects are never used here, validation subjects
neither). Atlas: the shipped 2D atlas in Resources/Atlas. A disc whose registration fails counts as
L = 2 (Dice 0, SD 1). The paper's choice (2 mm, 200 iterations, weight 0.77) is evaluated as the first
trial. Budget: ~25 trials x 30 discs, feasible on 2 shared CPU cores (disc registrations run in
``--workers`` processes).

Usage: DISCANALYSIS_DATA=../shared/data python scripts/tune_registration.py [--trials 25] [--subjects 6]
       [--workers 2] [--out tuning_trials.csv]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from build_disc_atlas import DATA, disc_mask, load_native, split, subjects  # noqa: E402

from DiscAnalysisLib import levels  # noqa: E402
from DiscAnalysisLib.registration import RegistrationSettings, register_disc  # noqa: E402
from DiscAnalysisLib.registration.elastix import warm_up  # noqa: E402

ATLAS_DIR = REPO / "Resources" / "Atlas"


def _one(args):
    atlas_path, sid, level, data, settings = args
    atlas = sitk.ReadImage(str(atlas_path))
    mask = disc_mask(load_native(Path(data), sid), level, 2)
    try:
        r = register_disc(atlas, mask, settings, level)
        return sid, level, r.dice, r.jacobian_sd, r.folding_fraction, r.seconds
    except Exception as exc:  # noqa: BLE001 - counted as a failure in the objective
        return sid, level, 0.0, 1.0, float("nan"), float("nan"), str(exc)


def main(argv=None) -> int:
    import optuna

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "lumbar_disc_labels_native")
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--subjects", type=int, default=6, help="how many tuning subjects (x 5 levels) per trial")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("tuning_trials.csv"))
    args = ap.parse_args(argv)
    tune_ids = split(subjects(args.data))["tune"][: args.subjects]
    discs = [(sid, lv) for sid in tune_ids for lv in levels.DISCS]
    print(f"tuning on {len(discs)} 2D discs of subjects {tune_ids}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=warm_up, initargs=(1,))
    rows = []

    def objective(trial: optuna.Trial) -> float:
        s = RegistrationSettings(
            grid_spacing_mm=trial.suggest_float("grid_spacing_mm", 1.5, 8.0, log=True),
            bspline_iterations=trial.suggest_int("bspline_iterations", 100, 400, step=50),
            rigidity_weight=trial.suggest_float("rigidity_weight", 0.01, 2.0, log=True),
        )
        t0 = time.perf_counter()
        jobs = [(ATLAS_DIR / f"disc_atlas_2d_{lv}.nrrd", sid, lv, str(args.data), s) for sid, lv in discs]
        res = list(pool.map(_one, jobs))
        d = np.array([r[2] for r in res])
        j = np.array([r[3] for r in res])
        fold = np.nanmax([r[4] for r in res])
        loss = float(np.mean(1.0 - d + j))
        row = {"trial": trial.number, "grid_spacing_mm": round(s.grid_spacing_mm, 3),
               "bspline_iterations": s.bspline_iterations, "rigidity_weight": round(s.rigidity_weight, 4),
               "loss": round(loss, 4), "dice_mean": round(float(d.mean()), 4), "dice_min": round(float(d.min()), 4),
               "jacobian_sd_mean": round(float(j.mean()), 4), "max_folding": fold,
               "seconds_per_disc": round(float(np.nanmean([r[5] for r in res])), 3),
               "wall_s": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            w.writeheader()
            w.writerows(rows)
        return loss

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.enqueue_trial({"grid_spacing_mm": 2.0, "bspline_iterations": 200, "rigidity_weight": 0.77})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=args.trials)
    finally:
        pool.shutdown()
    best = study.best_trial
    print("best", json.dumps({"loss": best.value, **best.params}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
