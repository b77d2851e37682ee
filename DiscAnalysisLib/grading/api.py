"""Pfirrmann grading of every disc in a labelmap: the function the CLI and the Slicer module call.

``grade_discs(image, labels)`` takes a SimpleITK image (2D mid-sagittal slice or 3D sagittal stack) and
a labelmap on the same grid in the DiscAnalysis convention (discs 120..124), crops each disc with the
geometry of :mod:`.crop` and returns one :class:`GradeResult` per lumbar disc level, in order L1-L2 ..
L5-S1. A disc that cannot be graded (absent from the labelmap, cut by the field of view, too small) gets
a row with ``status = "not graded"`` and the reason; no grade is guessed for it.

Which slices of a stack are graded: for each disc the sagittal slice with the largest disc area (the one
nearest the mid-sagittal plane of that disc, which is what the model was trained on) and its immediate
neighbours whose disc area is at least half of that maximum (at most ``settings.max_slices``); the grade
probabilities are averaged over them. Averaging two or three near-central slices reduces the noise of a
single slice, while the half-area rule keeps out lateral slices where the annulus dominates and the
nucleus, whose signal the grade is about, is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..image_io import spacing_known
from ..levels import DISC_LABELS, DISCS
from ..progress import Progress, ProgressCallback
from ..segmentation.postprocess import JUDGE_DROPPED_FLAG, JUDGE_KEPT_FLAG, LEVEL_DOUBT_FLAG
from .crop import disc_box_from_mask
from .metrics import GROUP_NAMES, group_of

#: Levels the shipped model was trained on (the Sudirman data set grades L3-L4, L4-L5, L5-S1 only).
TRAINED_LEVELS = ("L3-L4", "L4-L5", "L5-S1")
GRADED, NOT_GRADED = "graded", "not graded"


@dataclass(frozen=True)
class GradingSettings:
    """Options of :func:`grade_discs`.

    ``tta``: average over test-time variants (rotation, scale, mirror). ``max_slices``: stack slices
    averaged per disc. ``min_area_fraction``: a neighbour slice is used only if its disc area is at least
    this fraction of the largest. ``max_outside_fraction``: a crop with more of its area outside the image
    is not graded (the disc is at the border of the field of view). ``min_disc_pixels``: smaller disc
    regions are not graded. ``low_confidence``: below this confidence the row's QC says so.
    """

    tta: bool = True
    max_slices: int = 3
    min_area_fraction: float = 0.5
    max_outside_fraction: float = 0.25
    min_disc_pixels: int = 20
    low_confidence: float = 0.5
    levels: tuple[str, ...] = DISCS


@dataclass(frozen=True)
class GradeResult:
    """The grade of one disc level (or why there is none).

    ``confidence``: the estimated probability that ``grade`` is right: the largest grade probability, mapped
    through the shipped ensemble's calibration (:data:`.predict.CONFIDENCE_CALIBRATION`).
    """

    level: str
    status: str
    grade: int | None = None
    probabilities: tuple[float, ...] | None = None
    confidence: float | None = None
    expected_grade: float | None = None
    group: str | None = None
    reason: str = ""
    qc: tuple[str, ...] = field(default_factory=tuple)
    slices: tuple[int, ...] = ()
    disc_width: float | None = None
    width_unit: str = "mm"

    @property
    def graded(self) -> bool:
        return self.status == GRADED

    @property
    def group_probabilities(self) -> tuple[float, float, float] | None:
        if self.probabilities is None:
            return None
        p = self.probabilities
        return (p[0] + p[1], p[2], p[3] + p[4])

    def to_row(self) -> dict:
        row = {
            "level": self.level,
            "status": self.status,
            "grade": "" if self.grade is None else self.grade,
            "confidence": _fmt(self.confidence),
            "expected_grade": _fmt(self.expected_grade),
            "group": self.group or "",
        }
        probs = self.probabilities or (None,) * 5
        for g, p in enumerate(probs, start=1):
            row[f"p_grade{g}"] = _fmt(p)
        gp = self.group_probabilities or (None,) * 3
        for name, p in zip(GROUP_NAMES, gp, strict=True):
            row[f"p_{name}"] = _fmt(p)
        row["reason"] = self.reason
        row["qc"] = "; ".join(self.qc)
        row["slices"] = " ".join(str(s) for s in self.slices)
        row[f"disc_width_{self.width_unit}"] = _fmt(self.disc_width)
        return row


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


# ------------------------------------------------------------------------------------------- geometry
def sagittal_slices(image: sitk.Image, labels: sitk.Image) -> tuple[np.ndarray, np.ndarray, tuple[float, float], list[str]]:
    """Image and labels as (slices, rows, cols) arrays with rows superior->inferior, cols anterior->posterior.

    For 3D images the axes are found from the direction matrix (LPS); for 2D images the array is taken as
    displayed (row 0 at the top) with one slice. Returns the two arrays, the (row, col) spacing in mm
    (1, 1 when unknown) and notes for the QC column.
    """
    if image.GetDimension() != labels.GetDimension() or image.GetSize() != labels.GetSize():
        raise InputError(
            f"The labelmap (size {labels.GetSize()}) is not on the image grid (size {image.GetSize()}); "
            "pass the labelmap produced for this image (or resample it onto the image first)."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("The image has several components per pixel (colour or vector image); pass a grey-scale image.")
    notes = []
    img = sitk.GetArrayFromImage(image).astype(np.float32)
    lab = sitk.GetArrayFromImage(labels)
    known = spacing_known(image)
    if image.GetDimension() == 2:
        sp = image.GetSpacing()
        spacing_rc = (float(sp[1]), float(sp[0])) if known else (1.0, 1.0)
        if not known:
            notes.append("pixel spacing unknown: square pixels assumed")
        return img[None], lab[None], spacing_rc, notes
    if image.GetDimension() != 3:
        raise InputError(f"Grading needs a 2D slice or a 3D stack; the image has {image.GetDimension()} dimensions.")
    d = np.array(image.GetDirection()).reshape(3, 3)  # columns: LPS direction of the i, j, k axes
    lr_axis = int(np.argmax(np.abs(d[0])))
    si_axis = int(np.argmax(np.abs(d[2])))
    ap_axis = int(np.argmax(np.abs(d[1])))
    if len({lr_axis, si_axis, ap_axis}) != 3:
        raise InputError(
            "Cannot tell the sagittal, axial and coronal axes of this image from its direction matrix "
            f"{np.round(d, 3).tolist()}; reorient it to a sagittal stack first."
        )
    # numpy arrays are (k, j, i): index axis a of the image is numpy axis 2 - a.
    order = [2 - lr_axis, 2 - si_axis, 2 - ap_axis]
    img = np.transpose(img, order)
    lab = np.transpose(lab, order)
    if d[2, si_axis] > 0:  # index increases towards superior: flip so rows run superior -> inferior
        img, lab = img[:, ::-1], lab[:, ::-1]
    if d[1, ap_axis] < 0:  # index increases towards anterior: flip so cols run anterior -> posterior
        img, lab = img[:, :, ::-1], lab[:, :, ::-1]
    sp = image.GetSpacing()
    spacing_rc = (float(sp[si_axis]), float(sp[ap_axis]))
    if not known:
        spacing_rc = (1.0, 1.0)
        notes.append("pixel spacing unknown: square pixels assumed")
    if abs(d[0, lr_axis]) < 0.9:
        notes.append("stack is not close to sagittal (oblique by more than 25 degrees)")
    return np.ascontiguousarray(img), np.ascontiguousarray(lab), spacing_rc, notes


# ---------------------------------------------------------------------------------------------- grading
def grade_discs(
    image: sitk.Image,
    labels: sitk.Image,
    settings: GradingSettings = GradingSettings(),
    progress: ProgressCallback | Progress | None = None,
    model=None,
) -> list[GradeResult]:
    """Grade every disc level in ``settings.levels`` (one result per level, in that order).

    ``model`` defaults to the shipped network (:func:`.predict.load_model`).
    """
    prog = Progress.wrap(progress)
    img, lab, spacing_rc, notes = sagittal_slices(image, labels)
    unit = "mm" if spacing_known(image) else "px"
    if model is None:
        from .predict import load_model

        model = load_model()
    results = []
    for level in prog.iterate(settings.levels, "grading discs"):
        results.append(_grade_one(level, img, lab, spacing_rc, notes, unit, settings, model))
    return results


def _grade_one(level, img, lab, spacing_rc, notes, unit, settings: GradingSettings, model) -> GradeResult:
    value = DISC_LABELS[level]
    mask = lab == value
    areas = mask.sum(axis=(1, 2))
    if areas.max(initial=0) == 0:
        return GradeResult(level, NOT_GRADED, reason="disc not found in the labelmap (not segmented)", width_unit=unit)
    best = int(np.argmax(areas))
    if areas[best] < settings.min_disc_pixels:
        return GradeResult(
            level, NOT_GRADED, reason=f"disc region too small to grade ({int(areas[best])} pixels in its largest slice)",
            width_unit=unit,
        )
    candidates = [best] + sorted(
        (s for s in (best - 1, best + 1) if 0 <= s < len(areas) and areas[s] >= settings.min_area_fraction * areas[best]),
        key=lambda s: -areas[s],
    )
    candidates = candidates[: max(1, settings.max_slices)]
    qc = list(notes)
    probs, used, widths, skipped = [], [], [], []
    for s in candidates:
        box = disc_box_from_mask(mask[s], spacing_rc)
        if box.touches_edge:
            skipped.append(f"slice {s}: disc touches the image border")
            continue
        p, outside = model.probabilities(img[s], box.center_rc, box.width, spacing_rc=spacing_rc, tta=settings.tta)
        if outside > settings.max_outside_fraction:
            skipped.append(f"slice {s}: {outside:.0%} of the crop lies outside the image")
            continue
        if outside > 0:
            qc.append(f"{outside:.0%} of the crop outside the image (slice {s})")
        probs.append(p)
        used.append(s)
        widths.append(box.width)
    if not probs:
        return GradeResult(
            level, NOT_GRADED, reason="disc cut by the field of view (" + "; ".join(skipped) + ")", width_unit=unit,
        )
    p = np.mean(probs, axis=0)
    grade = int(np.argmax(p)) + 1
    confidence = model.confidence(p)
    if confidence < settings.low_confidence:
        qc.append(f"low confidence ({confidence:.2f})")
    if level not in TRAINED_LEVELS:
        qc.append("level outside the training data (model trained on L3-L4..L5-S1)")
    if len(used) > 1:
        spread = np.ptp([np.argmax(x) for x in probs])
        if spread >= 2:
            qc.append("slices disagree by 2 or more grades")
    return GradeResult(
        level=level,
        status=GRADED,
        grade=grade,
        probabilities=tuple(float(x) for x in p),
        confidence=confidence,
        expected_grade=float(np.dot(p, np.arange(1, 6))),
        group=group_of(grade),
        qc=tuple(qc + skipped),
        slices=tuple(used),
        disc_width=float(np.mean(widths)),
        width_unit=unit,
    )


#: QC notes for graded discs when the segmentation that named the discs says the names may be one level off
#: (the grade belongs to the disc, but the disc may carry its neighbour's name). Keys: segmentation image flags.
LEVEL_NAMING_NOTES = {
    LEVEL_DOUBT_FLAG: (
        "level names uncertain: a disc below L5-S1 was taken for the sacral remnant; if it is the real L5-S1, "
        "every name is one level too low (check the segmentation)"),
    JUDGE_KEPT_FLAG: (
        "level names decided by the lowest-disc judge: it kept a thin lowest disc as L5-S1 that the size rule "
        "would have dropped; if that disc is the sacral remnant, every name is one level too high (check the "
        "segmentation)"),
    JUDGE_DROPPED_FLAG: (
        "level names decided by the lowest-disc judge: it dropped a lowest disc candidate that the size rule "
        "kept as L5-S1; if that candidate is the real L5-S1, every name is one level too low (check the "
        "segmentation)"),
}


def with_level_naming_notes(results: list[GradeResult], segmentation_flags) -> list[GradeResult]:
    """``results`` with a QC note on every graded disc for each segmentation image flag that puts the level names
    in doubt (:data:`LEVEL_NAMING_NOTES`); unchanged when there is none. Used by ``discanalysis grade`` and the
    whole-patient pipeline, so that the doubt travels with each grade."""
    raised = set(segmentation_flags)
    notes = tuple(note for flag, note in LEVEL_NAMING_NOTES.items() if flag in raised)
    if not notes:
        return results
    return [replace(r, qc=(*r.qc, *notes)) if r.graded else r for r in results]
