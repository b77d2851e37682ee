#!/usr/bin/env python
"""Train the lowest-disc judge (``DiscAnalysisLib.segmentation.judge``) on pfirrmann_sudirman weak labels.

    DISCANALYSIS_DATA=../shared/data python scripts/train_lowest_disc_judge.py --cache runs/sud_probs.pkl \
        --out runs/judge [--cv 5 --no-final]

Data: the weak-label (training) patients of the segmentation split only (patient number mod 5 in {0, 1, 2});
the held-out patients are never read here. The shipped segmentation network runs once per image (``--cache``
keeps its probabilities, shared with ``analyse_sudirman_levels.py``); every disc candidate that
``find_discs`` returns is labelled with the annotation boxes: positive when its centre lies in the lowest
(L5-S1) box; negative when it lies in the L4-L5 or L3-L4 box or below the L5-S1 box; other candidates are
not used. One more negative per image is a crop one disc spacing below L5-S1 (the sacrum seen from where a
remnant disc would be). The recipe is fixed (see docs/validation.md, Issue 4, session 5): 64 x 64 crops of
three disc spacings, rotation +-15 deg, scale 0.85-1.15, centre jitter 0.1 spacing, gamma 0.7-1.4, noise;
class-balanced binary cross-entropy, Adam 1e-3, 30 epochs, seed 0, last epoch kept.

``--cv K`` first trains K networks on patient folds of the training images and reports, out of fold, how
often the judge's pairwise decision (lowest candidate vs the disc above it) matches the boxes where the
size/depth rule fires, and on how many images all five levels are named right by the rule alone, with the
judge where the rule fires (V1), and with V1 plus the judge's veto on a lowest candidate that the rule keeps
(V2: both questions; ``PostprocessSettings.judge_drops_kept``); then the final network is trained on all
training images and written to ``<out>/lowest_disc_judge.pt`` (evaluate it with ``analyse_sudirman_levels.py
--judge`` and ``check_lowest_disc_judge.py``). ``--save-folds`` keeps the fold networks and ``--margins`` counts,
out of fold, the images named right with each judge margin (how the shipped margin was chosen). The shipped
``Resources/Models/lowest_disc_judge.pt`` is the final network of this recipe (session 5, seed 0; SHA-256 in
``judge.WEIGHTS_SHA256``); the judge passed its shipping rule in session 7 with margin 4 (docs/validation.md,
Issue 4, sessions 5 and 7).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from analyse_sudirman_levels import probabilities, right_levels  # noqa: E402

from DiscAnalysisLib.resources import sha256_of  # noqa: E402
from DiscAnalysisLib.segmentation import judge  # noqa: E402
from DiscAnalysisLib.segmentation.postprocess import (  # noqa: E402
    PostprocessSettings,
    argmax_classes,
    find_discs,
    remnant_rule_drops,
)


def _in_box(r: float, c: float, box) -> bool:
    r0, r1, c0, c1 = box
    return r0 <= r <= r1 and c0 <= c <= c1


def candidates(entry: dict, pp: PostprocessSettings) -> list[dict]:
    """Disc candidates of one image with their box label (1 L5-S1, 0 other, None unused) and crop geometry."""
    probs = entry["probs"].astype(np.float32)
    stack = entry["stack"]
    sp = np.asarray(stack.spacing_mm, float)
    discs = find_discs(probs, stack.spacing_mm, pp, argmax_classes(probs))
    if len(discs) < 3:
        return []
    spacing = judge.disc_spacing_mm(np.array([d.centroid_mm for d in discs]))
    boxes = entry["boxes"][-5:]
    out = []
    for d in discs:
        r, c = d.centroid_mm[1] / sp[1], d.centroid_mm[2] / sp[2]
        if _in_box(r, c, boxes[-1]):
            label = 1
        elif r > boxes[-1][1] or any(_in_box(r, c, b) for b in boxes[-3:-1]):
            label = 0
        else:
            label = None
        if label is not None:
            out.append({"centre": (d.centroid_mm[1], d.centroid_mm[2]), "label": label, "spacing": spacing})
    # the sacrum seen from where a remnant disc would sit: one box-to-box step below the L5-S1 box
    centres = np.array([((b[0] + b[1]) / 2 * sp[1], (b[2] + b[3]) / 2 * sp[2]) for b in boxes[-2:]])
    below = centres[1] + (centres[1] - centres[0])
    if below[0] < stack.slices.shape[1] * sp[1]:
        out.append({"centre": tuple(below), "label": 0, "spacing": spacing})
    return out


def make_items(entries: dict, pp: PostprocessSettings) -> list[dict]:
    items = []
    for name, e in sorted(entries.items()):
        for c in candidates(e, pp):
            c.update(image=name, slice=e["stack"].slices[0], sp_rc=tuple(e["stack"].spacing_mm[1:]))
            items.append(c)
    return items


def augmented(item: dict, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.uniform(-0.1, 0.1, 2) * item["spacing"]
    x = judge.crop(item["slice"], item["sp_rc"], (item["centre"][0] + jitter[0], item["centre"][1] + jitter[1]),
                   item["spacing"], angle_deg=rng.uniform(-15, 15), scale=rng.uniform(0.85, 1.15))
    x = np.clip(x, 0, None) ** rng.uniform(0.7, 1.4)
    return (x + rng.normal(0, rng.uniform(0, 0.05), x.shape)).astype(np.float32)


def train(items: list[dict], epochs: int, seed: int, log=print):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = judge.build_network()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    y = np.array([it["label"] for it in items], float)
    pos_weight = torch.tensor((y == 0).sum() / max((y == 1).sum(), 1), dtype=torch.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for ep in range(epochs):
        net.train()
        order = rng.permutation(len(items))
        total = 0.0
        for b in range(0, len(order), 32):
            idx = order[b:b + 32]
            x = torch.from_numpy(np.stack([augmented(items[i], rng) for i in idx])[:, None])
            t = torch.from_numpy(y[idx].astype(np.float32))
            opt.zero_grad()
            loss = loss_fn(net(x)[:, 0], t)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if ep % 5 == 4 or ep == epochs - 1:
            log(f"  epoch {ep + 1}/{epochs} loss {total / len(items):.4f}")
    net.eval()
    return net


def pairwise_decisions(net, entries: dict, pp: PostprocessSettings) -> dict:
    """Where the size/depth rule would drop the lowest candidate: does the judge agree with the boxes?"""
    res = {"fired": 0, "rule_right": 0, "judge_right": 0, "cases": []}
    for name, e in sorted(entries.items()):
        probs = e["probs"].astype(np.float32)
        stack = e["stack"]
        discs = find_discs(probs, stack.spacing_mm, pp, argmax_classes(probs))
        if len(discs) < 3 or not remnant_rule_drops(discs, pp):
            continue
        sp = np.asarray(stack.spacing_mm, float)
        low_is_l5s1 = _in_box(discs[-1].centroid_mm[1] / sp[1], discs[-1].centroid_mm[2] / sp[2], e["boxes"][-1])
        keep = judge.make_check(net, stack.slices, stack.spacing_mm)(discs)
        res["fired"] += 1
        res["rule_right"] += int(not low_is_l5s1)
        res["judge_right"] += int(keep == low_is_l5s1)
        res["cases"].append((name, bool(low_is_l5s1), bool(keep)))
    return res


def whole_image_naming(net, entries: dict, pp: PostprocessSettings) -> dict:
    """Images with all five levels right: the rule alone, with the judge where the rule fires (V1), and V1 plus
    the judge's veto on a lowest candidate the rule keeps (V2)."""
    v1 = dataclasses.replace(pp, judge_drops_kept=False)
    out = {"rule": 0, "v1": 0, "v2": 0}
    for e in entries.values():
        out["rule"] += right_levels(e, pp)[0]
        out["v1"] += right_levels(e, v1, net)[0]
        out["v2"] += right_levels(e, pp, net)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the segmentation probabilities (read or written)")
    ap.add_argument("--out", type=Path, default=Path("runs/judge"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cv", type=int, default=0, help="patient folds for an out-of-fold check (0: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-final", action="store_true", help="with --cv: stop after the out-of-fold check")
    ap.add_argument("--save-folds", action="store_true", help="with --cv: keep each fold's network (<out>/fold<k>.pt)")
    ap.add_argument("--margins", type=float, nargs="*", default=(),
                    help="with --cv: also count the images named right by V2 with each of these judge margins")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pp = PostprocessSettings()
    entries = probabilities(args.cache)["train"]  # weak-label patients only
    items = make_items(entries, pp)
    n_pos = sum(it["label"] for it in items)
    print(f"{len(entries)} training images, {len(items)} crops ({n_pos} L5-S1, {len(items) - n_pos} other)", flush=True)
    report: dict = {"n_images": len(entries), "n_crops": len(items), "n_positive": n_pos, "epochs": args.epochs, "seed": args.seed}
    if args.cv:
        names = sorted(entries)
        fold_of = {n: i % args.cv for i, n in enumerate(names)}
        total = {"fired": 0, "rule_right": 0, "judge_right": 0, "cases": [], "naming": {"rule": 0, "v1": 0, "v2": 0},
                 "v2_margin": {str(m): 0 for m in args.margins}}
        for f in range(args.cv):
            t0 = time.time()
            net = train([it for it in items if fold_of[it["image"]] != f], args.epochs, args.seed)
            held = {n: e for n, e in entries.items() if fold_of[n] == f}
            r = pairwise_decisions(net, held, pp)
            for k in ("fired", "rule_right", "judge_right"):
                total[k] += r[k]
            total["cases"] += r["cases"]
            named = whole_image_naming(net, held, pp)
            for k, v in named.items():
                total["naming"][k] += v
            for m in args.margins:
                total["v2_margin"][str(m)] += sum(right_levels(e, pp, net, m)[0] for e in held.values())
            if args.save_folds:
                torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, args.out / f"fold{f}.pt")
            print(f"fold {f}: rule fired {r['fired']}, rule right {r['rule_right']}, judge right {r['judge_right']}; "
                  f"all five levels right (rule / V1 / V2) {named['rule']} / {named['v1']} / {named['v2']} of {len(held)} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        print(f"out of fold: rule fired on {total['fired']} images; the rule alone right on {total['rule_right']}, "
              f"rule + judge right on {total['judge_right']}; all five levels right (rule / V1 / V2) "
              f"{total['naming']['rule']} / {total['naming']['v1']} / {total['naming']['v2']} of {len(entries)}", flush=True)
        if args.margins:
            print("out of fold, all five levels right with V2 at margin m: "
                  + ", ".join(f"m {m}: {v}" for m, v in total["v2_margin"].items()), flush=True)
        report["cv"] = total
        if args.no_final:
            (args.out / "metrics_cv.json").write_text(json.dumps(report, indent=1) + "\n")
            return
    t0 = time.time()
    net = train(items, args.epochs, args.seed)
    report["train_seconds"] = round(time.time() - t0, 1)
    weights = args.out / "lowest_disc_judge.pt"
    tmp = weights.with_suffix(".tmp")
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, tmp)
    tmp.replace(weights)
    report["sha256"] = sha256_of(weights)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {weights} (SHA-256 {report['sha256']}, {weights.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
