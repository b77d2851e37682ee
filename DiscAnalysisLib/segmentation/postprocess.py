"""From network probabilities to named levels: components, cross-slice consistency, level counting, QC.

Works in the canonical sagittal layout (n_slices, rows superior -> inferior, cols anterior -> posterior)
with spacing (left-right, superior-inferior, anterior-posterior) in mm.

Level naming follows the voxel-based relaxometry pipeline: discs are counted upward from L5-S1, the
lowest disc above the sacrum. Discs above the fifth from the bottom (T12-L1, thoracic discs) are not
lumbar and are left out of the labelmap (their number is reported). Vertebral bodies are named from the
discs around them (L1 above L1-L2 ... L5 above L5-S1, S1 below L5-S1).

The sacrum counts as detected when vertebral-body tissue continues below the lowest disc for at least
:attr:`PostprocessSettings.sacrum_min_mm` without another disc, and the lowest disc does not touch the
lower edge of the field of view. Otherwise the lowest disc is still taken for L5-S1 and the result is
flagged ``sacrum_not_detected``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from .. import levels as lv
from .network import DISC, VERTEBRA

#: Image flag: a disc-like structure below the kept L5-S1 was dropped as the sacral remnant but was large and deep
#: enough to be a thin, degenerated L5-S1; check the level names (they may all be one level too low).
LEVEL_DOUBT_FLAG = "level_naming_uncertain:disc_below_L5-S1_dropped"
#: Image flags of the ``lowest_is_l5s1`` hook of assign_levels (the lowest-disc judge, :mod:`.judge`): it kept a
#: thin lowest disc that the size/depth rule would have dropped as the sacral remnant, or it dropped a lowest
#: candidate that the rule kept (a large remnant or a structure below the spine). Check the level names.
JUDGE_KEPT_FLAG = "lowest_disc_kept_by_judge"
JUDGE_DROPPED_FLAG = "lowest_candidate_dropped_by_judge"


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds of the post-processing (mm, mm^2, mm^3)."""

    #: The disc probability that draws the outline is averaged across neighbouring sagittal slices with a
    #: Gaussian of this sigma (mm): the anatomy changes smoothly from slice to slice, single-slice noise does
    #: not. Only the outline uses it; detection and level naming use the unsmoothed network output (smoothing
    #: by 3 mm there once merged two discs of a held-out subject). Applied when the slices are at most
    #: :attr:`slice_smoothing_max_spacing_mm` apart; 0 = off. Chosen together with the outline threshold by a
    #: fixed rule on the *training* subjects of each cross-validation fold (docs/validation.md).
    slice_smoothing_mm: float = 2.0
    #: Stacks with thicker slices are not smoothed (neighbours there show different anatomy; not validated).
    slice_smoothing_max_spacing_mm: float = 2.0
    #: Smallest disc component kept, as a fraction of the largest disc component (kept low: a collapsed disc
    #: is small, and dropping it would shift every level above it).
    min_disc_fraction: float = 0.05
    #: Disc outlines keep the voxels whose disc probability (averaged across slices, see slice_smoothing_mm) is
    #: at least this. The networks outline discs larger than the lumbar_t2_3d annotators (about +50 % volume at
    #: the argmax). With 2 mm slice smoothing, 0.9 was the best value on the *training* subjects of three of
    #: four cross-validation folds and over all folds' training subjects together (docs/validation.md).
    #: 0.5 ~ argmax.
    disc_outline_probability: float = 0.9
    #: Smallest disc component kept, absolute (mm^3 in 3D, mm^2 in 2D).
    min_disc_size: float = 40.0
    #: A disc must be present on at least this many adjacent sagittal slices (3D only, slices >= 2 mm apart count 1).
    min_disc_slices: int = 1
    #: Vertebral tissue below the lowest disc needed to call the sacrum detected (mm along the spine).
    sacrum_min_mm: float = 10.0
    #: Disc size (area in 2D / volume in 3D) below this fraction of the median disc is flagged implausible.
    small_fraction: float = 0.35
    #: ... and above this multiple of the median disc.
    large_factor: float = 2.5
    #: Disc pieces closer than this (mm, centroid to centroid in the sagittal plane) are one disc.
    merge_mm: float = 10.0
    #: Components whose anterior-posterior centre is further than this (mm) from the column are dropped.
    off_axis_mm: float = 30.0
    #: ... or further than this (mm) from the column's curve fitted through the larger discs (>= 4 of them).
    off_curve_mm: float = 20.0
    #: Components whose left-right centre is further than this (mm) from that of the larger discs are lateral
    #: structures (foramina, psoas), not a disc of the column (3D only).
    off_midline_mm: float = 15.0
    #: Components larger than this multiple of the median disc are tested for two fused discs (split).
    split_factor: float = 1.6
    #: Small disc-like components below the lowest full-size disc (the rudimentary S1-S2 disc of the sacrum)
    #: are dropped when smaller than this fraction of the median disc.
    sacral_remnant_fraction: float = 0.25
    #: ... or shorter (anterior-posterior) than this fraction of the median disc depth.
    sacral_remnant_depth: float = 0.8
    #: ... or both smaller than this fraction of the median disc and less confident than this (mean softmax).
    #: These three thresholds were set on the pfirrmann_sudirman weak-label (training) patients, never on the
    #: held-out ones (docs/validation.md).
    uncertain_size_fraction: float = 0.75
    uncertain_confidence: float = 0.88
    #: A dropped bottom candidate at least this large (fraction of the median disc) AND this deep (fraction of
    #: the median depth) may have been a thin, degenerated L5-S1 rather than the remnant: every level name is
    #: then possibly one too low, and the flag ``level_naming_uncertain:disc_below_L5-S1_dropped`` says so.
    #: Chosen on the pfirrmann_sudirman weak-label (training) patients as the fewest flags that catch >= 75 %
    #: of the misnamed images where the rule fired (docs/validation.md, Issue 4, session 3).
    remnant_doubt_size_fraction: float = 0.45
    remnant_doubt_depth_fraction: float = 0.65
    #: Which of its two questions a ``lowest_is_l5s1`` hook of assign_levels may answer: keep a
    #: lowest disc the rule would drop, and drop a lowest candidate the rule keeps.
    judge_keeps_dropped: bool = True
    judge_drops_kept: bool = True
    #: Fraction of vertebral-body voxels expected just above/below a disc (see assign_levels).
    min_bone_support: float = 0.2
    #: A disc-to-disc distance above this multiple of the median distance means a disc was not found there:
    #: the count skips a level instead of shifting every level above it.
    gap_factor: float = 1.6
    #: Extent of S1 / L1 kept below / above the outermost lumbar discs, as a multiple of the median vertebral height.
    end_vertebra_factor: float = 1.3

    def to_row(self) -> dict:
        return {f"post_{k}": v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LevelRow:
    """One lumbar level (disc or vertebra): found or not, its size, confidence and QC flags."""

    level: str
    label: int
    found: bool
    voxels: int = 0
    size_mm: float = float("nan")  # mm^3 for a 3D image, mm^2 for one slice
    confidence: float = float("nan")  # mean softmax probability of the class inside the component
    slices: int = 0  # sagittal slices the structure appears on
    flags: tuple[str, ...] = ()
    reason: str = ""
    size_unit: str = ""  # "mm^3" or "mm^2" (of size_mm); empty when the structure was not found

    def to_row(self) -> dict:
        return {
            "level": self.level,
            "label": self.label,
            "found": self.found,
            "voxels": self.voxels,
            "size_mm": None if not np.isfinite(self.size_mm) else round(float(self.size_mm), 2),
            "size_unit": self.size_unit,
            "confidence": None if not np.isfinite(self.confidence) else round(float(self.confidence), 4),
            "slices": self.slices,
            "flags": ";".join(self.flags),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class _Disc:
    mask: np.ndarray  # bool, canonical stack layout
    centroid_mm: np.ndarray  # (lr, si, ap) in mm
    normal: np.ndarray  # unit vector (lr, si, ap) pointing inferior
    size: float
    confidence: float
    slices: int
    touches_edge: bool

    spacing: np.ndarray = None  # type: ignore[assignment]
    box: tuple[slice, ...] | None = None  # bounding box of ``mask`` (None: the whole array)

    @cached_property
    def idx(self) -> np.ndarray:
        """Voxel indices (n, 3) of the disc (computed once)."""
        return _argwhere(self.mask, self.box)

    @cached_property
    def depth_mm(self) -> float:
        """Anterior-posterior length along the disc plane (sqrt(12 var) of the long in-plane axis)."""
        return _long_axis_mm(self.idx, self.spacing)


def _long_axis_mm(idx: np.ndarray, spacing: np.ndarray) -> float:
    pts = idx.astype(float)[:, 1:] * spacing[1:]
    if len(pts) < 3:
        return 0.0
    w = np.linalg.eigvalsh(np.cov(pts.T) + 1e-9 * np.eye(2))
    return float(np.sqrt(12 * w[-1]))


def _components(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, int]:
    # 3D connectivity across adjacent sagittal slices (faces only) keeps one disc one component
    structure = ndi.generate_binary_structure(3, 1)
    return ndi.label(mask, structure=structure)


def _argwhere(mask: np.ndarray, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """``np.argwhere(mask)``, searching only inside ``box`` (which must hold every True voxel)."""
    if box is None:
        return np.argwhere(mask)
    return np.argwhere(mask[box]) + np.array([b.start for b in box])


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return None
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _box_of(idx: np.ndarray) -> tuple[slice, ...]:
    """Bounding box (slices) of voxel indices (n, ndim), n >= 1."""
    return tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(axis=0), idx.max(axis=0), strict=True))


def _touches_edge(sub: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[bool, bool]:
    """(touches the in-plane border, touches the first/last sagittal slice) of a mask given inside its box."""
    inplane = False
    for ax in (1, 2):
        if box[ax].start == 0 and np.take(sub, 0, axis=ax).any():
            inplane = True
        if box[ax].stop == shape[ax] and np.take(sub, -1, axis=ax).any():
            inplane = True
    lateral = (box[0].start == 0 and bool(sub[0].any())) or (box[0].stop == shape[0] and bool(sub[-1].any()))
    return inplane, lateral


def argmax_classes(probs: np.ndarray) -> np.ndarray:
    """``np.argmax(probs, axis=1)`` for the 3-class output (n, 3, rows, cols), ties to the lower class, faster."""
    if probs.shape[1] != 3:
        return np.argmax(probs, axis=1)
    p0, p1, p2 = probs[:, 0], probs[:, 1], probs[:, 2]
    cls = (p1 > p0).astype(np.int64)
    cls[p2 > np.maximum(p0, p1)] = 2
    return cls


def _disc_geometry(mask: np.ndarray, spacing: np.ndarray, box: tuple[slice, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    pts = _argwhere(mask, box).astype(float) * spacing
    c = pts.mean(axis=0)
    # normal = direction of least spread in the sagittal plane (si, ap); discs are thin along the spine axis
    d2 = pts[:, 1:] - c[1:]
    if len(d2) >= 3:
        w, v = np.linalg.eigh(np.cov(d2.T) + 1e-9 * np.eye(2))
        n2 = v[:, 0]
    else:
        n2 = np.array([1.0, 0.0])
    if n2[0] < 0:
        n2 = -n2  # point inferior (+si)
    return c, np.array([0.0, n2[0], n2[1]])


def find_discs(
    probs: np.ndarray, spacing: tuple[float, float, float], settings: PostprocessSettings, cls: np.ndarray | None = None
) -> list[_Disc]:
    """Disc components after size filtering, sorted superior -> inferior by centroid (``cls``: argmax of probs)."""
    if cls is None:
        cls = argmax_classes(probs)
    mask = cls == DISC
    sp = np.asarray(spacing, dtype=float)
    voxel = float(np.prod(sp)) if probs.shape[0] > 1 else float(sp[1] * sp[2])
    lab, n = _components(mask, spacing)
    if n == 0:
        return []
    lab, n = _split_fused(lab, n, voxel, settings)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * voxel
    largest = float(sizes.max())
    discs = []
    shape = mask.shape
    boxes = ndi.find_objects(lab)
    for i, size in enumerate(sizes, start=1):
        if size < max(settings.min_disc_size, settings.min_disc_fraction * largest):
            continue
        box = boxes[i - 1]
        sub = lab[box] == i
        m = np.zeros(shape, dtype=bool)
        m[box] = sub
        n_ks = int(np.count_nonzero(sub.any(axis=(1, 2))))
        if probs.shape[0] > 1 and n_ks < settings.min_disc_slices:
            continue
        c, nrm = _disc_geometry(m, sp, box)
        conf = float(probs[box[0], DISC][:, box[1], box[2]][sub].mean())
        edge, lateral = _touches_edge(sub, box, shape)
        if shape[0] > 1:
            edge = edge or lateral and n_ks < shape[0]
        discs.append(_Disc(m, c, nrm, float(size), conf, n_ks, edge, sp, box))
    discs.sort(key=lambda d: d.centroid_mm[1])
    return _merge_and_filter(discs, probs, sp, settings)


def _split_fused(lab: np.ndarray, n: int, voxel: float, settings: PostprocessSettings) -> tuple[np.ndarray, int]:
    """Split components that are two discs joined by a thin bridge (e.g. through a lateral slice).

    A component much larger than the median disc is eroded (up to 3 times) until it falls apart into two or
    more substantial pieces; its voxels are then given to the nearest piece. Components that do not fall
    apart are kept whole (and flagged implausibly_large later).
    """
    if n < 3:
        return lab, n
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * voxel
    real = sizes[sizes >= settings.min_disc_size]
    if real.size < 3:
        return lab, n
    med = float(np.median(real))
    structure = ndi.generate_binary_structure(lab.ndim, 1)
    boxes = ndi.find_objects(lab)
    for i in np.flatnonzero(sizes > settings.split_factor * med) + 1:
        box = boxes[i - 1]
        comp = lab[box] == i
        er = comp
        for _ in range(3):
            er = ndi.binary_erosion(er, structure)
            pl, pn = ndi.label(er, structure)
            if pn < 2:
                continue
            psz = np.bincount(pl.ravel())[1:] * voxel
            big = np.flatnonzero(psz >= 0.2 * float(sizes[i - 1]) * 0.5) + 1
            if len(big) >= 2:
                seeds = np.where(np.isin(pl, big), pl, 0)
                _, ind = ndi.distance_transform_edt(seeds == 0, return_indices=True)
                nearest = seeds[tuple(ind)]
                sub = lab[box]
                for j, b in enumerate(big):
                    new_label = i if j == 0 else n + 1
                    if j:
                        n += 1
                    sub[comp & (nearest == b)] = new_label
                break
    return lab, n


def _bone_support(disc: _Disc, vert: np.ndarray, sp: np.ndarray) -> tuple[float, float]:
    """Fraction of vertebral-body voxels just above / below the disc (mask shifted along its normal)."""
    out = []
    for sign in (-1.0, 1.0):
        best = 0.0
        for t_mm in (5.0, 9.0):
            shift = np.rint(sign * t_mm * disc.normal / sp).astype(int)
            idx = disc.idx + shift
            ok = np.all((idx >= 0) & (idx < np.array(vert.shape)), axis=1)
            if ok.any():
                idx = idx[ok]
                best = max(best, float(vert[idx[:, 0], idx[:, 1], idx[:, 2]].mean()))
        out.append(best)
    return out[0], out[1]


def _merge_and_filter(discs: list[_Disc], probs: np.ndarray, sp: np.ndarray, settings: PostprocessSettings) -> list[_Disc]:
    """Merge pieces of one disc (split left/right or by a fissure) and drop blobs off the spinal column.

    Pieces whose centroids lie closer than ``merge_mm`` in the sagittal plane are one disc. A component whose
    anterior-posterior centre is more than ``off_axis_mm`` from the median of the larger discs is not on
    the column (psoas, bowel, posterior fat) and is dropped.
    """
    if len(discs) < 2:
        return discs
    big = [d for d in discs if d.size >= 0.3 * max(x.size for x in discs)]
    lr_med = float(np.median([d.centroid_mm[0] for d in big]))
    if len(big) >= 4:
        # The column is curved (lordosis): expected anterior-posterior position of a disc is a quadratic in
        # its superior-inferior position, fitted to the larger discs with one robust refit.
        si = np.array([d.centroid_mm[1] for d in big])
        ap = np.array([d.centroid_mm[2] for d in big])
        coef = np.polyfit(si, ap, 2)
        res = np.abs(np.polyval(coef, si) - ap)
        keep = res <= max(settings.off_curve_mm, 2 * float(np.median(res)))
        if keep.sum() >= 4:
            coef = np.polyfit(si[keep], ap[keep], 2)

        def off_axis(d: _Disc) -> float:
            return abs(float(np.polyval(coef, d.centroid_mm[1])) - d.centroid_mm[2])

        limit = settings.off_curve_mm
    else:
        ap_med = float(np.median([d.centroid_mm[2] for d in big]))

        def off_axis(d: _Disc) -> float:
            return abs(d.centroid_mm[2] - ap_med)

        limit = settings.off_axis_mm
    discs = [d for d in discs if off_axis(d) <= limit and abs(d.centroid_mm[0] - lr_med) <= settings.off_midline_mm]
    merged: list[_Disc] = []
    for d in discs:
        if merged and np.linalg.norm(d.centroid_mm[1:] - merged[-1].centroid_mm[1:]) < settings.merge_mm:
            m = merged[-1].mask | d.mask
            box = _union_box(merged[-1].box, d.box)
            c, nrm = _disc_geometry(m, sp, box)
            if box is None:
                sub, pb = m, probs[:, DISC]
            else:
                sub, pb = m[box], probs[box[0], DISC][:, box[1], box[2]]
            merged[-1] = _Disc(
                m, c, nrm, merged[-1].size + d.size, float(pb[sub].mean()), int(np.count_nonzero(sub.any(axis=(1, 2)))),
                merged[-1].touches_edge or d.touches_edge, sp, box,
            )
        else:
            merged.append(d)
    return merged


def _count_with_gaps(discs: list[_Disc], gap_factor: float) -> list[int]:
    """Level slot of each disc counted from the bottom (0 = lowest), skipping slots across large gaps."""
    if not discs:
        return []
    c = np.array([d.centroid_mm[1:] for d in discs])
    gaps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    slots = [0] * len(discs)
    if len(gaps) >= 2:
        ref = float(np.median(gaps))
    else:
        ref = float("inf")
    for i in range(len(discs) - 2, -1, -1):  # from the bottom upward
        step = 1
        if np.isfinite(ref) and gaps[i] > gap_factor * ref:
            step = int(round(gaps[i] / ref))
        slots[i] = slots[i + 1] + max(step, 1)
    return slots


def smooth_across_slices(values: np.ndarray, slice_spacing_mm: float, settings: PostprocessSettings) -> np.ndarray:
    """A stack (n_slices, ...) of one probability channel averaged across neighbouring sagittal slices.

    A Gaussian of ``settings.slice_smoothing_mm`` (sigma, mm; truncated at 2 sigma, edge slices repeated) along
    the slice axis. Returned unchanged for a single slice, when the smoothing is off, or when the slices are
    further apart than ``settings.slice_smoothing_max_spacing_mm``.
    """
    sigma = settings.slice_smoothing_mm
    if values.shape[0] < 2 or sigma <= 0 or not 0 < slice_spacing_mm <= settings.slice_smoothing_max_spacing_mm:
        return values
    return ndi.gaussian_filter1d(values, sigma / slice_spacing_mm, axis=0, mode="nearest", truncate=2.0)


def _plane_distance(points_mm: np.ndarray, disc: _Disc) -> np.ndarray:
    """Signed distance (mm) of points from the disc's mid-plane; positive = inferior of it."""
    return (points_mm - disc.centroid_mm) @ disc.normal


def remnant_rule_drops(discs: list[_Disc], settings: PostprocessSettings) -> bool:
    """Whether the size/depth rule takes the lowest of >= 3 candidates for the sacral remnant (S1-S2 disc).

    The rudimentary S1-S2 disc inside the sacrum is small and short (anterior-posterior), while a collapsed
    L5-S1 loses height but keeps its depth: never take the remnant for L5-S1.
    """
    med_size = float(np.median([d.size for d in discs[:-1]]))
    med_depth = float(np.median([d.depth_mm for d in discs[:-1]]))
    low = discs[-1]
    weak = low.size < settings.uncertain_size_fraction * med_size and low.confidence < settings.uncertain_confidence
    return low.size < settings.sacral_remnant_fraction * med_size or low.depth_mm < settings.sacral_remnant_depth * med_depth or weak


def assign_levels(
    probs: np.ndarray, spacing: tuple[float, float, float], settings: PostprocessSettings | None = None,
    *, lowest_is_l5s1: Callable[[list[_Disc]], bool] | None = None,
) -> tuple[np.ndarray, list[LevelRow], list[str]]:
    """Label values (canonical layout), one row per lumbar level, and whole-image flags.

    ``probs``: (n_slices, classes, rows, cols) softmax output; ``spacing``: (lr, si, ap) in mm.
    ``lowest_is_l5s1`` (``segment_image`` passes the lowest-disc judge; None: the size/depth rule alone): a second opinion
    asked about the lowest of at least three disc candidates (top to bottom): is it L5-S1 rather than the disc
    above it? Where the rule keeps that candidate, "no" drops it (``settings.judge_drops_kept``, flag
    ``JUDGE_DROPPED_FLAG``); where the rule would drop it, "yes" keeps it (``settings.judge_keeps_dropped``,
    flag ``JUDGE_KEPT_FLAG``). :func:`.judge.make_check` provides one.
    """
    settings = settings or PostprocessSettings()
    sp = np.asarray(spacing, dtype=float)
    n_sl = probs.shape[0]
    voxel = float(np.prod(sp)) if n_sl > 1 else float(sp[1] * sp[2])
    unit = "mm^3" if n_sl > 1 else "mm^2"
    cls = argmax_classes(probs)
    out = np.zeros(cls.shape, dtype=np.uint8)
    flags: list[str] = []
    discs = find_discs(probs, spacing, settings, cls)
    ask = lowest_is_l5s1 is not None and len(discs) >= 3
    if ask and settings.judge_drops_kept and not remnant_rule_drops(discs, settings) and not lowest_is_l5s1(discs):
        # a large S1-S2 remnant or a structure below the spine that passed the rule; the new lowest candidate
        # then goes through the rule (and the judge's other question) like any other
        discs = discs[:-1]
        flags.append(JUDGE_DROPPED_FLAG)
        ask = len(discs) >= 3
    first = True
    while len(discs) >= 3 and remnant_rule_drops(discs, settings):
        if first and ask and settings.judge_keeps_dropped and lowest_is_l5s1(discs):
            flags.append(JUDGE_KEPT_FLAG)
            break
        med_size = float(np.median([d.size for d in discs[:-1]]))
        med_depth = float(np.median([d.depth_mm for d in discs[:-1]]))
        low = discs[-1]
        discs = discs[:-1]
        if first:
            flags.append("small_disc_below_L5-S1_ignored")
            # only the lowest candidate is judged (the one the thresholds were chosen on)
            if (low.size >= settings.remnant_doubt_size_fraction * med_size
                    and low.depth_mm >= settings.remnant_doubt_depth_fraction * med_depth):
                flags.append(LEVEL_DOUBT_FLAG)
        first = False
    # Bright structures below the column (bowel, bladder, pelvic vessels) can look like a disc. A disc sits
    # on a vertebral body: drop bottom candidates with no bone just above them, or separated from the disc
    # above by much more than one vertebra, before the count starts. Skipped when the network found little
    # vertebral tissue around the discs (e.g. an unusual contrast), where the test would say nothing.
    vert = cls == VERTEBRA
    if len(discs) >= 3:
        support = [_bone_support(d, vert, sp) for d in discs]
        use_support = float(np.median([min(a, b) for a, b in support])) >= settings.min_bone_support
        while len(discs) >= 3:
            gaps = [np.linalg.norm(discs[i + 1].centroid_mm[1:] - discs[i].centroid_mm[1:]) for i in range(len(discs) - 1)]
            far = gaps[-1] > settings.gap_factor * float(np.median(gaps[:-1]))
            if far or (use_support and support[-1][0] < settings.min_bone_support):
                discs, support = discs[:-1], support[:-1]
                if "structure_below_spine_ignored" not in flags:
                    flags.append("structure_below_spine_ignored")
            else:
                break

    # ---- vertebral tissue (used for the sacrum test and for naming bodies)
    vpts_idx = np.argwhere(vert)
    vpts = vpts_idx.astype(float) * sp

    sacrum = False
    if discs:
        low = discs[-1]
        if vpts.size:
            d = _plane_distance(vpts, low)
            near = np.abs((vpts - low.centroid_mm)[:, 2]) < 25.0  # within 25 mm AP of the disc centre
            below = d[(d > 0) & near]
            sacrum = below.size > 0 and float(below.max()) >= settings.sacrum_min_mm and not low.mask[:, -1].any()
        if not sacrum:
            flags.append("sacrum_not_detected")

    # Count upward from the lowest disc; a gap of about k disc spacings means k - 1 discs were not found.
    slots = _count_with_gaps(discs, settings.gap_factor)  # position from the bottom (0 = L5-S1) per disc
    if len(slots) and slots[0] + 1 > len(discs):
        flags.append("gap_between_discs")
    lumbar = [d for d, s in zip(discs, slots, strict=True) if s < 5]
    names = [lv.DISCS[4 - s] for s in slots if s < 5]
    extra = len(discs) - len(lumbar)
    if extra:
        flags.append(f"extra_discs_above_L1-L2:{extra}")
    sizes = np.array([d.size for d in lumbar]) if lumbar else np.array([])
    med = float(np.median(sizes)) if sizes.size else float("nan")

    rows: dict[str, LevelRow] = {}
    sure = smooth_across_slices(probs[:, DISC], float(sp[0]), settings) >= settings.disc_outline_probability
    whole = tuple(slice(0, n) for n in cls.shape)
    for name, d in zip(names, lumbar, strict=True):
        f = []
        if d.touches_edge:
            f.append("touches_fov_edge")
        if len(lumbar) >= 3 and d.size < settings.small_fraction * med:
            f.append("implausibly_small")
        if len(lumbar) >= 3 and d.size > settings.large_factor * med:
            f.append("implausibly_large")
        if name == "L5-S1" and not sacrum:
            f.append("assumed_L5-S1_sacrum_not_detected")
        # Detection and counting use the argmax; the written outline keeps the voxels the network is sure of
        # (PostprocessSettings.disc_outline_probability, on the disc probability averaged across neighbouring
        # slices), or the whole component if that leaves nothing.
        box = d.box or whole
        sub = d.mask[box]
        core = sub & sure[box]
        keep = core if core.any() else sub
        out[box][keep] = lv.DISC_LABELS[name]
        n_vox = int(keep.sum())
        rows[name] = LevelRow(
            name, lv.DISC_LABELS[name], True, n_vox, n_vox * voxel, d.confidence, int(keep.any(axis=(1, 2)).sum()), tuple(f),
            size_unit=unit,
        )

    # ---- vertebral bodies between consecutive discs
    if lumbar and vpts.size:
        dist = np.stack([_plane_distance(vpts, d) for d in lumbar], axis=1)  # (points, discs)
        gaps = [lumbar[i + 1].centroid_mm[1] - lumbar[i].centroid_mm[1] for i in range(len(lumbar) - 1)]
        vh = float(np.median(gaps)) if gaps else 30.0  # disc-to-disc spacing ~ vertebral height + disc
        vert_names = [n.split("-")[0] for n in names] + ["S1"]
        # body k lies below disc k-1 and above disc k; the first body (above the top disc) and S1 below the
        # bottom disc are limited to end_vertebra_factor * vh.
        for k, vname in enumerate(vert_names):
            above_ok = dist[:, k - 1] > 0 if k > 0 else np.ones(len(vpts), bool)
            below_ok = dist[:, k] < 0 if k < len(lumbar) else np.ones(len(vpts), bool)
            sel = above_ok & below_ok
            if k == 0:
                sel &= dist[:, 0] > -settings.end_vertebra_factor * vh
            if k == len(lumbar):
                sel &= dist[:, -1] < settings.end_vertebra_factor * vh
            if vname == "S1" and not sacrum:
                sel &= False
            if 0 < k < len(lumbar) and lv.DISCS.index(names[k]) - lv.DISCS.index(names[k - 1]) != 1:
                sel &= False  # a disc is missing between these two: the tissue spans two bodies
            if not sel.any():
                continue
            idx = vpts_idx[sel]
            box = _box_of(idx)  # work inside the bounding box of the selected voxels (same result, less work)
            idx = idx - np.array([b.start for b in box])
            m = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
            m[idx[:, 0], idx[:, 1], idx[:, 2]] = True
            # keep the largest connected piece (drops posterior elements / stray pixels on the other side)
            lab, n = _components(m, spacing)
            if n > 1:
                sizes_v = np.bincount(lab.ravel(), minlength=n + 1)[1:]
                m = lab == (1 + int(np.argmax(sizes_v)))
            size = float(m.sum()) * voxel
            if size < settings.min_disc_size:
                continue
            f = []
            if (box[1].start == 0 and m[:, 0].any()) or (box[1].stop == cls.shape[1] and m[:, -1].any()):
                f.append("touches_fov_edge")
            ob = out[box]
            ob[m & (ob == 0)] = lv.VERTEBRA_LABELS[vname]
            conf = float(probs[box[0], VERTEBRA][:, box[1], box[2]][m].mean())
            rows[vname] = LevelRow(
                vname, lv.VERTEBRA_LABELS[vname], True, int(m.sum()), size, conf, int(m.any(axis=(1, 2)).sum()), tuple(f),
                size_unit=unit,
            )

    ordered = []
    for name in (*lv.DISCS, *lv.VERTEBRAE):
        label = lv.NAME_TO_LABEL[name]
        if name in rows:
            ordered.append(rows[name])
        else:
            reason = "not found in the image (outside the field of view or not segmented)"
            if name in lv.DISCS and len(lumbar) < 5:
                reason = f"only {len(lumbar)} lumbar disc(s) found counting upward from L5-S1; none at this level"
            if name == "S1" and not sacrum:
                reason = "sacrum not detected below the lowest disc"
            ordered.append(LevelRow(name, label, False, flags=("missing",), reason=reason))
    if any(not r.found for r in ordered if r.level in lv.DISCS):
        flags.append("disc_level_missing")
    return out, ordered, flags
