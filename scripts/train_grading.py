#!/usr/bin/env python
"""Train the Pfirrmann grading CNN on the Sudirman / LSMA-PQR data set (CPU, fixed seeds).

    python scripts/train_grading.py --data ../shared/data/pfirrmann_sudirman

The shipped networks (since session 4) are the five cross-fitted ones of the 90-epoch recipe::

    for f in 0 1 2 3 4; do python scripts/train_grading.py --epochs 90 --cv-folds 5 --fold $f --swa-fraction 0.2 \
        --seed $f --split-seed 0 --threads 1 --out runs4/e90/grading_e90_fold$f.pt --split-out runs4/e90/split_fold$f.json; done
    python scripts/crossfit_grading.py --dirs runs4/e45 runs4/e90 --ship    # decision + copy to Resources/Models

Writes ``runs/grading/pfirrmann_grading.pt`` (a weights-only state dict plus metadata; ``--out``) and
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

Cross-fitting (session 4): ``--cv-folds 5 --fold i`` trains on the non-test patients (train + val of the
split) minus fold i (:func:`~DiscAnalysisLib.grading.sudirman.patient_folds`) and predicts fold i, which it
never saw. No epoch is selected on fold i (the last epoch is kept, so its predictions are honest
out-of-fold predictions); ``--swa-fraction F`` also writes ``<out stem>_swa.pt``, the mean of the weights at
the end of the last F of the epochs with batch-norm statistics recomputed on training crops. The fold's
logits (with TTA) of both are written to ``<out stem>_oof.npz`` for scripts/crossfit_grading.py. The test
patients are never used.
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
from DiscAnalysisLib.grading.model import (  # noqa: E402
    BACKBONES,
    CHANNELS,
    build_model,
    focal_loss,
    init_from_segmentation,
    ordinal_emd_loss,
)
from DiscAnalysisLib.grading.predict import fit_temperature  # noqa: E402
from DiscAnalysisLib.grading.sudirman import (  # noqa: E402
    crop_width,
    load_samples,
    patient_folds,
    stratified_patient_split,
)
from DiscAnalysisLib.resources import sha256_of  # noqa: E402

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")) / "pfirrmann_sudirman"))
    ap.add_argument("--out", default=str(REPO / "runs" / "grading" / "pfirrmann_grading.pt"))
    ap.add_argument("--split-out", default=str(REPO / "Resources" / "Models" / "pfirrmann_split.json"))
    ap.add_argument("--epochs", type=int, default=45)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--gamma", type=float, default=2.0, help="focal-loss gamma")
    ap.add_argument("--alpha-power", type=float, default=1.0, help="class weights = (1/frequency) ** power")
    ap.add_argument("--sample-power", type=float, default=0.0,
                    help="draw training discs with probability ~ (1/grade count) ** power (0 = each disc once per epoch)")
    ap.add_argument("--ordinal-weight", type=float, default=0.5, help="weight of the squared-EMD ordinal term")
    ap.add_argument("--size", type=int, default=CROP_SIZE)
    ap.add_argument("--channels", type=int, nargs=4, default=list(CHANNELS),
                    help="feature channels of the stem and the three blocks (the weights file records them)")
    ap.add_argument("--fov", type=float, default=FOV_FACTOR)
    ap.add_argument("--backbone", choices=BACKBONES, default="vgg",
                    help="vgg: the compact CNN trained from scratch; segenc: the segmentation U-Net's encoder")
    ap.add_argument("--init-segmentation", nargs="?", const="shipped", default=None, metavar="WEIGHTS",
                    help="with --backbone segenc: start the encoder from the segmentation weights (the shipped, "
                         "SHA-256-checked file unless a path is given)")
    ap.add_argument("--backbone-lr-factor", type=float, default=1.0,
                    help="learning rate of the segenc encoder relative to --lr (the classification head keeps --lr)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights' initialisation, batch order and augmentation")
    ap.add_argument("--split-seed", type=int, default=0,
                    help="seed of the patient split; keep 0 (the shipped split) when training another seed, "
                         "otherwise the shipped test patients end up in training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cv-folds", type=int, default=0, help="cross-fitting over the non-test patients (0 = off)")
    ap.add_argument("--fold", type=int, default=0, help="with --cv-folds: the fold to hold out and predict")
    ap.add_argument("--cv-seed", type=int, default=0, help="seed of the fold assignment")
    ap.add_argument("--swa-fraction", type=float, default=0.0,
                    help="also write the mean of the weights over the last fraction of epochs (<out>_swa.pt)")
    args = ap.parse_args(argv)
    if args.cv_folds and not 0 <= args.fold < args.cv_folds:
        ap.error("--fold must be in 0 .. --cv-folds - 1")
    if args.backbone != "segenc" and (args.init_segmentation or args.backbone_lr_factor != 1.0):
        ap.error("--init-segmentation and --backbone-lr-factor apply to --backbone segenc only")
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
    if args.cv_folds:
        folds = patient_folds(samples, split["train"] + split["val"], args.cv_folds, seed=args.cv_seed)
        held = set(folds[args.fold])
        pool = part["train"] + part["val"]
        train, val = [s for s in pool if s.patient not in held], [s for s in pool if s.patient in held]
        log.info("cross-fitting fold %d of %d: %d training discs, %d held-out discs of %d patients",
                 args.fold, args.cv_folds, len(train), len(val), len(held))
    y_train = np.array([s.grade - 1 for s in train])
    y_val = np.array([s.grade - 1 for s in val])
    counts = np.bincount(y_train, minlength=5).astype(float)
    alpha = (1.0 / counts) ** args.alpha_power
    alpha = alpha / np.sum(alpha * counts) * counts.sum()  # mean weight over training discs = 1
    log.info("train grade counts %s, focal alpha %s", counts.astype(int).tolist(), np.round(alpha, 2).tolist())
    alpha_t = torch.tensor(alpha, dtype=torch.float32)

    val_crops = crops_for(val, images, TTA_VARIANTS[:1], args.size, args.fov)

    model = build_model(tuple(args.channels), backbone=args.backbone)
    if args.init_segmentation:
        n = init_from_segmentation(model, None if args.init_segmentation == "shipped" else args.init_segmentation)
        log.info("encoder initialised from the segmentation weights (%d tensors)", n)
    head = list(model[-1].parameters())  # the final linear layer
    body = list(model.parameters())[: -len(head)]
    groups = [{"params": body, "lr": args.lr * args.backbone_lr_factor}, {"params": head, "lr": args.lr}]
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = int(np.ceil(len(train) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=args.epochs * steps_per_epoch, pct_start=0.15)

    best = (-np.inf, None, -1)
    n_swa = int(round(args.swa_fraction * args.epochs))
    swa_sum, swa_n = None, 0
    for epoch in range(args.epochs):
        model.train()
        if args.sample_power > 0:  # oversample rare grades: P(disc) ~ (1 / count of its grade) ** power
            w = (1.0 / counts[y_train]) ** args.sample_power
            order = rng.choice(len(train), size=len(train), replace=True, p=w / w.sum())
        else:
            order = rng.permutation(len(train))
        tl, te = 0.0, time.time()
        for b in range(steps_per_epoch):
            idx = order[b * args.batch : (b + 1) * args.batch]
            xt, yt = torch.from_numpy(training_batch(rng, train, images, idx, args)), torch.from_numpy(y_train[idx])
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
        if args.cv_folds or score > best[0]:  # cross-fitting: no selection on the held-out fold, keep the last epoch
            best = (score, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        if n_swa and epoch >= args.epochs - n_swa:
            sd = model.state_dict()
            swa_sum = {k: v.detach().clone().double() for k, v in sd.items()} if swa_sum is None else {
                k: swa_sum[k] + sd[k].detach().double() for k in sd}
            swa_n += 1
        log.info("epoch %3d loss %.4f val BA %.3f QWK %.3f score %.3f (best %.3f @%d) %.1f s",
                 epoch, tl / len(train), ba, qwk, score, best[0], best[2], time.time() - te)

    val_tta = crops_for(val, images, TTA_VARIANTS, args.size, args.fov)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = {"": (best[1], best[2])}
    if swa_n:
        model.load_state_dict({k: (v / swa_n).to(best[1][k].dtype) for k, v in swa_sum.items()})
        recompute_bn(model, train, images, rng, args, torch)
        weights["_swa"] = ({k: v.clone() for k, v in model.state_dict().items()}, best[2])
    oof = {}
    for suffix, (state, epoch) in weights.items():
        model.load_state_dict(state)
        lt = logits_of(model, val_tta, torch)
        temperature = fit_temperature(lt, y_val)
        p = np.exp(lt / temperature - (lt / temperature).max(-1, keepdims=True))
        p = (p / p.sum(-1, keepdims=True)).mean(0)
        log.info("%s epoch %d; temperature %.3f; %s with TTA: BA %.3f QWK %.3f", "swa up to" if suffix else "kept",
                 epoch, temperature, "held-out fold" if args.cv_folds else "val",
                 metrics.balanced_accuracy(y_val + 1, p.argmax(1) + 1),
                 metrics.cohen_kappa(y_val + 1, p.argmax(1) + 1, weights="quadratic"))
        payload = {
            "state_dict": {k: v.float().contiguous() for k, v in state.items()},
            "channels": list(args.channels),
            "backbone": args.backbone,
            "crop_size": int(args.size),
            "fov_factor": float(args.fov),
            "temperature": float(temperature),
            "epoch": int(epoch),
            "seed": int(args.seed),
            "split_seed": int(args.split_seed),
            "recipe": " ".join(sys.argv[1:]) or "defaults",
        }
        path = out.with_name(out.stem + suffix + out.suffix)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        oof["logits" + suffix] = lt
        log.info("wrote %s (%.2f MB), SHA-256 %s", path, path.stat().st_size / 1e6, sha256_of(path))
    if args.cv_folds:
        path = out.with_name(out.stem + "_oof.npz")
        np.savez(path, **oof, grade=y_val + 1, patient=np.array([s.patient for s in val]),
                 level=np.array([s.level for s in val]), image=np.array([Path(s.image_path).name for s in val]))
        log.info("wrote out-of-fold logits %s", path)
    log.info("total %.1f min", (time.time() - t0) / 60)
    return 0


def training_batch(rng, train, images, idx, args) -> np.ndarray:
    """(len(idx), 1, size, size) randomly augmented crops of the training discs ``idx``."""
    return np.stack([
        random_crop(rng, images[train[i].image_path], train[i].center_rc, crop_width(train[i]), size=args.size, fov_factor=args.fov)
        for i in idx
    ])[:, None]


def recompute_bn(model, train, images, rng, args, torch, batches: int = 30) -> None:
    """Batch-norm running statistics of averaged weights, from augmented training crops (as in SWA)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            idx = rng.choice(len(train), size=min(args.batch, len(train)), replace=False)
            model(torch.from_numpy(training_batch(rng, train, images, idx, args)))
    model.eval()


if __name__ == "__main__":
    raise SystemExit(main())
