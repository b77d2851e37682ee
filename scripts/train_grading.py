#!/usr/bin/env python
"""Train the Pfirrmann grading CNN on the Sudirman / LSMA-PQR data set (CPU, fixed seeds).

    python scripts/train_grading.py --data ../shared/data/pfirrmann_sudirman

Writes ``Resources/Models/pfirrmann_grading.pt`` (a weights-only state dict plus metadata) and
``Resources/Models/pfirrmann_split.json`` (the patient IDs of the train/val/test split; IDs only, no data),
and prints the SHA-256 to paste into ``MODEL_FILES`` of ``DiscAnalysisLib/grading/predict.py``. Another seed
of the same recipe: ``--seed N --split-seed 0 --out runs/...`` (the split depends only on ``--split-seed``);
scripts/build_grading_ensemble.py decides on the validation patients whether to ship an ensemble. The test patients are never
seen here: model selection and temperature scaling use the validation patients only.

Recipe (see docs/validation.md): patient-level 70/10/20 split stratified by each patient's rarest grade;
disc-centred crops scaled to the disc width (DiscAnalysisLib.grading.crop); on-the-fly geometric and
intensity augmentation; focal loss with inverse-class-frequency weights and gamma 2 (as in the
stronger-baseline paper) plus a small ordinal (squared EMD) term; AdamW with a one-cycle cosine schedule;
the epoch with the best validation (balanced accuracy + quadratic kappa) / 2 is kept; a temperature is
fitted on the validation logits (with test-time augmentation) so that the reported confidence is calibrated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscAnalysisLib.grading import metrics  # noqa: E402
from DiscAnalysisLib.grading.augment import TTA_VARIANTS, random_crop  # noqa: E402
from DiscAnalysisLib.grading.crop import CROP_SIZE, FOV_FACTOR, extract_crop  # noqa: E402
from DiscAnalysisLib.grading.model import CHANNELS, build_model, focal_loss, ordinal_emd_loss  # noqa: E402
from DiscAnalysisLib.grading.sudirman import crop_width, load_samples, stratified_patient_split  # noqa: E402

log = logging.getLogger("train_grading")


def crops_for(samples, images, variants, size, fov):
    out = np.zeros((len(variants), len(samples), 1, size, size), np.float32)
    for j, s in enumerate(samples):
        for i, (angle, scale, flip) in enumerate(variants):
            out[i, j, 0], _ = extract_crop(
                images[s.image_path], s.center_rc, crop_width(s), size=size, fov_factor=fov,
                angle_deg=angle, scale=scale, flip=flip,
            )
    return out


def logits_of(model, crops, torch, batch=256):
    model.eval()
    res = []
    with torch.no_grad():
        for v in crops:  # variants
            res.append(np.concatenate([model(torch.from_numpy(v[i : i + batch])).numpy() for i in range(0, len(v), batch)]))
    return np.stack(res)  # (variants, N, 5)


def fit_temperature(logits_tta: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the NLL of the TTA-averaged probabilities (grid search, robust)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 120)):
        z = logits_tta / t
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        pm = p.mean(0)
        nll = -np.mean(np.log(pm[np.arange(len(y)), y] + 1e-12))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"))
    ap.add_argument("--out", default=str(REPO / "Resources" / "Models" / "pfirrmann_grading.pt"))
    ap.add_argument("--split-out", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--epochs", type=int, default=45)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--gamma", type=float, default=2.0, help="focal-loss gamma")
    ap.add_argument("--alpha-power", type=float, default=1.0, help="class weights = (1/frequency) ** power")
    ap.add_argument("--ordinal-weight", type=float, default=0.5, help="weight of the squared-EMD ordinal term")
    ap.add_argument("--size", type=int, default=CROP_SIZE)
    ap.add_argument("--fov", type=float, default=FOV_FACTOR)
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights' initialisation, batch order and augmentation")
    ap.add_argument("--split-seed", type=int, default=0,
                    help="seed of the patient split; keep 0 (the shipped split) when training another seed, "
                         "otherwise the shipped test patients end up in training")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.time()
    samples, images = load_samples(args.data)
    split = stratified_patient_split(samples, seed=args.split_seed)
    Path(args.split_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.split_out).write_text(json.dumps({"seed": args.split_seed, "fractions": [0.7, 0.1, 0.2], **split}, indent=1) + "\n")
    part = {k: [s for s in samples if s.patient in set(v)] for k, v in split.items()}
    log.info("loaded %d discs of %d images in %.1f s; split %s", len(samples), len(images), time.time() - t0,
             {k: len(v) for k, v in part.items()})
    train, val = part["train"], part["val"]
    y_train = np.array([s.grade - 1 for s in train])
    y_val = np.array([s.grade - 1 for s in val])
    counts = np.bincount(y_train, minlength=5).astype(float)
    alpha = (1.0 / counts) ** args.alpha_power
    alpha = alpha / np.sum(alpha * counts) * counts.sum()  # mean weight over training discs = 1
    log.info("train grade counts %s, focal alpha %s", counts.astype(int).tolist(), np.round(alpha, 2).tolist())
    alpha_t = torch.tensor(alpha, dtype=torch.float32)

    val_crops = crops_for(val, images, TTA_VARIANTS[:1], args.size, args.fov)

    model = build_model(CHANNELS)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = int(np.ceil(len(train) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15)

    best = (-np.inf, None, -1)
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train))
        tl, te = 0.0, time.time()
        for b in range(steps_per_epoch):
            idx = order[b * args.batch : (b + 1) * args.batch]
            x = np.stack([
                random_crop(rng, images[train[i].image_path], train[i].center_rc, crop_width(train[i]), size=args.size, fov_factor=args.fov)
                for i in idx
            ])[:, None]
            xt, yt = torch.from_numpy(x), torch.from_numpy(y_train[idx])
            logits = model(xt)
            loss = focal_loss(logits, yt, alpha_t, args.gamma)
            if args.ordinal_weight > 0:
                loss = loss + args.ordinal_weight * ordinal_emd_loss(logits, yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss.detach()) * len(idx)
        lv = logits_of(model, val_crops, torch)[0]
        pred = lv.argmax(1)
        ba = metrics.balanced_accuracy(y_val + 1, pred + 1)
        qwk = metrics.cohen_kappa(y_val + 1, pred + 1, weights="quadratic")
        score = (ba + qwk) / 2
        if score > best[0]:
            best = (score, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        log.info("epoch %3d loss %.4f val BA %.3f QWK %.3f score %.3f (best %.3f @%d) %.1f s",
                 epoch, tl / len(train), ba, qwk, score, best[0], best[2], time.time() - te)

    model.load_state_dict(best[1])
    val_tta = crops_for(val, images, TTA_VARIANTS, args.size, args.fov)
    lt = logits_of(model, val_tta, torch)
    temperature = fit_temperature(lt, y_val)
    p = np.exp(lt / temperature - (lt / temperature).max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).mean(0)
    log.info("kept epoch %d; temperature %.3f; val with TTA: BA %.3f QWK %.3f", best[2], temperature,
             metrics.balanced_accuracy(y_val + 1, p.argmax(1) + 1),
             metrics.cohen_kappa(y_val + 1, p.argmax(1) + 1, weights="quadratic"))

    payload = {
        "state_dict": {k: v.float().contiguous() for k, v in best[1].items()},
        "channels": list(CHANNELS),
        "crop_size": int(args.size),
        "fov_factor": float(args.fov),
        "temperature": float(temperature),
        "epoch": int(best[2]),
        "seed": int(args.seed),
        "split_seed": int(args.split_seed),
        "recipe": " ".join(sys.argv[1:]) or "defaults",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    from DiscAnalysisLib.resources import sha256_of

    log.info("wrote %s (%.2f MB), SHA-256 %s; total %.1f min", out, out.stat().st_size / 1e6, sha256_of(out), (time.time() - t0) / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
