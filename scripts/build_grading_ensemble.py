#!/usr/bin/env python
"""Decide, on the validation patients only, whether an ensemble of grading networks beats the single model.

    python scripts/build_grading_ensemble.py --data ../shared/data/pfirrmann_sudirman \\
        --single Resources/Models/pfirrmann_grading.pt \\
        --members Resources/Models/pfirrmann_grading.pt runs/seed1/pfirrmann_grading_seed1.pt

Both candidates are scored on the validation patients of ``Resources/Models/pfirrmann_split.json`` with the
rule that picks the epoch in ``train_grading.py``: (balanced accuracy + quadratic kappa) / 2 of the
predictions with test-time augmentation, one prediction per disc (probabilities averaged over a patient's
images, as ``evaluate_grading.py`` does). The single model uses the temperature stored in its file (fitted
on the same validation patients); the ensemble (mean of the members' probabilities over members and TTA
variants) gets one temperature on all members' logits, fitted here on the validation patients with the
same grid search as ``train_grading.py``. The ensemble is chosen only if its score is higher. The test split
is never read. Prints the decision, the ensemble temperature and the members' SHA-256 to paste into
``DiscAnalysisLib/grading/predict.py`` (``MODEL_FILES``, ``ENSEMBLE_TEMPERATURE``); ``--json`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscAnalysisLib.grading import metrics  # noqa: E402
from DiscAnalysisLib.grading.predict import load_model, probabilities_from_logits  # noqa: E402
from DiscAnalysisLib.grading.sudirman import crop_width, load_samples  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402


def _fit_temperature():
    spec = importlib.util.spec_from_file_location("train_grading", REPO / "scripts" / "train_grading.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fit_temperature


def member_logits(model, samples, images) -> np.ndarray:
    """(members, variants, discs, 5) raw logits with TTA."""
    per = [model.logits(model.crops(images[s.image_path], s.center_rc, crop_width(s), tta=True)[0]) for s in samples]
    return np.stack(per, axis=2)


def per_patient(samples, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One prediction per (patient, level): probabilities averaged over the patient's images."""
    acc, truth = {}, {}
    for s, p in zip(samples, probs, strict=True):
        acc.setdefault((s.patient, s.level), []).append(p)
        truth[(s.patient, s.level)] = s.grade
    keys = sorted(acc)
    return np.array([truth[k] for k in keys]), np.array([np.mean(acc[k], axis=0) for k in keys])


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"))
    ap.add_argument("--split", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--single", default=str(REPO / "Resources" / "Models" / "pfirrmann_grading.pt"))
    ap.add_argument("--members", nargs="+", required=True)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    split = json.loads(Path(args.split).read_text())
    samples, images = load_samples(args.data)
    val = [s for s in samples if s.patient in set(split["val"])]

    single = load_model(args.single)
    ens = load_model(args.members)
    lg_single = member_logits(single, val, images)
    lg_ens = member_logits(ens, val, images)
    y_img = np.array([s.grade - 1 for s in val])
    m, v, n, k = lg_ens.shape
    t_ens = _fit_temperature()(lg_ens.reshape(m * v, n, k), y_img)

    res = {"single": {"file": args.single, **score(val, lg_single, single.temperature)},
           "ensemble": {"files": args.members, **score(val, lg_ens, t_ens)},
           "members_alone": [{"file": f, **score(val, lg_ens[i : i + 1], load_model(f).temperature)}
                             for i, f in enumerate(args.members)]}
    res["chosen"] = "ensemble" if res["ensemble"]["score"] > res["single"]["score"] else "single"
    res["sha256"] = {f: sha256_of(f) for f in args.members}
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    print(f"validation score (BA + QWK) / 2 with TTA: single {res['single']['score']:.3f}, "
          f"ensemble {res['ensemble']['score']:.3f} (temperature {t_ens:.3f}) -> {res['chosen']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
