#!/usr/bin/env python
"""Decide, on the validation patients only, whether a candidate ensemble of grading networks beats the baseline.

    python scripts/build_grading_ensemble.py --data ../shared/data/pfirrmann_sudirman \\
        --baseline-members Resources/Models/pfirrmann_grading.pt Resources/Models/pfirrmann_grading_seed1.pt \\
        --members Resources/Models/pfirrmann_grading.pt Resources/Models/pfirrmann_grading_seed1.pt \\
                  runs/seed2/pfirrmann_grading_seed2.pt runs/seed3/pfirrmann_grading_seed3.pt

The baseline (``--baseline-members``, one file or several; ``--single FILE`` is the same option) and the candidate (``--members``) are scored on the
validation patients of ``Resources/Models/pfirrmann_split.json`` with the rule that picks the epoch in
``train_grading.py``: (balanced accuracy + quadratic kappa) / 2 of the predictions with test-time
augmentation, one prediction per disc (probabilities averaged over a patient's images, as
``evaluate_grading.py`` does). A single network uses the temperature stored in its file (fitted on the same
validation patients); an ensemble (mean of the members' probabilities over members and TTA variants) gets
one temperature on all members' logits, fitted here on the validation patients with the same grid search
as ``train_grading.py``. The candidate is chosen only if its score is strictly higher. The test split is
never read. Prints the decision, the candidate's temperature and its members' SHA-256 to paste into
``DiscAnalysisLib/grading/predict.py`` (``MODEL_FILES``, ``ENSEMBLE_TEMPERATURE``); ``--json`` keeps the numbers.

Used for the session 2-3 decisions (the files named above are now in those sessions' ``runs/``). Since session 4
the shipped members are cross-fitted networks that trained on the validation patients too, so they cannot be a
validation baseline any more: recipe decisions go through ``train_grading.py --cv-folds`` and
``scripts/crossfit_grading.py`` (out-of-fold predictions); this script refuses the shipped members.
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
from DiscAnalysisLib.grading.predict import fit_temperature, load_model, probabilities_from_logits  # noqa: E402
from DiscAnalysisLib.grading.sudirman import crop_width, load_samples  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402


def _fit_temperature():
    """The temperature fit of the training script (now in the library)."""
    return fit_temperature


def member_logits(model, samples, images) -> np.ndarray:
    """(members, variants, discs, 5) raw logits with TTA."""
    per = [model.member_logits(images[s.image_path], s.center_rc, crop_width(s), tta=True)[0] for s in samples]
    return np.stack(per, axis=2)


def per_patient(samples, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One prediction per (patient, level): probabilities averaged over the patient's images."""
    _, y, p = metrics.mean_per_disc([(s.patient, s.level) for s in samples], probs, [s.grade for s in samples])
    return y, p


def score(samples, logits: np.ndarray, temperature: float) -> dict:
    """Selection score and its parts; ``logits`` (members, variants, discs, 5)."""
    probs = np.array([probabilities_from_logits(logits[:, :, i], temperature) for i in range(logits.shape[2])])
    y, p = per_patient(samples, probs)
    pred = p.argmax(1) + 1
    ba = metrics.balanced_accuracy(y, pred)
    qwk = metrics.cohen_kappa(y, pred, weights="quadratic")
    return {"score": (ba + qwk) / 2, "balanced_accuracy": ba, "kappa_quadratic": qwk,
            "accuracy": float(np.mean(pred == y)), "n_discs": int(len(y)), "temperature": float(temperature),
            "confusion": metrics.confusion(y, pred).tolist()}


def evaluate_candidate(files: list[str], logits_by_file: dict, samples) -> dict:
    """Validation score of one network (its own temperature) or an ensemble (one temperature fitted here)."""
    lg = np.concatenate([logits_by_file[os.path.realpath(f)] for f in files])
    if len(files) == 1:
        temperature = load_model(files[0]).temperature
    else:
        m, v, n, k = lg.shape
        temperature = _fit_temperature()(lg.reshape(m * v, n, k), np.array([s.grade - 1 for s in samples]))
    return {"files": list(files), **score(samples, lg, temperature)}


def shipped_files() -> list[str]:
    """The shipped members of ``MODEL_FILES``, SHA-256-checked."""
    from DiscAnalysisLib.grading.predict import MODEL_FILES
    from DiscAnalysisLib.resources import verified_path

    return [str(verified_path(f, sha)) for f, sha in MODEL_FILES]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"))
    ap.add_argument("--split", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--baseline-members", "--single", dest="baseline", nargs="+", required=True, metavar="FILE",
                    help="weights file(s) of the baseline (trained on the training patients of the split only)")
    ap.add_argument("--members", nargs="+", required=True, metavar="FILE", help="weights files of the candidate")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    baseline = args.baseline
    shipped = {os.path.realpath(f) for f in shipped_files()}
    if shipped & {os.path.realpath(f) for f in baseline + args.members}:
        raise SystemExit("the shipped grading networks were trained on the validation patients (cross-fitting, session 4): "
                         "they cannot be scored here; compare recipes with scripts/crossfit_grading.py")
    split = json.loads(Path(args.split).read_text())
    samples, images = load_samples(args.data)
    val = [s for s in samples if s.patient in set(split["val"])]

    # each distinct file (however spelled), with its (1, variants, discs, 5) logits computed once
    distinct: dict[str, str] = {}
    for f in baseline + args.members:
        distinct.setdefault(os.path.realpath(f), f)
    logits_by_file = {real: member_logits(load_model(f), val, images) for real, f in distinct.items()}
    res = {"baseline": evaluate_candidate(baseline, logits_by_file, val),
           "candidate": evaluate_candidate(args.members, logits_by_file, val),
           "members_alone": [evaluate_candidate([f], logits_by_file, val) for f in distinct.values()]}
    res["chosen"] = "candidate" if res["candidate"]["score"] > res["baseline"]["score"] else "baseline"
    res["sha256"] = {f: sha256_of(f) for f in args.members}
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    b, c = res["baseline"], res["candidate"]
    print(f"validation score (BA + QWK) / 2 with TTA: baseline ({len(b['files'])} member(s)) {b['score']:.3f} "
          f"(temperature {b['temperature']:.3f}), candidate ({len(c['files'])} member(s)) {c['score']:.3f} "
          f"(temperature {c['temperature']:.3f}) -> {res['chosen']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
