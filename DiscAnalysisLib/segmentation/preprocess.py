"""Input handling for the segmentation network: orientation, pixel size and intensity normalisation.

The network works on *canonical sagittal slices*: a 2D array whose rows run superior -> inferior and whose
columns run anterior -> posterior (the usual display of a sagittal spine image, patient facing left), at
:data:`TRAIN_SPACING_MM` per pixel. A 3D image is turned into a stack of such slices, indexed by the
left-right axis, purely by permuting/flipping array axes according to its direction matrix (no
resampling across slices); in-plane resampling to the training pixel size is done on the stack.

Intensity normalisation follows the voxel-based relaxometry pipeline (adaptive histogram equalisation,
then zero-mean unit-variance), preceded by a robust percentile clip so that a few very bright voxels
(fat, vessels, fluid) from another scanner do not set the scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

#: Pixel size (mm) the network was trained at; inputs are resampled in-plane to it.
TRAIN_SPACING_MM = 1.0
#: Field of view (mm) assumed along the larger side of a bitmap with unknown pixel size. A lumbar sagittal
#: FOV is typically 260-320 mm; the network is trained with +-25 % scale augmentation to absorb the error.
ASSUMED_FOV_MM = 280.0
#: Smallest in-plane size (pixels) accepted.
MIN_SIZE_PX = 32
#: Coarsest in-plane spacing (mm) accepted after reorientation (a thick-slice axial stack resliced to
#: sagittal has its slice thickness along superior-inferior and cannot show discs a few mm high).
MAX_INPLANE_SPACING_MM = 2.0
#: Largest angle (degrees) between an image axis and the anatomical axis it is taken for.
MAX_OBLIQUE_DEG = 45.0
#: Robust intensity window (percentiles) before histogram equalisation.
CLIP_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class CanonicalStack:
    """A sagittal stack in canonical layout plus what is needed to map results back.

    ``slices``: float32 array (n_slices, rows S->I, cols A->P) at the input's own in-plane spacing.
    ``spacing_mm``: (left-right, superior-inferior, anterior-posterior) spacing in mm.
    ``axes``/``flips``: for each canonical axis, the numpy axis of the input array and whether it was
    reversed (see :func:`from_canonical`).
    """

    slices: np.ndarray
    spacing_mm: tuple[float, float, float]
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    input_shape: tuple[int, ...]
    spacing_known: bool
    spacing_note: str
    oblique_deg: float


def to_canonical(image: sitk.Image, *, pixel_spacing_mm: float | None = None) -> CanonicalStack:
    """Turn a 2D slice or a 3D volume into canonical sagittal slices (see module docstring).

    2D images carry no anatomical orientation: they are taken as displayed (rows superior -> inferior,
    columns anterior -> posterior). 3D images are reoriented from their direction matrix; an axial or
    coronal volume is accepted only when its spacing along superior-inferior and anterior-posterior is
    fine enough (<= 2 mm) to be read as sagittal slices.
    """
    from ..image_io import spacing_known

    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"The image has {image.GetNumberOfComponentsPerPixel()} components per pixel; segmentation needs a "
            "grey-scale T2-weighted image. Convert it to grey first."
        )
    if dim not in (2, 3):
        raise InputError(
            f"The image is {dim}D; segmentation needs one sagittal slice (2D) or a sagittal stack (3D). "
            "For a 4D series pick one volume (e.g. the T2-weighted echo) first."
        )
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    known = spacing_known(image)
    if dim == 2:
        rows_sp, cols_sp = image.GetSpacing()[1], image.GetSpacing()[0]
        note = "from file"
        if pixel_spacing_mm is not None:
            rows_sp = cols_sp = float(pixel_spacing_mm)
            note = "given by the user"
            known = True
        elif not known:
            rows_sp = cols_sp = ASSUMED_FOV_MM / max(arr.shape)
            note = f"unknown; assumed {rows_sp:.3f} mm from a {ASSUMED_FOV_MM:g} mm field of view"
        _check_size(arr.shape)
        return CanonicalStack(
            arr[None], (1.0, float(rows_sp), float(cols_sp)), (-1, 0, 1), (False, False, False), arr.shape,
            known, note, 0.0,
        )

    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    # For each anatomical axis (LPS x = left-right, y = anterior-posterior, z = inferior-superior) find
    # the image index axis most aligned with it.
    cos = np.abs(direction)  # [anatomical, index]
    idx_for = {}
    used: set[int] = set()
    for anat in np.argsort(-cos.max(axis=1)):
        order = [d for d in np.argsort(-cos[anat]) if d not in used]
        idx_for[int(anat)] = int(order[0])
        used.add(int(order[0]))
    worst = min(cos[a, idx_for[a]] for a in range(3))
    oblique = float(np.degrees(np.arccos(np.clip(worst, -1, 1))))
    if oblique > MAX_OBLIQUE_DEG:
        raise InputError(
            f"The image axes are oblique by {oblique:.0f} degrees to the patient axes, so it is not clear which "
            "axis is sagittal. Reformat the volume to a sagittal orientation (e.g. in 3D Slicer) and try again."
        )
    lr_idx, ap_idx, si_idx = idx_for[0], idx_for[1], idx_for[2]
    # numpy axis of index axis d is 2 - d
    axes = (2 - lr_idx, 2 - si_idx, 2 - ap_idx)
    flip_si = direction[2, si_idx] > 0  # index increases superiorly -> reverse to run S->I
    flip_ap = direction[1, ap_idx] < 0  # index increases anteriorly -> reverse to run A->P
    flips = (False, bool(flip_si), bool(flip_ap))
    sp = (float(spacing[lr_idx]), float(spacing[si_idx]), float(spacing[ap_idx]))
    if arr.shape[axes[1]] == 1 or arr.shape[axes[2]] == 1:
        raise InputError(
            "The image is a single axial or coronal slice; segmentation needs sagittal slices. Use the "
            "sagittal T2-weighted series."
        )
    if max(sp[1], sp[2]) > MAX_INPLANE_SPACING_MM:
        kind = "axial" if sp[1] > MAX_INPLANE_SPACING_MM else "coronal"
        raise InputError(
            f"This looks like a{'n' if kind == 'axial' else ''} {kind} series: after reorientation to sagittal its "
            f"pixels are {sp[1]:.2g} mm (superior-inferior) x {sp[2]:.2g} mm (anterior-posterior), too coarse to "
            f"show discs (needs <= {MAX_INPLANE_SPACING_MM:g} mm). Use the sagittal T2-weighted series."
        )
    stack = np.transpose(arr, axes)
    if flips[1]:
        stack = stack[:, ::-1]
    if flips[2]:
        stack = stack[:, :, ::-1]
    _check_size(stack.shape[1:])
    return CanonicalStack(
        np.ascontiguousarray(stack), sp, axes, flips, arr.shape, True, "from file", oblique,
    )


def from_canonical(stack: CanonicalStack, values: np.ndarray) -> np.ndarray:
    """Map an array in canonical layout (n_slices, rows, cols) back to the input's numpy layout."""
    out = values
    if stack.flips[2]:
        out = out[:, :, ::-1]
    if stack.flips[1]:
        out = out[:, ::-1]
    if stack.axes[0] == -1:  # 2D input
        return np.ascontiguousarray(out[0])
    inverse = np.argsort(stack.axes)
    return np.ascontiguousarray(np.transpose(out, inverse))


def _check_size(shape) -> None:
    if min(shape) < MIN_SIZE_PX:
        raise InputError(
            f"The image is too small ({' x '.join(str(s) for s in shape)} pixels in the sagittal plane); "
            f"segmentation needs at least {MIN_SIZE_PX} x {MIN_SIZE_PX} pixels showing the lumbar spine."
        )


# ----------------------------------------------------------------------------------------- intensities
def scale_unit(slice_: np.ndarray, percentiles=CLIP_PERCENTILES) -> np.ndarray:
    """Clip to robust percentiles of the slice and scale to [0, 1] (float32)."""
    x = np.asarray(slice_, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, 0.0)
    lo, hi = np.percentile(x, percentiles)
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def equalise_standardise(unit: np.ndarray) -> np.ndarray:
    """Adaptive histogram equalisation (CLAHE) then zero-mean unit-variance, as the relaxometry paper does."""
    from skimage import exposure

    if unit.max() <= 0:
        return np.zeros_like(unit, dtype=np.float32)
    # Kernel ~ 1/8 of the image (skimage's default); clip limit 0.01 (skimage's default) keeps noise tame.
    eq = exposure.equalize_adapthist(unit, clip_limit=0.01).astype(np.float32)
    sd = float(eq.std())
    return ((eq - float(eq.mean())) / (sd if sd > 1e-6 else 1.0)).astype(np.float32)


def normalise_slice(slice_: np.ndarray) -> np.ndarray:
    """The full intensity normalisation of one 2D slice (percentile clip, CLAHE, z-score)."""
    return equalise_standardise(scale_unit(slice_))


def resample_inplane(stack: np.ndarray, spacing_rc_mm: tuple[float, float], target_mm: float = TRAIN_SPACING_MM) -> np.ndarray:
    """Resample a stack (n, rows, cols) in-plane from ``spacing_rc_mm`` to ``target_mm`` (bilinear)."""
    import torch

    n, h, w = stack.shape
    nh = max(1, int(round(h * spacing_rc_mm[0] / target_mm)))
    nw = max(1, int(round(w * spacing_rc_mm[1] / target_mm)))
    if (nh, nw) == (h, w):
        return stack.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    out = torch.nn.functional.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def resize_channels(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (n, c, rows, cols) probabilities to ``size`` (bilinear), used to map results back."""
    import torch

    if probs.shape[-2:] == tuple(size):
        return probs
    t = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False).numpy()
