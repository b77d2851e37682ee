"""The lowest-disc judge: a learned second opinion on which disc candidate is L5-S1 (session-5 experiment,
not part of the product: it did not pass its shipping rule, docs/validation.md, Issue 4, session 5).

The level names are counted upward from L5-S1, so everything rests on which disc candidate is L5-S1. Two
things go wrong at the bottom of the column (docs/validation.md, Issue 4, "Where the level naming fails"):
a thin, degenerated L5-S1 looks like the small rudimentary S1-S2 disc inside the sacrum, which the size/depth
rule of ``assign_levels`` drops; and a large S1-S2 remnant or a pelvic structure below the spine passes that
rule and is named L5-S1. Either shifts every name by one level. No hand-made feature of the candidate
separates these cases; the anatomy around it might (a lumbar body above a real L5-S1, the sacrum above a
remnant).

The judge is a small CNN (0.6 MB) that sees a wide crop around a disc candidate (three disc spacings, so the
bodies above and below are in view) on the candidate's own sagittal slice and returns a logit for "this is
L5-S1". :func:`make_check` turns it into the question ``assign_levels`` can ask about the lowest candidate
(its ``lowest_is_l5s1`` argument): does it score higher than the disc above it? Comparing two crops of the
same image makes the answer insensitive to a shift of the scores on another scanner. Where the size/depth rule
would drop the lowest candidate, a "yes" keeps it (V1); where the rule keeps it, a "no" drops it (V2,
``PostprocessSettings.judge_drops_kept``).

Trained by ``scripts/train_lowest_disc_judge.py`` on the pfirrmann_sudirman weak-label (training) patients
only; evaluated by ``scripts/analyse_sudirman_levels.py --judge`` and ``scripts/check_lowest_disc_judge.py``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Crop side in pixels and as a multiple of the median disc-to-disc distance.
CROP_PX = 64
CROP_SPACINGS = 3.0


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


def load_judge(path: str):
    """The judge network from a weights file written by train_lowest_disc_judge.py, in eval mode."""
    import torch

    net = build_network()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    return net


def scores(net, crops: np.ndarray) -> np.ndarray:
    """Logits "this candidate is L5-S1" for crops (n, CROP_PX, CROP_PX)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(crops[:, None], dtype=np.float32))
        return net(x)[:, 0].numpy().astype(float)


def make_check(net, slices: np.ndarray, spacing, margin: float = 0.0, settings=None):
    """The question ``assign_levels`` asks (its ``lowest_is_l5s1`` argument): given the disc candidates top to
    bottom, does the judge score the lowest one higher than the disc above it? ``slices``: the canonical
    stack (n, rows, cols); ``spacing``: (lr, si, ap) in mm.

    ``margin`` (logits, session 7): the judge overrides the size/depth rule only when it is that sure. With
    d = score(lowest) - score(disc above): where the rule would drop the lowest candidate (``assign_levels``
    then asks whether to keep it) the answer is d > margin; where the rule keeps it (the question is whether to
    drop it) the answer is d > -margin, i.e. it is dropped only if d < -margin. margin 0 is the session-5 judge.
    ``settings``: the PostprocessSettings the rule runs with (default settings when None)."""
    from DiscAnalysisLib.segmentation.postprocess import PostprocessSettings, remnant_rule_drops

    sp = np.asarray(spacing, dtype=float)
    pp = settings or PostprocessSettings()

    def lowest_is_l5s1(discs) -> bool:
        gap = disc_spacing_mm(np.array([d.centroid_mm for d in discs]))
        crops = []
        for d in (discs[-1], discs[-2]):
            k = int(np.clip(round(d.centroid_mm[0] / sp[0]), 0, len(slices) - 1))
            crops.append(crop(slices[k], (sp[1], sp[2]), (d.centroid_mm[1], d.centroid_mm[2]), gap))
        low, above = scores(net, np.stack(crops))
        if margin == 0.0:
            return bool(low > above)
        threshold = margin if remnant_rule_drops(discs, pp) else -margin
        return bool(low - above > threshold)

    return lowest_is_l5s1
