"""Sagittal-plane geometry of disc and vertebra masks: slices, the disc's own AP axis, chords, zones.

Coordinates
-----------
Every measurement is taken in a *sagittal plane* in millimetres. For a 3D image the sagittal slice axis is
the index axis whose direction (ITK LPS) is closest to left-right (LPS x); the two other index axes span
the slice, and in-plane physical coordinates are ``(row * row_spacing, col * col_spacing)`` along those
axes' direction cosines (an orthonormal basis, so distances and angles are preserved). Ventral->dorsal is
LPS +y (posterior) and caudal->cranial is LPS +z (superior), read from the direction matrix.

A 2D image (a PNG/BMP slice, or a 2D NRRD) has no patient orientation. We follow the usual display of a
sagittal spine slice: columns run anterior -> posterior and rows superior -> inferior. When the labelmap
holds CSF (label 61), the dorsal side of each disc is instead taken as the side where the CSF (spinal
canal) lies, which is anatomy, not convention.

The disc's AP axis
------------------
Discs are tilted (lordosis), so the AP axis is never an image axis: it is the principal axis (largest
eigenvector of the covariance of the pixel centres, in mm) of the disc's largest connected component in
its mid-sagittal slice, oriented ventral->dorsal. The cranio-caudal axis is perpendicular to it in the
slice, oriented cranially.

Ventral-dorsal zones
--------------------
:func:`ventral_dorsal_zones` is the one definition of the regional zones used by markers and relaxometry
summaries: in each sagittal slice, project the centres of the disc's pixels on the disc's AP axis (the
mid-sagittal axis, shared by all slices of the disc); the zone interval runs from the most ventral pixel's
ventral edge to the most dorsal pixel's dorsal edge (pixel centre -/+ half the pixel's extent along the
axis) and is cut into ``n`` equal lengths; zone 1 is the most ventral, zone ``n`` the most dorsal; a pixel
belongs to the zone containing its centre. Each slice is divided over its own AP extent (the lateral
slices of a disc are shorter), following Lagerstrand et al.'s "5 equally large
sub-regions in the ventral-dorsal direction" (fissure paper, Methods).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..image_io import grid_differences, spacing_known

log = logging.getLogger(__name__)

#: Orientation sources reported with each level.
ORIENT_DIRECTION = "image direction (LPS)"
ORIENT_2D = "2D convention (columns anterior->posterior)"
ORIENT_CSF = "CSF side is dorsal"


@dataclass(frozen=True)
class SagittalFrame:
    """How the sagittal slices of an image are laid out in its numpy array.

    ``slice_axis`` is the numpy axis (array order ``[k, j, i]``) that indexes the sagittal slices, None
    for a 2D image. Each slice is a 2D array ``[row, col]`` with ``spacing_rc_mm`` in-plane. ``posterior``
    and ``superior`` are 2-vectors in the slice's physical (row, col) coordinates; ``spacing_known``
    False means the spacings are placeholders (1 px) and lengths are not in mm.
    """

    slice_axis: int | None
    n_slices: int
    spacing_rc_mm: tuple[float, float]
    slice_thickness_mm: float | None
    posterior: tuple[float, float]
    superior: tuple[float, float]
    orientation_source: str
    spacing_known: bool

    def slice(self, array: np.ndarray, index: int) -> np.ndarray:
        if self.slice_axis is None:
            return array
        return np.take(array, index, axis=self.slice_axis)

    @property
    def pixel_area(self) -> float:
        return self.spacing_rc_mm[0] * self.spacing_rc_mm[1]


def sagittal_frame(image: sitk.Image) -> SagittalFrame:
    """The sagittal layout of ``image`` (2D or 3D)."""
    dim = image.GetDimension()
    known = spacing_known(image)
    sp = image.GetSpacing()
    if dim == 2:
        spacing_rc = (float(sp[1]), float(sp[0])) if known else (1.0, 1.0)
        return SagittalFrame(None, 1, spacing_rc, None, (0.0, 1.0), (-1.0, 0.0), ORIENT_2D, known)
    if dim != 3:
        raise InputError(f"Expected a 2D slice or a 3D volume; got a {dim}D image.")
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)  # column a: LPS direction of index axis a
    s = int(np.argmax(np.abs(d[0, :])))
    p, q = sorted(set(range(3)) - {s})
    # numpy array axes are reversed sitk axes: taking numpy axis (2 - s) leaves rows = sitk q, cols = sitk p.
    rows_dir, cols_dir = d[:, q], d[:, p]
    posterior = np.array([rows_dir[1], cols_dir[1]])
    superior = np.array([rows_dir[2], cols_dir[2]])
    if np.linalg.norm(posterior) < 0.5 or np.linalg.norm(superior) < 0.5:
        raise InputError(
            "The image's slices are not close to sagittal (its direction matrix has no index axis near "
            "left-right), so anterior/posterior cannot be read from it. Use a sagittal series."
        )
    posterior /= np.linalg.norm(posterior)
    superior /= np.linalg.norm(superior)
    spacing_rc = (float(sp[q]), float(sp[p]))
    return SagittalFrame(
        slice_axis=2 - s,
        n_slices=int(image.GetSize()[s]),
        spacing_rc_mm=spacing_rc,
        slice_thickness_mm=float(sp[s]),
        posterior=(float(posterior[0]), float(posterior[1])),
        superior=(float(superior[0]), float(superior[1])),
        orientation_source=ORIENT_DIRECTION,
        spacing_known=True,
    )


def check_same_grid(image: sitk.Image, labels: sitk.Image, what: str = "labelmap") -> None:
    """Raise InputError unless ``labels`` lies on ``image``'s voxel grid (size, spacing, origin, direction)."""
    problems = grid_differences(labels, image)
    if problems:
        raise InputError(
            f"The {what} is not on the image grid ({'; '.join(problems)}). Resample it onto the image with "
            "nearest-neighbour interpolation (e.g. Slicer's 'Resample Image (BRAINS)' with the image as "
            "reference), or export the segmentation using the image as reference geometry."
        )


def slice_points(mask2d: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """Physical (row, col) coordinates in mm of the centres of the mask's pixels, shape (n, 2)."""
    r, c = np.nonzero(mask2d)
    return np.column_stack([r * spacing_rc[0], c * spacing_rc[1]]).astype(float)


def largest_component(mask2d: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D mask (the mask itself when it has one component)."""
    lab, n = ndimage.label(mask2d, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask2d.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


@dataclass(frozen=True)
class Axes2D:
    """The disc's in-plane axes (unit 2-vectors, physical row/col coordinates) and its centroid (mm)."""

    centroid: np.ndarray
    ap: np.ndarray  # ventral -> dorsal
    si: np.ndarray  # caudal -> cranial

    def tilt_deg(self, frame: SagittalFrame) -> float:
        """Angle of the AP axis to the image's posterior direction, positive when its dorsal end is cranial.

        The reference is the image's posterior direction taken with the sense of the AP axis (a 2D image whose
        dorsal side came from the CSF may be mirrored), so the angle is the disc's tilt in either case.
        """
        post = np.asarray(frame.posterior)
        if post @ self.ap < 0:
            post = -post
        sup = np.asarray(frame.superior)
        return float(np.degrees(np.arctan2(self.ap @ sup, self.ap @ post)))


def principal_axes(points: np.ndarray, frame: SagittalFrame, dorsal_hint: np.ndarray | None = None) -> Axes2D:
    """AP axis = major principal axis of ``points`` (mm), oriented dorsally; SI axis perpendicular, cranial.

    ``dorsal_hint`` (a point, e.g. the CSF centroid) overrides the frame's posterior direction for the sign.
    """
    if len(points) < 3:
        raise ValueError("need at least 3 points")
    centroid = points.mean(axis=0)
    cov = np.cov((points - centroid).T)
    w, v = np.linalg.eigh(cov)
    ap = v[:, int(np.argmax(w))]
    ref = np.asarray(frame.posterior) if dorsal_hint is None else np.asarray(dorsal_hint) - centroid
    if ap @ ref < 0:
        ap = -ap
    si = np.array([-ap[1], ap[0]])
    if si @ np.asarray(frame.superior) < 0:
        si = -si
    return Axes2D(centroid, ap, si)


def chord(mask2d: np.ndarray, spacing_rc: tuple[float, float], through: np.ndarray, direction: np.ndarray,
          ) -> tuple[float, float] | None:
    """Where the line ``through + t * direction`` enters and leaves the mask: (t_first, t_last) in mm.

    The line is sampled every 1/20 of the smaller pixel size and each sample takes the value of the pixel
    containing it, so the chord of an axis-aligned run of N pixels is N pixels long. Returns None when the
    line misses the mask.
    """
    step = min(spacing_rc) / 20.0
    reach = float(np.hypot(mask2d.shape[0] * spacing_rc[0], mask2d.shape[1] * spacing_rc[1]))
    t = np.arange(-reach, reach + step, step)
    pts = through[None, :] + t[:, None] * direction[None, :]
    r = np.floor(pts[:, 0] / spacing_rc[0] + 0.5).astype(int)
    c = np.floor(pts[:, 1] / spacing_rc[1] + 0.5).astype(int)
    ok = (r >= 0) & (r < mask2d.shape[0]) & (c >= 0) & (c < mask2d.shape[1])
    inside = np.zeros(t.shape, dtype=bool)
    inside[ok] = mask2d[r[ok], c[ok]]
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        return None
    return float(t[idx[0]] - step / 2), float(t[idx[-1]] + step / 2)


def supersampled_points(mask2d: np.ndarray, spacing_rc: tuple[float, float], k: int) -> np.ndarray:
    """k x k sample points per mask pixel (physical row/col, mm), each standing for 1/k^2 of the pixel."""
    base = slice_points(mask2d, spacing_rc)
    offs = (np.arange(k) + 0.5) / k - 0.5
    dr, dc = np.meshgrid(offs * spacing_rc[0], offs * spacing_rc[1], indexing="ij")
    sub = np.column_stack([dr.ravel(), dc.ravel()])
    return (base[:, None, :] + sub[None, :, :]).reshape(-1, 2)


def pixel_half_extent(direction: np.ndarray, spacing_rc: tuple[float, float]) -> float:
    """Half the extent of one pixel when projected on ``direction`` (mm)."""
    return 0.5 * (abs(direction[0]) * spacing_rc[0] + abs(direction[1]) * spacing_rc[1])


def zones_in_slice(mask2d: np.ndarray, spacing_rc: tuple[float, float], ap: np.ndarray, n_zones: int) -> np.ndarray:
    """Zone index (1..n_zones, 0 outside) of each pixel of one sagittal slice; see the module docstring."""
    out = np.zeros(mask2d.shape, dtype=np.uint8)
    if not mask2d.any():
        return out
    r, c = np.nonzero(mask2d)
    t = r * spacing_rc[0] * ap[0] + c * spacing_rc[1] * ap[1]
    h = pixel_half_extent(ap, spacing_rc)
    lo, hi = t.min() - h, t.max() + h
    z = np.floor(n_zones * (t - lo) / (hi - lo)).astype(int)
    out[r, c] = (np.clip(z, 0, n_zones - 1) + 1).astype(np.uint8)
    return out


def mid_sagittal_index(mask: np.ndarray, frame: SagittalFrame) -> int | None:
    """Index of the sagittal slice through the mask's centre (voxel-weighted), among slices that hold it."""
    if frame.slice_axis is None:
        return 0 if mask.any() else None
    other = tuple(a for a in range(mask.ndim) if a != frame.slice_axis)
    counts = mask.sum(axis=other)
    present = np.nonzero(counts)[0]
    if present.size == 0:
        return None
    centre = float((np.arange(counts.size) * counts).sum() / counts.sum())
    # nearest slice holding the mask; ties go to the slice with more of it
    return int(min(present, key=lambda i: (abs(i - centre), -counts[i])))


def central_slice_indices(mask: np.ndarray, frame: SagittalFrame, mid: int, n: int) -> list[int]:
    """The up to ``n`` slices centred on ``mid`` (mid-2..mid+2 for n=5) that hold the mask, in order."""
    if frame.slice_axis is None:
        return [0]
    half = n // 2
    wanted = range(mid - half, mid - half + n)
    other = tuple(a for a in range(mask.ndim) if a != frame.slice_axis)
    counts = mask.sum(axis=other)
    return [i for i in wanted if 0 <= i < counts.size and counts[i] > 0]


def ventral_dorsal_zones(mask: sitk.Image, n_zones: int = 5, *, csf: sitk.Image | None = None) -> sitk.Image:
    """Label the disc ``mask`` (non-zero voxels) with ventral->dorsal zones 1..n_zones (0 outside).

    Works on a 2D slice or a 3D sagittal stack and returns a UInt8 image on the same grid. Zones are
    defined per sagittal slice along the disc's own AP axis (principal axis of its mid-sagittal slice),
    each slice's AP extent cut into ``n_zones`` equal lengths (see the module docstring for the exact
    rule). 3D images take ventral/dorsal from their direction matrix; a 2D slice from ``csf`` (a mask on
    the same grid, e.g. ``labels == 61``: the spinal canal is dorsal) when given and non-empty on that
    slice, else from the display convention (columns anterior -> posterior). This is the one definition
    used by the regional markers (``compute_markers``) and the relaxometry zone summaries.
    """
    if n_zones < 1:
        raise InputError(f"n_zones must be at least 1; got {n_zones}.")
    frame = sagittal_frame(mask)
    arr = sitk.GetArrayViewFromImage(mask) != 0
    out = np.zeros(arr.shape, dtype=np.uint8)
    mid = mid_sagittal_index(arr, frame)
    if mid is not None:
        mid_mask = largest_component(frame.slice(arr, mid))
        pts = slice_points(mid_mask, frame.spacing_rc_mm)
        hint = None
        if csf is not None and frame.slice_axis is None:
            check_same_grid(mask, csf, what="CSF mask")
            csf_mid = sitk.GetArrayViewFromImage(csf) != 0
            if csf_mid.any():
                hint = slice_points(csf_mid, frame.spacing_rc_mm).mean(axis=0)
        if len(pts) >= 3:
            axes = principal_axes(pts, frame, hint)
            for i in range(frame.n_slices):
                z = zones_in_slice(frame.slice(arr, i), frame.spacing_rc_mm, axes.ap, n_zones)
                if frame.slice_axis is None:
                    out = z
                else:
                    idx = [slice(None)] * arr.ndim
                    idx[frame.slice_axis] = i
                    out[tuple(idx)] = z
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(mask)
    return result
