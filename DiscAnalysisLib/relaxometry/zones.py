"""Ventral-to-dorsal zones of a disc: equal fifths along its anterior-posterior axis.

Definition (self-contained so that other modules can adopt or replace it):

1. Take the physical positions (mm, LPS) of the disc's voxel centres: ``direction @ (index * spacing)``.
2. Principal axes of those positions (eigenvectors of their covariance). A disc is flat: the smallest
   axis is its cranio-caudal normal, the two larger ones span its mid-plane (anterior-posterior and
   left-right; in a single sagittal slice the left-right extent is zero and the in-plane axes are AP and
   cranio-caudal). The **AP axis** is the one of the two largest principal axes that is most parallel to
   the patient's posterior direction (LPS +y, or ``posterior`` if given), oriented to point posterior.
   Following the disc's own axis (rather than the image y axis) keeps the zones perpendicular to the disc
   even where the disc is tilted (L5-S1).
3. Project each voxel centre on that axis; the extent between the most anterior and the most posterior
   voxel centre is cut into ``n_zones`` equal lengths. Zone 1 is the most ventral (anterior), zone
   ``n_zones`` the most dorsal (posterior); voxels exactly on a boundary go to the more dorsal zone,
   the most dorsal voxel to the last zone.

Arrays are in SimpleITK array order (k, j, i); ``spacing`` and ``direction`` in ITK order (i, j, k).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

ZONE_NAMES_5 = ("ventral", "ventral-mid", "mid", "dorsal-mid", "dorsal")


def disc_ap_axis(
    mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    posterior: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit AP axis (physical, pointing posterior) of the voxels in ``mask`` and their positions along it (mm).

    Returns ``(axis, s)`` with ``s`` the projection of each ``np.argwhere(mask)`` voxel centre, relative to
    the disc's centroid. Raises ValueError for an empty mask.
    """
    mask = np.asarray(mask) != 0
    dim = mask.ndim
    idx = np.argwhere(mask)
    if idx.shape[0] == 0:
        raise ValueError("empty disc mask")
    sp = np.ones(dim) if spacing is None else np.asarray(spacing, dtype=float)[:dim]
    d = np.eye(dim) if direction is None else np.asarray(direction, dtype=float).reshape(dim, dim)
    # index (k, j, i) -> (i, j, k) -> physical offset (origin cancels in the centred positions)
    phys = (idx[:, ::-1] * sp) @ d.T
    centred = phys - phys.mean(axis=0)
    post = np.zeros(dim)
    if posterior is None:
        post[min(1, dim - 1)] = 1.0  # LPS +y is posterior
    else:
        post = np.asarray(posterior, dtype=float)[:dim]
        post = post / np.linalg.norm(post)
    if idx.shape[0] == 1:
        return post, np.zeros(1)
    cov = centred.T @ centred / idx.shape[0]
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    candidates = vecs[:, -2:] if dim >= 2 else vecs
    axis = candidates[:, int(np.argmax(np.abs(post @ candidates)))]
    if axis @ post < 0:
        axis = -axis
    return axis, centred @ axis


def disc_zones(
    mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    n_zones: int = 5,
    posterior: Sequence[float] | None = None,
) -> np.ndarray:
    """Zone number (1 = ventral ... ``n_zones`` = dorsal) of every voxel of ``mask``; 0 outside it.

    An empty mask gives all zeros. A disc whose AP extent is zero (a single voxel column) is all zone 1.
    """
    mask = np.asarray(mask) != 0
    zones = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return zones
    _, s = disc_ap_axis(mask, spacing, direction, posterior)
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 1e-9:
        z = np.zeros(s.shape, int)
    else:
        z = np.floor(n_zones * (s - lo) / (hi - lo)).astype(int)
        z = np.clip(z, 0, n_zones - 1)
    zones[mask] = (z + 1).astype(np.uint8)  # np.argwhere and boolean indexing share C order
    return zones


def marker_zones(
    mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    n_zones: int = 5,
) -> np.ndarray:
    """The regional markers' zones (:func:`DiscAnalysisLib.markers.geometry.ventral_dorsal_zones`) for a mask
    array in SimpleITK (k, j, i) order: each sagittal slice's extent along the disc's own AP axis cut into
    ``n_zones`` equal lengths. This is the default of the relaxometry summaries, so that a zone means the same
    thing in the T2/T1rho summaries and in the 12 regional markers.
    """
    from ..markers.geometry import ventral_dorsal_zones

    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    if spacing is not None:
        image.SetSpacing(tuple(float(s) for s in spacing))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return sitk.GetArrayFromImage(ventral_dorsal_zones(image, n_zones))
