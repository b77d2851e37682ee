"""Public entry point: :func:`segment_image` (image -> level labelmap + per-level rows with QC)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..progress import Progress, ProgressCallback
from . import judge, network
from .csf import CsfSettings, label_csf
from .postprocess import LevelRow, PostprocessSettings, assign_levels
from .preprocess import (
    TRAIN_SPACING_MM,
    CanonicalStack,
    normalise_slice,
    resample_inplane,
    resize_channels,
    to_canonical,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationSettings:
    """Options of :func:`segment_image`.

    ``pixel_spacing_mm``: in-plane pixel size for bitmaps that do not store one (ignored when the file
    has a spacing). ``tta``: average over intensity variants (slower, see network.predict_probabilities).
    ``weights_path``/``weights_sha256``: use other weights than the shipped ones (research use).
    ``csf``: add the CSF of the spinal canal (label 61), the reference tissue of the markers' signal
    intensity difference, by the rule of :mod:`.csf` (``None``: leave CSF out).
    ``level_judge``: ask the lowest-disc judge (:mod:`.judge`) when the size/depth rule decides which candidate
    is L5-S1; it overrides the rule only when its score difference exceeds ``judge_margin`` (logits). False: the
    rule alone (the behaviour before session 7).
    """

    pixel_spacing_mm: float | None = None
    tta: bool = False
    batch_size: int = 8
    weights_path: str | None = None
    weights_sha256: str | None = None
    postprocess: PostprocessSettings = field(default_factory=PostprocessSettings)
    csf: CsfSettings | None = field(default_factory=CsfSettings)
    level_judge: bool = True
    judge_margin: float = judge.MARGIN

    def to_row(self) -> dict:
        return {
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "tta": self.tta,
            "weights": self.weights_path or network.WEIGHTS_FILE,
            **self.postprocess.to_row(),
            "csf_reference": self.csf is not None,
            "level_judge": self.level_judge,
            "judge_margin": self.judge_margin if self.level_judge else None,
        }


@dataclass(frozen=True)
class SegmentationResult:
    """The level labelmap (same geometry as the input, SPINEPS label values) and one row per level.

    ``levels`` always has one row per lumbar level (L1-L2..L5-S1, L1..S1), found or not; ``flags`` are
    whole-image QC notes (e.g. ``sacrum_not_detected``, ``spacing_assumed``).
    """

    labels: sitk.Image
    levels: tuple[LevelRow, ...]
    flags: tuple[str, ...]
    spacing_note: str

    @property
    def ok(self) -> bool:
        return all(r.found for r in self.levels) and not self.flags

    def to_rows(self) -> list[dict]:
        return [r.to_row() for r in self.levels]

    def to_dict(self) -> dict:
        return {"flags": list(self.flags), "spacing": self.spacing_note, "levels": self.to_rows()}


def _infer(image: sitk.Image, settings: SegmentationSettings, net, progress: Progress) -> tuple[CanonicalStack, np.ndarray]:
    """Canonical stack and softmax probabilities (n, classes, rows, cols) at the input's in-plane grid."""
    stack = to_canonical(image, pixel_spacing_mm=settings.pixel_spacing_mm)
    if net is None:
        net = network.load_model(settings.weights_path, settings.weights_sha256)
    sp_rc = (stack.spacing_mm[1], stack.spacing_mm[2])
    res = resample_inplane(stack.slices, sp_rc, TRAIN_SPACING_MM)
    norm = np.stack([normalise_slice(s) for s in res])
    probs = network.predict_probabilities(
        net, norm, batch_size=settings.batch_size, tta=settings.tta, on_batch=lambda f: progress.report(0.9 * f, "segmenting")
    )
    probs = resize_channels(probs, stack.slices.shape[1:])
    return stack, probs


def predict_classes(image: sitk.Image, settings: SegmentationSettings | None = None, *, net=None, progress=None):
    """Raw network classes (0 background, 1 disc, 2 vertebra) in the input's array layout, before post-processing."""
    settings = settings or SegmentationSettings()
    stack, probs = _infer(image, settings, net, Progress.wrap(progress))
    from .preprocess import from_canonical

    return from_canonical(stack, np.argmax(probs, axis=1).astype(np.uint8)), stack


def segment_image(
    image: sitk.Image,
    settings: SegmentationSettings | None = None,
    progress: ProgressCallback | Progress | None = None,
    *,
    net=None,
) -> SegmentationResult:
    """Segment discs and vertebral bodies of a sagittal T2-weighted image and name their levels.

    ``image``: a 2D slice or a 3D stack (any orientation the geometry can turn into sagittal slices).
    Returns the labelmap in the project's convention (L1=20..L5=24, S1=26, discs 120..124) with the
    input's geometry. Raises InputError for unusable input (4D, tiny, axial thick-slice, no disc found).
    """
    from .preprocess import from_canonical

    settings = settings or SegmentationSettings()
    prog = Progress.wrap(progress)
    stack, probs = _infer(image, settings, net, prog)
    prog.report(0.9, "naming levels")
    check = None
    if settings.level_judge:
        check = judge.make_check(judge.shipped_judge(), stack.slices, stack.spacing_mm, settings.judge_margin,
                                 settings.postprocess)
    labels_c, rows, flags = assign_levels(probs, stack.spacing_mm, settings.postprocess, lowest_is_l5s1=check)
    flags = list(flags)
    if not stack.spacing_known:
        flags.append("spacing_assumed")
    if stack.oblique_deg > 30:
        flags.append(f"oblique_{stack.oblique_deg:.0f}deg")
    if not any(r.found for r in rows):
        raise InputError(
            "No intervertebral disc was found in the image. Check that it is a sagittal T2-weighted image of the "
            "lumbar spine (and, for a bitmap, give its pixel size with --pixel-spacing-mm)."
        )
    if settings.csf is not None:
        labels_c, n_csf = label_csf(labels_c, stack.slices, stack.spacing_mm, settings.csf)
        if n_csf == 0:
            flags.append("no_csf_reference")
    out = sitk.GetImageFromArray(from_canonical(stack, labels_c).astype(np.uint8))
    out.CopyInformation(image)
    prog.report(1.0, "done")
    return SegmentationResult(out, tuple(rows), tuple(flags), stack.spacing_note)
