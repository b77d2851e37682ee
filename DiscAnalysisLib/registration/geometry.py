"""Disc extraction and canonical geometry for disc-by-disc registration.

The atlas lives in a canonical sagittal frame: in 3D the index axes point Posterior, Inferior and Right
("PIR", the orientation of the Menezes-Reis lumbar scans the atlas was built from); in 2D the image is a
mid-sagittal slice whose first axis runs anterior->posterior and second superior->inferior (how a sagittal
slice is displayed with the patient facing left). Registration works in physical millimetres, so a 3D
patient volume needs a correct direction matrix; a 2D input is taken as already in that display frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

CANONICAL_3D = "PIR"


class DiscSkipped(Exception):
    """A disc that cannot be registered; the message is the reason shown in the per-disc report."""


@dataclass(frozen=True)
class DiscCrop:
    """One disc cut out of a patient labelmap: the region around it and the disc mask in that region."""

    level: str
    mask: sitk.Image  # uint8 0/1 on the crop grid (a sub-grid of the patient grid)
    labels: sitk.Image  # the labelmap on the same crop grid (all labels, for nearest-neighbour warping)
    n_voxels: int


def canonical_slice_frame(image: sitk.Image) -> sitk.Image:
    """Reorient a 3D image to the canonical PIR index order (a lossless permutation/flip)."""
    return sitk.DICOMOrient(image, CANONICAL_3D)


def midsagittal_slice(labelmap_3d: sitk.Image, label: int, others: dict[str, sitk.Image] | None = None):
    """The sagittal slice through a disc's centroid as 2D images (labelmap and ``others`` on the same slice).

    Returns ``(labels_2d, others_2d, slice_index)``; the 2D images have the in-plane spacing, identity
    direction and origin (0, 0): position does not matter for disc-by-disc registration, which starts
    by aligning centroids. ``others`` are first resampled onto the labelmap grid (linear interpolation).
    """
    pir = canonical_slice_frame(labelmap_3d)
    arr = sitk.GetArrayViewFromImage(pir)  # (k=R, j=I, i=P)
    ks = np.nonzero((arr == label).any(axis=(1, 2)))[0]
    if ks.size == 0:
        raise DiscSkipped("not in the labelmap")
    counts = [(arr[k] == label).sum() for k in ks]
    # centroid slice along the left-right axis, ties broken by the larger disc area
    k_c = float(np.average(ks, weights=counts))
    k = int(ks[np.argmin(np.abs(ks - k_c) - 1e-6 * np.asarray(counts))])

    def to2d(img: sitk.Image, ref: sitk.Image) -> sitk.Image:
        a = sitk.GetArrayFromImage(img)[k]
        out = sitk.GetImageFromArray(a)
        out.SetSpacing(ref.GetSpacing()[:2])
        return out

    labels_2d = to2d(pir, pir)
    others_2d = {}
    for name, img in (others or {}).items():
        img_on_grid = sitk.Resample(img, labelmap_3d, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        others_2d[name] = to2d(canonical_slice_frame(img_on_grid), pir)
    return labels_2d, others_2d, k


def centroid_mm(mask: sitk.Image) -> np.ndarray:
    """Physical centroid (LPS mm) of the non-zero voxels of a mask."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        raise DiscSkipped("empty mask")
    return np.asarray(stats.GetCentroid(1))


def crop_disc(labelmap: sitk.Image, level: str, label: int, margin_mm: float, min_voxels: int = 20) -> DiscCrop:
    """Cut the region around one disc (bounding box + ``margin_mm``) out of ``labelmap``.

    Raises :class:`DiscSkipped` when the disc is absent, too small, or touches the image edge (a disc cut
    by the field of view would be registered to the atlas as if its cut face were real anatomy).
    """
    arr = sitk.GetArrayViewFromImage(labelmap)
    where = np.nonzero(arr == label)
    if where[0].size == 0:
        raise DiscSkipped("not in the labelmap")
    if where[0].size < min_voxels:
        raise DiscSkipped(f"only {where[0].size} voxels in the labelmap (fewer than {min_voxels})")
    shape = arr.shape[::-1]  # x, y(, z) order
    lo = [int(w.min()) for w in where][::-1]
    hi = [int(w.max()) for w in where][::-1]
    touching = [ax for ax in range(len(shape)) if lo[ax] == 0 or hi[ax] == shape[ax] - 1]
    if touching:
        axes = ", ".join("ijk"[a] for a in touching)
        raise DiscSkipped(
            f"touches the image edge along axis {axes}: the disc may be cut off by the field of view; "
            "use an image that contains the whole disc"
        )
    spacing = labelmap.GetSpacing()
    pad = [int(np.ceil(margin_mm / s)) for s in spacing]
    start = [lo[a] - pad[a] for a in range(len(shape))]
    stop = [hi[a] + pad[a] + 1 for a in range(len(shape))]
    below = [max(0, -s) for s in start]
    above = [max(0, e - n) for e, n in zip(stop, shape, strict=False)]
    img = labelmap
    if any(below) or any(above):
        img = sitk.ConstantPad(labelmap, below, above, 0)
        start = [s + b for s, b in zip(start, below, strict=False)]
    size = [e - s for s, e in zip(start, stop, strict=False)]
    labels = sitk.RegionOfInterest(img, size, [s for s in start])
    mask = sitk.Cast(labels == label, sitk.sitkUInt8)
    return DiscCrop(level=level, mask=mask, labels=labels, n_voxels=int(where[0].size))


def crop_like(image: sitk.Image, reference: sitk.Image, margin_mm: float = 0.0,
              interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid grown by ``margin_mm`` on every side (float32)."""
    spacing = np.asarray(reference.GetSpacing())
    grow = np.ceil(margin_mm / spacing).astype(int)
    direction = np.asarray(reference.GetDirection()).reshape(reference.GetDimension(), -1)
    origin = np.asarray(reference.GetOrigin()) - direction @ (grow * spacing)
    size = [int(s + 2 * g) for s, g in zip(reference.GetSize(), grow, strict=False)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, origin.tolist(), spacing.tolist(),
                         reference.GetDirection(), 0.0, sitk.sitkFloat32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    s = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / s) if s else float("nan")


def check_dimension(image: sitk.Image, dim: int, what: str = "labelmap") -> None:
    if image.GetDimension() not in (2, 3):
        raise InputError(f"The {what} has {image.GetDimension()} dimensions; give a 2D or 3D image.")
    if dim not in (2, 3):
        raise InputError(f"Registration dimension must be 2 or 3, not {dim}.")
