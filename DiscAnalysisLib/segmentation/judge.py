"""The lowest-disc judge: a learned second opinion on which disc candidate is L5-S1.

The level names are counted upward from L5-S1, so everything rests on which disc candidate is L5-S1. Two
things go wrong at the bottom of the column (docs/validation.md, Issue 4, "Where the level naming fails"):
a thin, degenerated L5-S1 looks like the small rudimentary S1-S2 disc inside the sacrum, which the size/depth
rule of ``assign_levels`` drops; and a large S1-S2 remnant or a pelvic structure below the spine passes that
rule and is named L5-S1. Either shifts every name by one level. No hand-made feature of the candidate
separates these cases; the anatomy around it does (a lumbar body above a real L5-S1, the sacrum above a
remnant).

The judge is a small CNN (0.6 MB, ``Resources/Models/lowest_disc_judge.pt``) that sees a wide crop around a
disc candidate (three disc spacings, so the bodies above and below are in view) on the candidate's own sagittal
slice and returns a logit for "this is L5-S1". :func:`make_check` turns it into the question ``assign_levels``
asks about the lowest candidate (its ``lowest_is_l5s1`` argument): does it score higher than the disc above it?
Comparing two crops of the same image makes the answer insensitive to a shift of the scores on another scanner.
It overrides the size/depth rule only when it is clearly sure (:data:`MARGIN`): a lowest candidate the rule
would drop is kept, and one the rule keeps is dropped, only when the score difference exceeds the margin in the
judge's direction. Both overrides leave an image flag (``postprocess.JUDGE_KEPT_FLAG`` /
``JUDGE_DROPPED_FLAG``).

Trained by ``scripts/train_lowest_disc_judge.py`` on the pfirrmann_sudirman weak-label (training) patients
only; the margin was chosen out of fold on those patients and the shipped judge checked on held-out Sudirman
patients, lumbar_t2_3d, radiospineomics, BianqueNet and the demo phantom (docs/validation.md, Issue 4,
sessions 5 and 7).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import ndimage as ndi

#: Crop side in pixels and as a multiple of the median disc-to-disc distance.
CROP_PX = 64
CROP_SPACINGS = 3.0
#: The shipped judge (``scripts/train_lowest_disc_judge.py``; model card ``Resources/Models/README.md``).
WEIGHTS_FILE = "Models/lowest_disc_judge.pt"
WEIGHTS_SHA256 = "707bc4cf2a7be639355c7ddae489521fe4462fe4c29200206f46203b934e3886"
#: Logit margin of the shipped judge: the largest of {0, 0.5, 1, 1.5, 2, 3, 4} that still named at least 5 more
#: of the 311 training images right than the rule alone, out of fold (290 against 280; docs/validation.md).
MARGIN = 4.0


def disc_spacing_mm(centroids_mm: np.ndarray) -> float:
    """Median in-plane distance between consecutive disc centroids (rows: discs top to bottom; (lr, si, ap) mm)."""
    c = np.asarray(centroids_mm, dtype=float)
    if len(c) < 2:
        raise ValueError("at least two discs are needed for the disc spacing")
    return float(np.median(np.linalg.norm(np.diff(c[:, 1:], axis=0), axis=1)))


def crop(
    slice2d: np.ndarray,
    spacing_rc_mm: tuple[float, float],
    centre_rc_mm: tuple[float, float],
    spacing_between_discs_mm: float,
    *,
    angle_deg: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """A CROP_PX x CROP_PX crop (rows superior->inferior, columns anterior->posterior), intensities 0..1.

    ``centre_rc_mm``: the candidate's centre (row, column) in mm on this slice; the crop spans
    CROP_SPACINGS disc spacings (times ``scale``), optionally rotated by ``angle_deg`` (augmentation).
    Intensities are scaled by the crop's own 1st and 99th percentiles, so no absolute scale is assumed.
    """
    side_mm = CROP_SPACINGS * spacing_between_discs_mm * scale
    t = (np.arange(CROP_PX) - (CROP_PX - 1) / 2) * side_mm / CROP_PX
    rr, cc = np.meshgrid(t, t, indexing="ij")
    a = np.radians(angle_deg)
    r_mm = centre_rc_mm[0] + np.cos(a) * rr - np.sin(a) * cc
    c_mm = centre_rc_mm[1] + np.sin(a) * rr + np.cos(a) * cc
    coords = np.stack([r_mm / spacing_rc_mm[0], c_mm / spacing_rc_mm[1]])
    out = ndi.map_coordinates(np.asarray(slice2d, dtype=np.float32), coords, order=1, mode="constant", cval=0.0)
    lo, hi = np.percentile(out, [1, 99])
    return np.clip((out - lo) / max(hi - lo, 1e-6), 0, 1.5).astype(np.float32)


def build_network():
    import torch.nn as nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 1))


def load_judge(path: str | None = None, expected_sha256: str | None = None):
    """The judge network in eval mode: the shipped file (SHA-256 checked) when ``path`` is None, else a file
    written by train_lowest_disc_judge.py (checked when ``expected_sha256`` is given)."""
    from ..errors import InputError, require
    from ..resources import sha256_of, verified_path

    torch = require("torch", "Segmentation", "pip install torch")
    if path is None:
        path = str(verified_path(WEIGHTS_FILE, WEIGHTS_SHA256))
    elif expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise InputError(f"Judge weights {path} failed their SHA-256 check; the file is corrupted or was replaced.")
    net = build_network()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise InputError(f"Weights file {path} does not match the lowest-disc judge ({str(exc)[:200]}).") from None
    return for_inference(net.eval())


def for_inference(net):
    """The network in eval mode with each BatchNorm folded into the convolution before it and the weights in
    channels-last layout: the same function (logits agree to ~1e-6) in about 60 % of the time on CPU
    (Testing/benchmarks/bench_segmentation.py). ``scores`` feeds it channels-last input."""
    import torch
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(seq):
        mods, out = list(seq), []
        while mods:
            m = mods.pop(0)
            if isinstance(m, nn.Sequential):
                out.append(fold(m))
            elif isinstance(m, nn.Conv2d) and mods and isinstance(mods[0], nn.BatchNorm2d):
                out.append(fuse_conv_bn_eval(m, mods.pop(0)))
            else:
                out.append(m)
        return nn.Sequential(*out)

    return fold(net.eval()).eval().to(memory_format=torch.channels_last)


@cache
def shipped_judge():
    """The shipped judge, loaded once per process."""
    return load_judge()


def scores(net, crops: np.ndarray) -> np.ndarray:
    """Logits "this candidate is L5-S1" for crops (n, CROP_PX, CROP_PX)."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(crops[:, None], dtype=np.float32))
        return net(x.to(memory_format=torch.channels_last))[:, 0].numpy().astype(float)


def make_check(net, slices: np.ndarray, spacing, margin: float = MARGIN, settings=None):
    """The question ``assign_levels`` asks (its ``lowest_is_l5s1`` argument): given the disc candidates top to
    bottom, does the judge score the lowest one higher than the disc above it? ``slices``: the canonical
    stack (n, rows, cols); ``spacing``: (lr, si, ap) in mm.

    ``margin`` (logits): the judge overrides the size/depth rule only when it is that sure. With
    d = score(lowest) - score(disc above): where the rule would drop the lowest candidate (``assign_levels``
    then asks whether to keep it) the answer is d > margin; where the rule keeps it (the question is whether to
    drop it) the answer is d > -margin, i.e. it is dropped only if d < -margin. margin 0 is the session-5 judge.
    ``settings``: the PostprocessSettings the rule runs with (default settings when None)."""
    from .postprocess import PostprocessSettings, remnant_rule_drops

    sp = np.asarray(spacing, dtype=float)
    pp = settings or PostprocessSettings()

    known: dict[tuple, float] = {}  # score per (candidate, disc spacing): assign_levels may ask twice per image

    def lowest_is_l5s1(discs) -> bool:
        gap = disc_spacing_mm(np.array([d.centroid_mm for d in discs]))
        keys = [(*map(float, d.centroid_mm), gap) for d in (discs[-1], discs[-2])]
        todo = [(key, d) for key, d in zip(keys, (discs[-1], discs[-2]), strict=True) if key not in known]
        if todo:
            crops = []
            for _, d in todo:
                k = int(np.clip(round(d.centroid_mm[0] / sp[0]), 0, len(slices) - 1))
                crops.append(crop(slices[k], (sp[1], sp[2]), (d.centroid_mm[1], d.centroid_mm[2]), gap))
            known.update(zip((key for key, _ in todo), scores(net, np.stack(crops)), strict=True))
        low, above = (known[key] for key in keys)
        if margin == 0.0:
            return bool(low > above)
        threshold = margin if remnant_rule_drops(discs, pp) else -margin
        return bool(low - above > threshold)

    return lowest_is_l5s1
