"""Synthetic sagittal scenes of known geometry for the marker tests (not collected by pytest).

A scene is one 2D sagittal slice (columns anterior -> posterior, rows superior -> inferior, as the 2D
convention of ``markers.geometry``) holding one disc (rectangle or ellipse) tilted by ``tilt_deg``
(positive: dorsal end cranial), the vertebral bodies above and below it along the disc's normal, and
optionally a CSF strip dorsal to them. Shapes are rasterised by their pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

DISC, UPPER, LOWER, CSF = 123, 23, 24, 61  # L4-L5, L4, L5


@dataclass(frozen=True)
class Scene:
    labels: np.ndarray  # [row, col]
    spacing_mm: float
    disc_diameter_mm: float
    disc_height_mm: float
    vb_height_mm: float
    tilt_deg: float

    def images(self, values: dict[int, float] | None = None, dtype=np.float32) -> tuple[sitk.Image, sitk.Image]:
        values = values or {DISC: 200.0, UPPER: 80.0, LOWER: 80.0, CSF: 250.0}
        img = np.full(self.labels.shape, 20.0)
        for k, v in values.items():
            img[self.labels == k] = v
        im = sitk.GetImageFromArray(img.astype(dtype))
        lab = sitk.GetImageFromArray(self.labels.astype(np.uint8))
        for x in (im, lab):
            x.SetSpacing((self.spacing_mm, self.spacing_mm))
        return im, lab


def _frame(shape, spacing, centre, tilt_deg):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float) * spacing
    a = np.radians(tilt_deg)
    ap = np.array([-np.sin(a), np.cos(a)])  # (row, col): dorsal, tilted cranially for tilt > 0
    si = np.array([-np.cos(a), -np.sin(a)])  # cranial, perpendicular to ap
    d = np.stack([rows - centre[0], cols - centre[1]], axis=-1)
    return d @ ap, d @ si, ap, si


def scene(shape: str = "rect", tilt_deg: float = 0.0, *, diameter_mm: float = 40.0, height_mm: float = 10.0,
          vb_height_mm: float = 26.0, vb_depth_mm: float = 36.0, spacing_mm: float = 0.5, size: int = 240,
          vertebrae: tuple[int, ...] = (UPPER, LOWER), csf: bool = True, mirror: bool = False) -> Scene:
    centre = (np.array([size / 2, size / 2]) + 0.25) * spacing_mm  # off the pixel grid: no ties on edges
    t, s, _ap, _si = _frame((size, size), spacing_mm, centre, tilt_deg)
    lab = np.zeros((size, size), np.uint8)
    if shape == "rect":
        disc = (np.abs(t) <= diameter_mm / 2) & (np.abs(s) <= height_mm / 2)
    else:
        disc = (t / (diameter_mm / 2)) ** 2 + (s / (height_mm / 2)) ** 2 <= 1.0
    gap = 0.5  # mm between disc and bodies
    offset = height_mm / 2 + gap + vb_height_mm / 2
    if UPPER in vertebrae:
        lab[(np.abs(t) <= vb_depth_mm / 2) & (np.abs(s - offset) <= vb_height_mm / 2)] = UPPER
    if LOWER in vertebrae:
        lab[(np.abs(t) <= vb_depth_mm / 2) & (np.abs(s + offset) <= vb_height_mm / 2)] = LOWER
    if csf:
        lab[(t >= vb_depth_mm / 2 + 4) & (t <= vb_depth_mm / 2 + 12) & (np.abs(s) <= 40)] = CSF
    lab[disc] = DISC
    if mirror:
        lab = lab[:, ::-1].copy()
    return Scene(lab, spacing_mm, diameter_mm, height_mm, vb_height_mm, tilt_deg)


def stack(sc: Scene, n_slices: int = 7, thickness_mm: float = 4.0, posterior_sign: float = 1.0,
          values: dict[int, float] | None = None) -> tuple[sitk.Image, sitk.Image]:
    """3D sagittal stack of ``n_slices`` copies of the scene with LPS geometry like the phantom's:
    i -> posterior (or anterior with ``posterior_sign=-1``, the slice mirrored so anatomy is unchanged),
    j -> inferior, k -> right."""
    im2, lab2 = sc.images(values)
    a = sitk.GetArrayFromImage(im2)
    lab = sitk.GetArrayFromImage(lab2)
    if posterior_sign < 0:
        a, lab = a[:, ::-1], lab[:, ::-1]
    a3 = np.repeat(a[None], n_slices, axis=0)
    l3 = np.repeat(lab[None], n_slices, axis=0)
    out = []
    for arr in (a3, l3):
        x = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        x.SetSpacing((sc.spacing_mm, sc.spacing_mm, thickness_mm))
        x.SetDirection((0.0, 0.0, -1.0, posterior_sign, 0.0, 0.0, 0.0, -1.0, 0.0))
        x.SetOrigin((10.0, -50.0, 60.0))
        out.append(x)
    return out[0], out[1]
