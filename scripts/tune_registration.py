#!/usr/bin/env python
"""Bayesian optimisation (optuna TPE) of the B-spline registration parameters.

Objective (Iriondo et al., Registration, Eq. 1): L = mean over discs of (1 - Dice + SD of the Jacobian
determinant), Dice between the warped patient disc and the atlas disc, Jacobian SD over the atlas disc.
Searched: final B-spline grid spacing (mm), B-spline iterations, rigidity-penalty weight.

Data: real disc masks of the *tuning* subjects of lumbar_disc_labels_native (the split made by
scripts/build_disc_atlas.py: atlas-pool subjects are never used here, validation subjects neither), cut
out with the pipeline's margin (geometry.crop_disc, as register_labelmap does). ``--dim 2``: each disc's
mid-sagittal slice against the shipped 2D atlas; ``--dim 3``: whole discs against the 3D atlas. A disc
whose registration fails counts as L = 2 (Dice 0, SD 1). First trial: the paper's choice (2D: 2 mm, 200
iterations, weight 0.77) or, in 3D, the previous hand-picked defaults (4 mm, 150, 0.2, 2 resolutions).
3D also searches the number of B-spline resolutions (1 or 2), since time per disc is a goal there: each
trial records the CPU seconds per disc (1 ITK and SimpleITK thread per worker).
Budget: ~25 trials x 30 discs in 2D; 3D costs ~10x more per disc.

Usage: DISCANALYSIS_DATA=../shared/data python scripts/tune_registration.py [--dim 2] [--trials 25]
       [--subjects 6] [--workers 2] [--out tuning_trials.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from build_disc_atlas import DATA, load_native, split, subjects  # noqa: E402

from DiscAnalysisLib import levels  # noqa: E402
from DiscAnalysisLib.registration import RegistrationSettings, register_disc, worker_pool  # noqa: E402
from DiscAnalysisLib.registration.elastix import warm_up  # noqa: E402
from DiscAnalysisLib.registration.geometry import crop_disc  # noqa: E402

ATLAS_DIR = REPO / "Resources" / "Atlas"


def _one(args):
    atlas_path, sid, level, data, settings, dim = args
    atlas = sitk.ReadImage(str(atlas_path))
    labelmap = load_native(Path(data), sid)
    try:
        source = _slice(labelmap, level) if dim == 2 else labelmap
        mask = crop_disc(source, level, levels.label_of(level), settings.margin_mm).mask
        c0 = time.process_time()
        r = register_disc(atlas, mask, settings, level)
        return sid, level, r.dice, r.jacobian_sd, r.folding_fraction, r.seconds, time.process_time() - c0
    except Exception as exc:  # noqa: BLE001 - counted as a failure in the objective
        return sid, level, 0.0, 1.0, float("nan"), float("nan"), float("nan"), str(exc)


def _slice(labelmap: sitk.Image, level: str) -> sitk.Image:
    """The level's mid-sagittal slice of the labelmap (what --dim 2 registers)."""
    from DiscAnalysisLib.registration import midsagittal_slice

    lab2d, _, _ = midsagittal_slice(labelmap, levels.label_of(level))
    return lab2d


def _suggest(trial, dim: int) -> RegistrationSettings:
    if dim == 2:
        return RegistrationSettings(
            grid_spacing_mm=trial.suggest_float("grid_spacing_mm", 1.5, 8.0, log=True),
            bspline_iterations=trial.suggest_int("bspline_iterations", 100, 400, step=50),
            rigidity_weight=trial.suggest_float("rigidity_weight", 0.01, 2.0, log=True),
        )
    return RegistrationSettings(
        grid_spacing_3d_mm=trial.suggest_float("grid_spacing_mm", 3.0, 10.0, log=True),
        bspline_iterations_3d=trial.suggest_int("bspline_iterations", 50, 250, step=25),
        rigidity_weight_3d=trial.suggest_float("rigidity_weight", 0.02, 1.0, log=True),
        bspline_resolutions_3d=trial.suggest_int("bspline_resolutions", 1, 2),
    )


FIRST_TRIAL = {
    2: {"grid_spacing_mm": 2.0, "bspline_iterations": 200, "rigidity_weight": 0.77},
    3: {"grid_spacing_mm": 4.0, "bspline_iterations": 150, "rigidity_weight": 0.2, "bspline_resolutions": 2},
}


def main(argv=None) -> int:
    import optuna

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "lumbar_disc_labels_native")
    ap.add_argument("--dim", type=int, choices=(2, 3), default=2)
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--subjects", type=int, default=6, help="how many tuning subjects (x 5 levels) per trial")
    ap.add_argument("--workers", type=int, default=2, help="1: in this process")
    ap.add_argument("--startup-trials", type=int, default=10, help="random trials before TPE takes over")
    ap.add_argument("--step-estimation", default=None, choices=("Original", "DisplacementDistribution"),
                    help="elastix step-size estimation of the B-spline stage (default: RegistrationSettings')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("tuning_trials.csv"))
    args = ap.parse_args(argv)
    tune_ids = split(subjects(args.data))["tune"][: args.subjects]
    discs = [(sid, lv) for sid in tune_ids for lv in levels.DISCS]
    print(f"tuning on {len(discs)} {args.dim}D discs of subjects {tune_ids}", flush=True)
    if args.workers > 1:
        pool = worker_pool(args.workers, 1)
        run = pool.map
    else:
        pool = None
        warm_up(1, worker=True)
        run = map
    rows = []

    def objective(trial: optuna.Trial) -> float:
        s = _suggest(trial, args.dim)
        if args.step_estimation:
            s = replace(s, step_estimation=args.step_estimation, step_estimation_3d=args.step_estimation)
        t0 = time.perf_counter()
        jobs = [(ATLAS_DIR / f"disc_atlas_{args.dim}d_{lv}.nrrd", sid, lv, str(args.data), s, args.dim)
                for sid, lv in discs]
        res = list(run(_one, jobs))
        d = np.array([r[2] for r in res])
        j = np.array([r[3] for r in res])
        fold = np.nanmax([r[4] for r in res])
        loss = float(np.mean(1.0 - d + j))
        row = {"trial": trial.number, "dim": args.dim, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                       for k, v in trial.params.items()},
               "loss": round(loss, 4), "dice_mean": round(float(d.mean()), 4), "dice_min": round(float(d.min()), 4),
               "jacobian_sd_mean": round(float(j.mean()), 4), "max_folding": fold,
               "seconds_per_disc": round(float(np.nanmean([r[5] for r in res])), 3),
               "cpu_s_per_disc": round(float(np.nanmean([r[6] for r in res])), 3),
               "wall_s": round(time.perf_counter() - t0, 1), "load_avg": round(os.getloadavg()[0], 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            w.writeheader()
            w.writerows(rows)
        return loss

    sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=args.startup_trials)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(FIRST_TRIAL[args.dim])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=args.trials)
    finally:
        if pool is not None:
            pool.shutdown()
    best = study.best_trial
    print("best", json.dumps({"loss": best.value, **best.params}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
