"""Disc-centred, scale-normalised crops for Pfirrmann grading.

Geometry (the same at training and at inference):

* The input is one sagittal slice as a 2D array indexed ``[row, col]`` with rows running superior ->
  inferior and columns running anterior -> posterior (the usual display; :mod:`.api` reorients 3D
  images to this before cropping). ``spacing_rc`` gives the physical size of a row step and a column
  step (mm, or 1, 1 when the spacing is unknown and the pixels are assumed square).
* A disc is described by its centre (row, col) and its *width*: the anterior-posterior extent of its
  axis-aligned bounding box in the slice (a YOLO box width in training; the extent of the disc's
  labelmap pixels at inference), in the same physical unit as the spacing.
* The crop is a square of side ``fov_factor * width`` centred on the disc, resampled to
  ``size x size`` pixels. Because it scales with the disc's own width, the same anatomy fills the
  crop whatever the pixel size or field of view of the scan. With the default ``fov_factor = 1.6`` it
  holds the whole disc, about half of each adjacent vertebral body (endplates included) and the spinal
  canal behind the disc (CSF), the reference tissue of Pfirrmann's signal criterion.

Intensity (:func:`normalise_crop`): each crop is scaled so that its 1st percentile maps to 0 and its
99th percentile to 1, computed on the pixels that lie inside the image. The 99th percentile of such a
crop is CSF or epidural fat, so a disc's value is expressed relative to the brightest fluid-like tissue
next to it, as a reader does (Pfirrmann 2001 grades nucleus signal against CSF). Unlike a whole-image
z-score it ignores coil shading and the body-fat content of the field of view, and unlike fixed windows
it does not depend on a scanner's arbitrary intensity scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default crop side as a multiple of the disc's bounding-box width (see module docstring).
FOV_FACTOR = 1.6
#: Default crop size in pixels.
CROP_SIZE = 64


@dataclass(frozen=True)
class DiscBox:
    """A disc in a 2D slice: centre (row, col) in pixels, extents in physical units (mm or pixels)."""

    center_rc: tuple[float, float]
    width: float
    height: float
    touches_edge: bool = False
    n_pixels: int = 0


def disc_box_from_mask(mask: np.ndarray, spacing_rc: tuple[float, float] = (1.0, 1.0)) -> DiscBox | None:
    """Bounding box of the True pixels of a 2D mask (rows superior->inferior, cols anterior->posterior).

    Width is the column (anterior-posterior) extent and height the row extent, both as continuous
    extents (``(max - min + 1) * spacing``), matching how an annotation box encloses the pixels.
    Returns None for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    touches = bool(r0 == 0 or c0 == 0 or r1 == mask.shape[0] - 1 or c1 == mask.shape[1] - 1)
    return DiscBox(
        center_rc=((r0 + r1) / 2.0, (c0 + c1) / 2.0),
        width=float(c1 - c0 + 1) * float(spacing_rc[1]),
        height=float(r1 - r0 + 1) * float(spacing_rc[0]),
        touches_edge=touches,
        n_pixels=int(rows.size),
    )


def crop_coordinates(
    center_rc: tuple[float, float],
    width: float,
    *,
    spacing_rc: tuple[float, float] = (1.0, 1.0),
    size: int = CROP_SIZE,
    fov_factor: float = FOV_FACTOR,
    angle_deg: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> np.ndarray:
    """Pixel coordinates (2, size, size) in the slice of the crop's sample points.

    ``angle_deg`` rotates the sampling grid about the disc centre, ``scale`` multiplies the field of view,
    ``shift`` moves the centre by a fraction of the field of view (row, col), ``flip`` mirrors the crop
    anterior <-> posterior. These are the augmentations (training) and test-time variants (inference).
    """
    side = fov_factor * width * scale  # physical units
    step = side / size
    u = (np.arange(size) - (size - 1) / 2.0) * step
    vv, uu = np.meshgrid(u, u, indexing="ij")  # vv: rows (down), uu: cols (posterior)
    if flip:
        uu = -uu
    a = np.deg2rad(angle_deg)
    ca, sa = np.cos(a), np.sin(a)
    dr = ca * vv - sa * uu + shift[0] * side
    dc = sa * vv + ca * uu + shift[1] * side
    rows = center_rc[0] + dr / float(spacing_rc[0])
    cols = center_rc[1] + dc / float(spacing_rc[1])
    return np.stack([rows, cols])


def extract_crop(
    slice2d: np.ndarray,
    center_rc: tuple[float, float],
    width: float,
    *,
    spacing_rc: tuple[float, float] = (1.0, 1.0),
    size: int = CROP_SIZE,
    fov_factor: float = FOV_FACTOR,
    angle_deg: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> tuple[np.ndarray, float]:
    """Resample a disc-centred crop (bilinear) and return it with the fraction of it outside the slice.

    The crop is intensity-normalised (:func:`normalise_crop`); samples outside the slice are set to 0
    after normalisation (dark, like air) and do not take part in the percentile statistics.
    """
    from scipy.ndimage import map_coordinates

    img = np.asarray(slice2d, dtype=np.float32)
    coords = crop_coordinates(
        center_rc, width, spacing_rc=spacing_rc, size=size, fov_factor=fov_factor,
        angle_deg=angle_deg, scale=scale, shift=shift, flip=flip,
    )
    inside = (
        (coords[0] >= -0.5) & (coords[0] <= img.shape[0] - 0.5) & (coords[1] >= -0.5) & (coords[1] <= img.shape[1] - 0.5)
    )
    vals = map_coordinates(img, coords, order=1, mode="nearest").astype(np.float32)
    out = normalise_crop(vals, inside)
    return out, float(1.0 - inside.mean())


def normalise_crop(crop: np.ndarray, valid: np.ndarray | None = None, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    """Scale so that the ``lo_pct`` percentile is 0 and the ``hi_pct`` percentile is 1 (clipped to [-0.5, 1.5]).

    Percentiles are taken over ``valid`` pixels (all when None); invalid pixels are set to 0. A flat crop
    becomes all zeros rather than dividing by zero.
    """
    crop = np.asarray(crop, dtype=np.float32)
    valid = np.ones(crop.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if not valid.any():
        return np.zeros_like(crop)
    lo, hi = np.percentile(crop[valid], [lo_pct, hi_pct])
    if not np.isfinite(hi - lo) or hi - lo <= 1e-6 * max(1.0, abs(hi)):
        out = np.zeros_like(crop)
    else:
        out = np.clip((crop - lo) / (hi - lo), -0.5, 1.5).astype(np.float32)
    out[~valid] = 0.0
    return out
