#!/usr/bin/env python
"""Train the 2D disc/vertebra segmentation network on the real scans in ../shared/data.

    python scripts/train_segmentation.py --holdout 11 --out runs/fold11      # one cross-validation fold
    python scripts/train_segmentation.py --holdout none --out runs/all --ship   # shipped weights (all subjects)

Data: lumbar_t2_3d (discs only: partial-label loss, see segmentation_data.py) + lumbar_t2_slices (disc and
vertebra). radiospineomics has no licence file and is never used for training. Augmentations as in the
papers: rotation, scaling, elastic deformation, brightness/gamma, bias field, noise, blur, resolution loss,
no mirroring by default (anatomy is not symmetric anterior-posterior; --mirror to try it).

The held-out subject is evaluated (disc Dice on the whole volume, raw network output) at the end only
for logging; no checkpoint is selected on it. Seeds are fixed; results are printed and written to
``<out>/metrics.json``; ``--ship`` also copies the float16 weights into Resources/Models and prints their
SHA-256 for the model card and for ``DiscAnalysisLib/segmentation/network.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import segmentation_data as sd  # noqa: E402

from DiscAnalysisLib.resources import sha256_of  # noqa: E402
from DiscAnalysisLib.segmentation import network  # noqa: E402
from DiscAnalysisLib.segmentation.preprocess import equalise_standardise, scale_unit  # noqa: E402


# ------------------------------------------------------------------------------------------ augmentation
def augment(
    img: np.ndarray, tgt: np.ndarray, rng: np.random.Generator, crop: int, mirror_p: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Random geometric + intensity augmentation of one raw slice; returns (normalised image, target) crops."""
    h, w = img.shape
    # geometry: rotation, isotropic + anisotropic scale, translation (crop centre), elastic field
    ang = np.radians(rng.uniform(-15, 15))
    s = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    sy, sx = s * np.exp(rng.normal(0, 0.05)), s * np.exp(rng.normal(0, 0.05))
    # crop centre: biased toward labelled discs so most crops contain spine
    disc = np.argwhere(tgt == 1)
    if disc.size and rng.random() < 0.85:
        cy, cx = disc[rng.integers(len(disc))] + rng.normal(0, 25, 2)
    else:
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    yy, xx = np.mgrid[0:crop, 0:crop].astype(np.float32)
    yy -= crop / 2
    xx -= crop / 2
    if rng.random() < 0.5:
        for arr in (yy, xx):
            field = ndi.gaussian_filter(rng.normal(0, 1, (crop, crop)).astype(np.float32), 10)
            arr += field / (field.std() + 1e-6) * rng.uniform(1.0, 3.0)
    c, sn = np.cos(ang), np.sin(ang)
    src_y = (c * yy - sn * xx) / sy + cy
    src_x = (sn * yy + c * xx) / sx + cx
    coords = np.stack([src_y, src_x])
    unit = scale_unit(img)
    im = ndi.map_coordinates(unit, coords, order=1, mode="constant", cval=0.0)
    tg = ndi.map_coordinates(tgt, coords, order=0, mode="constant", cval=sd.IGNORE).astype(np.uint8)
    # outside the image: background is a fair label only for fully labelled classes; keep ignore
    if rng.random() < mirror_p:  # mirror anterior<->posterior (off by default: see --mirror)
        im, tg = im[:, ::-1], tg[:, ::-1]
    # intensity
    im = np.clip(im, 0, 1) ** np.exp(rng.normal(0, 0.3))
    if rng.random() < 0.5:  # smooth multiplicative bias field
        by, bx = np.mgrid[-1:1:crop * 1j, -1:1:crop * 1j]
        a = rng.normal(0, 0.15, 5)
        im = im * np.exp(a[0] * by + a[1] * bx + a[2] * by * bx + a[3] * by**2 + a[4] * bx**2)
    im = im * rng.uniform(0.8, 1.2) + rng.uniform(-0.05, 0.05)
    if rng.random() < 0.2:
        im = ndi.gaussian_filter(im, rng.uniform(0.4, 1.0))
    if rng.random() < 0.2:  # lower acquired resolution
        f = rng.uniform(1.3, 2.0)
        small = ndi.zoom(im, 1 / f, order=1)
        im = ndi.zoom(small, np.array(im.shape) / np.array(small.shape), order=1)[:crop, :crop]
        if im.shape != (crop, crop):
            im = np.pad(im, ((0, crop - im.shape[0]), (0, crop - im.shape[1])), mode="edge")
    im = im + rng.normal(0, rng.uniform(0, 0.05), im.shape)
    im = np.clip(im, 0, None)
    mx = im.max()
    im = equalise_standardise((im / mx).astype(np.float32) if mx > 0 else im.astype(np.float32))
    return np.ascontiguousarray(im, dtype=np.float32), np.ascontiguousarray(tg)


# ---------------------------------------------------------------------------------------------- loss
def partial_label_loss(logits, target, dice_weight: float = 0.5):
    """Marginal cross-entropy (label 3 = background OR vertebra) + soft Dice of disc and vertebra."""
    import torch

    logp = torch.log_softmax(logits, dim=1)
    valid = target != sd.IGNORE
    t = target.clone()
    t[~valid] = 0
    full = valid & (t < 3)
    nll_full = -torch.gather(logp, 1, torch.where(full, t, torch.zeros_like(t))[:, None].long())[:, 0]
    nll_notdisc = -torch.logsumexp(torch.stack([logp[:, 0], logp[:, 2]]), dim=0)
    nll = torch.where(full, nll_full, nll_notdisc)
    ce = (nll * valid).sum() / valid.sum().clamp(min=1)
    p = logp.exp()
    # disc Dice on every valid pixel (disc/not-disc is always known)
    gd = ((t == 1) & valid).float()
    pd = p[:, 1] * valid
    dice_d = 1 - (2 * (pd * gd).sum() + 1) / (pd.sum() + gd.sum() + 1)
    # vertebra Dice only on fully labelled pixels
    gv = ((t == 2) & full).float()
    pv = p[:, 2] * full
    if gv.sum() > 0:
        dice_v = 1 - (2 * (pv * gv).sum() + 1) / (pv.sum() + gv.sum() + 1)
    else:
        dice_v = torch.zeros((), device=logits.device)
    # CE keeps boundaries calibrated; the Dice terms (down-weighted: at full weight they biased the first
    # models toward thicker discs, +54 % volume on held-out subjects) help the small disc class.
    return ce + dice_weight * (dice_d + 0.5 * dice_v)


# ---------------------------------------------------------------------------------------------- main
def volume_disc_dice(net, subject: str) -> dict:
    """Raw-network disc Dice (all levels together) on one lumbar_t2_3d subject, via the library pipeline."""
    from DiscAnalysisLib.segmentation.api import SegmentationSettings, predict_classes

    img, lab = sd.load_3d_subject(subject)
    cls, _ = predict_classes(img, SegmentationSettings(), net=net)
    gt = sd.sitk.GetArrayFromImage(lab) > 0
    pr = cls == network.DISC
    return {"subject": subject, "disc_dice_raw": float(2 * (gt & pr).sum() / max(gt.sum() + pr.sum(), 1))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--holdout", default="none", help="lumbar_t2_3d subject held out (11, 20, 25, 42) or 'none'")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--iters", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png-fraction", type=float, default=0.15, help="share of samples from lumbar_t2_slices")
    ap.add_argument("--sudirman-fraction", type=float, default=0.3,
                    help="share of samples from the pfirrmann_sudirman training patients (weak box labels)")
    ap.add_argument("--mirror", type=float, default=0.0, help="probability of an anterior-posterior mirror")
    ap.add_argument("--dice-weight", type=float, default=0.5)
    ap.add_argument("--png-boundary-ignore", type=int, default=2,
                    help="pixels on each side of lumbar_t2_slices disc outlines left out of the loss")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these weights (float16 state dict of the same architecture) instead of a random "
                         "initialisation: continued training, e.g. a second, lower learning-rate cycle")
    ap.add_argument("--ship", action="store_true", help="copy the weights into Resources/Models")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    train_subjects = [s for s in sd.SUBJECTS_3D if s != args.holdout]
    png_spacing = sd.estimate_png_spacing_mm()
    print(f"lumbar_t2_slices pixel size estimated from disc depth: {png_spacing:.3f} mm", flush=True)
    vol = [x for s in train_subjects for x in sd.samples_3d(s)]
    png = sd.samples_png(png_spacing, args.png_boundary_ignore)
    sud = sd.samples_sudirman() if args.sudirman_fraction > 0 else []
    print(f"weak-label slices from pfirrmann_sudirman training patients: {len(sud)}", flush=True)
    print(f"training slices: {len(vol)} from lumbar_t2_3d {train_subjects}, {len(png)} from lumbar_t2_slices", flush=True)
    wv = np.array([x.weight for x in vol])
    wv = wv / wv.sum()

    net = network.build_network()
    if args.init is not None:
        state = torch.load(args.init, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() for k, v in state.items()})
        print(f"initialised from {args.init} (sha256 {sha256_of(args.init)})", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters, pct_start=0.1)
    net.train()
    t0 = time.time()
    log = []
    running = None
    for it in range(1, args.iters + 1):
        xs, ys = [], []
        for _ in range(args.batch):
            u = rng.random()
            if u < args.png_fraction:
                smp = png[rng.integers(len(png))]
            elif u < args.png_fraction + args.sudirman_fraction and sud:
                smp = sud[rng.integers(len(sud))]
            else:
                smp = vol[rng.choice(len(vol), p=wv)]
            x, y = augment(smp.image, smp.target, rng, args.crop, args.mirror)
            xs.append(x)
            ys.append(y)
        xb = torch.from_numpy(np.stack(xs))[:, None]
        yb = torch.from_numpy(np.stack(ys).astype(np.int64))
        loss = partial_label_loss(net(xb), yb, args.dice_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if it % 50 == 0 or it == args.iters:
            el = time.time() - t0
            print(f"iter {it}/{args.iters} loss {running:.4f} ({el / it:.2f} s/iter, {el / 60:.1f} min)", flush=True)
            log.append({"iter": it, "loss": running})
        if it % 500 == 0:
            torch.save({k: v.half() for k, v in net.state_dict().items()}, args.out / "weights_partial.pt")

    net.eval()
    weights = args.out / "weights.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, weights)
    sha = sha256_of(weights)
    metrics = {
        "holdout": args.holdout,
        "train_subjects": train_subjects,
        "png_spacing_mm": png_spacing,
        "args": {k: str(v) for k, v in vars(args).items()},
        "minutes": (time.time() - t0) / 60,
        "loss_log": log,
        "weights_sha256": sha,
        "init_sha256": sha256_of(args.init) if args.init is not None else None,
    }
    if args.holdout != "none":
        # reload the float16 weights exactly as shipped weights would be
        netr = network.load_model(str(weights), sha)
        metrics["holdout_raw"] = volume_disc_dice(netr, args.holdout)
        print("held-out raw disc Dice:", metrics["holdout_raw"], flush=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"weights {weights} sha256 {sha} ({weights.stat().st_size / 1e6:.2f} MB)")
    if args.ship:
        dest = ROOT / "Resources" / network.WEIGHTS_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, dest)
        print(f"shipped to {dest}; set WEIGHTS_SHA256 = \"{sha}\" in DiscAnalysisLib/segmentation/network.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
