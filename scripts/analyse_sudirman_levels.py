#!/usr/bin/env python
"""Why level naming fails on pfirrmann_sudirman: the failures by cause, and what the sacral-remnant rule does.

    DISCANALYSIS_DATA=../shared/data python scripts/analyse_sudirman_levels.py [--cache /tmp/sud_probs.pkl]

For the weak-label (training) and the held-out patients separately: the network runs once per image (shipped
weights; ``--cache`` keeps the probabilities), then the level assignment runs with the size/depth rule of
the post-processing and with the sacral-remnant rule switched off (``sacral_remnant_*`` and
``uncertain_size_fraction`` = 0). A case is right when each of the five lowest disc boxes holds exactly one
predicted disc, of its level (as ``evaluate_segmentation.py``). Printed: % right with and without the rule,
how often the rule fires and is right, the failures with their post-processing flags, and for each image
where the rule decides the outcome the features a better rule would have to use (size, depth and
confidence of the dropped candidate relative to the discs above, and its tilt against the disc above).
``--judge shipped`` (or a weights file of ``train_lowest_disc_judge.py``) adds the lowest-disc judge
(``DiscAnalysisLib.segmentation.judge``, both questions, ``--margin``; the product's ``segment_image`` does the
same since session 7) and reports its decisions against the rule alone.
Nothing here changes the product; docs/validation.md (Issue 4, Sudirman) has the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import segmentation_data as sd  # noqa: E402

from DiscAnalysisLib import levels as lv  # noqa: E402
from DiscAnalysisLib.image_io import read_image  # noqa: E402
from DiscAnalysisLib.progress import Progress  # noqa: E402
from DiscAnalysisLib.segmentation import (  # noqa: E402
    api,
    judge,  # noqa: E402
    network,
)
from DiscAnalysisLib.segmentation.postprocess import (  # noqa: E402
    JUDGE_DROPPED_FLAG,
    JUDGE_KEPT_FLAG,
    LEVEL_DOUBT_FLAG,
    PostprocessSettings,
    argmax_classes,
    assign_levels,
    find_discs,
)
from DiscAnalysisLib.segmentation.preprocess import from_canonical  # noqa: E402

REMNANT_FLAG = "small_disc_below_L5-S1_ignored"


def probabilities(cache: Path | None) -> dict:
    if cache and cache.exists():
        with open(cache, "rb") as fh:
            return pickle.load(fh)
    s = api.SegmentationSettings()
    net = network.load_model(s.weights_path, s.weights_sha256)
    out: dict = {}
    for split in ("train", "test"):
        out[split] = {}
        for p in sd.sudirman_images(split):
            img = read_image(p)
            boxes = sd.sudirman_disc_boxes(p, (img.GetSize()[1], img.GetSize()[0]))
            if len(boxes) < 5:
                continue
            stack, probs = api._infer(img, s, net, Progress.wrap(None))
            out[split][p.name] = {"probs": probs.astype(np.float16), "stack": stack, "boxes": boxes}
    if cache:
        with open(cache, "wb") as fh:
            pickle.dump(out, fh)
    return out


def right_levels(entry: dict, pp: PostprocessSettings, judge_net=None, margin: float = 0.0) -> tuple[bool, list[str]]:
    stack = entry["stack"]
    check = None if judge_net is None else judge.make_check(judge_net, stack.slices, stack.spacing_mm, margin, pp)
    labels_c, _, flags = assign_levels(entry["probs"].astype(np.float32), stack.spacing_mm, pp, lowest_is_l5s1=check)
    pred = from_canonical(entry["stack"], labels_c).squeeze()
    masks = {n: pred == lv.DISC_LABELS[n] for n in lv.DISCS}
    centres = [(n, ndi.center_of_mass(m)) for n, m in masks.items() if m.any()]
    ok = True
    for name, (r0, r1, c0, c1) in zip(lv.DISCS, entry["boxes"][-5:], strict=True):
        inside = [n for n, (r, c) in centres if r0 <= r <= r1 and c0 <= c <= c1]
        ok &= inside == [name]
    return ok, flags


def candidate_features(entry: dict, pp: PostprocessSettings) -> str:
    probs = entry["probs"].astype(np.float32)
    discs = find_discs(probs, entry["stack"].spacing_mm, pp, argmax_classes(probs))
    low, above = discs[-1], discs[:-1]
    tilt = np.degrees(np.arctan2(low.normal[2], low.normal[1]) - np.arctan2(above[-1].normal[2], above[-1].normal[1]))
    return (f"size {low.size / np.median([d.size for d in above]):.2f}, depth "
            f"{low.depth_mm / np.median([d.depth_mm for d in above]):.2f}, confidence {low.confidence:.2f}, "
            f"tilt vs disc above {tilt:+.0f} deg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the network probabilities (read or written)")
    ap.add_argument("--judge", default=None, help="'shipped' or weights of train_lowest_disc_judge.py: the lowest-disc "
                    "judge to add to the rule (default: the rule alone)")
    ap.add_argument("--margin", type=float, default=judge.MARGIN,
                    help="with --judge: its margin (judge.make_check; default the shipped one, 0 = session 5)")
    args = ap.parse_args()
    judge_net = None if not args.judge else judge.load_judge(None if args.judge == "shipped" else args.judge)
    shipped = PostprocessSettings()
    no_rule = dataclasses.replace(shipped, sacral_remnant_fraction=0.0, sacral_remnant_depth=0.0,
                                  uncertain_size_fraction=0.0)
    for split, entries in probabilities(args.cache).items():
        res = {n: (right_levels(e, shipped, judge_net, args.margin), right_levels(e, no_rule)[0]) for n, e in entries.items()}
        n = len(res)
        ok = sum(r[0][0] for r in res.values())
        ok_off = sum(r[1] for r in res.values())
        fired = [k for k, r in res.items() if REMNANT_FLAG in r[0][1]]
        print(f"{split}: {n} images; all five levels right {ok} ({100 * ok / n:.1f} %) shipped, {ok_off} "
              f"({100 * ok_off / n:.1f} %) without the remnant rule; the rule fired on {len(fired)}: right with it "
              f"{sum(res[k][0][0] for k in fired)}, right without it {sum(res[k][1] for k in fired)}")
        if judge_net is not None:
            plain = {k: right_levels(e, shipped)[0] for k, e in entries.items()}
            for flag in (JUDGE_KEPT_FLAG, JUDGE_DROPPED_FLAG):
                hit = sorted(k for k, r in res.items() if flag in r[0][1])
                print(f"  {flag} on {len(hit)} images, all five levels right on {sum(res[k][0][0] for k in hit)} "
                      f"of them (rule alone: {sum(plain[k] for k in hit)})")
            print(f"  the rule alone: all five levels right on {sum(plain.values())} images")
        doubt = [k for k, r in res.items() if LEVEL_DOUBT_FLAG in r[0][1]]
        wrong = [k for k, r in res.items() if not r[0][0]]
        print(f"  naming-doubt flag on {len(doubt)} images, {sum(not res[k][0][0] for k in doubt)} of them misnamed; "
              f"it marks {sum(k in set(doubt) for k in wrong)} of the {len(wrong)} misnamed images")
        for k, ((good, flags), _) in sorted(res.items()):
            if not good:
                print(f"  wrong: {k}  flags {','.join(flags)}")
        for k in fired:
            (good, _), good_off = res[k]
            if good != good_off:
                verdict = "dropped a remnant (right)" if good else "dropped the real L5-S1 (wrong)"
                print(f"  decides: {k[:4]} {verdict}: {candidate_features(entries[k], shipped)}")


if __name__ == "__main__":
    main()
