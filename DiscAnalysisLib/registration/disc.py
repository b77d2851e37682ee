"""Register one disc mask to its atlas disc: centroid shift, affine, B-spline with rigidity penalty.

Transform convention (ITK's, used by elastix and SimpleITK resampling): the *forward* transform maps a
point of the atlas (fixed) grid to the patient (moving) point it takes its value from, so resampling a
patient image with it onto the atlas grid gives the image in atlas space. The *inverse* maps patient
points to atlas points and brings atlas-space results (statistical maps, atlas labels) back to the
patient. It is computed by inverting the displacement field (SimpleITK InvertDisplacementField,
fixed-point iteration) on a grid covering both domains after the centroid shift; the round-trip error
|inverse(forward(x)) - x| over the atlas disc is reported per disc (``inverse_error_mm``), so a poor
inversion is visible rather than silent. Registering atlas->patient separately was the alternative; it
gives a transform that is not the inverse of the forward one, so results would not round-trip.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from . import elastix
from .geometry import DiscSkipped, centroid_mm, dice

INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


@dataclass(frozen=True)
class RegistrationSettings:
    """Settings of the per-disc registration.

    The B-spline defaults (grid spacing, iterations, rigidity weight) were chosen by Bayesian
    optimisation (scripts/tune_registration.py); the numbers that justified them are in
    docs/validation.md, section "Registration".
    """

    # Tuned in 2D (scripts/tune_registration.py, docs/validation.md "Registration"): the lowest objective
    # L = mean(1 - Dice + SD(J)) among the trials whose mean Dice on the tuning discs met the 0.95 goal.
    grid_spacing_mm: float = 1.951
    bspline_iterations: int = 100
    rigidity_weight: float = 0.6427
    # 3D, tuned the same way (scripts/tune_registration.py --dim 3, 14 trials on 10 tuning discs): the
    # lowest L among the trials with mean Dice >= 0.93, no folding and <= 12 CPU s per disc (rule fixed
    # before the study)
    grid_spacing_3d_mm: float = 3.922
    bspline_iterations_3d: int = 50
    rigidity_weight_3d: float = 0.1039
    bspline_resolutions_3d: int = 2
    # elastix's step-size estimation in the B-spline stage: the 2D defaults were tuned and validated with
    # "Original"; in 3D "DisplacementDistribution" gave the same Dice / Jacobian SD ~3 CPU s faster per disc
    step_estimation: str = "Original"
    step_estimation_3d: str = "DisplacementDistribution"
    affine_iterations: int = 100  # per resolution (masks converge fast; 200 gave the same Dice)
    affine_resolutions: int = 4  # the paper's four-resolution recursive pyramid
    bspline_resolutions: int = 2
    mask_sigma_mm: float = 0.5  # Gaussian smoothing of the binary masks the metric compares
    margin_mm: float = 5.0  # region kept around each disc
    # 3D: both masks are resampled to this isotropic spacing for the registration itself (the atlas has
    # 4.4 mm slices; a pyramid on such a grid collapses the slice axis and the affine stage fails)
    registration_spacing_3d_mm: float = 1.0
    spatial_samples: int = 1024
    threads: int = 1  # ITK threads per registration (set globally: ITKElastix issue 160)
    affine_only: bool = False  # skip the B-spline stage (baseline for benchmarks)
    seed: int = 0

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiscTransform:
    """The result of registering one disc: transforms, grids, Jacobian and quality numbers."""

    level: str
    forward: sitk.Transform  # atlas point -> patient point (resample patient data onto atlas_grid)
    inverse: sitk.Transform  # patient point -> atlas point (resample atlas data onto patient_grid)
    atlas_grid: sitk.Image  # atlas disc mask (uint8) on the atlas crop grid
    patient_grid: sitk.Image  # patient disc mask (uint8) on the patient crop grid
    jacobian: sitk.Image  # determinant of the spatial Jacobian of `forward`, on atlas_grid
    dice: float  # patient mask warped (nearest neighbour) vs atlas mask
    jacobian_mean: float  # over the atlas disc
    jacobian_sd: float  # over the atlas disc
    folding_fraction: float  # fraction of atlas-grid voxels with J <= 0
    inverse_error_mm: float  # mean |inverse(forward(x)) - x| over atlas-disc voxels
    seconds: float
    cpu_seconds: float = float("nan")  # CPU time of this process for the disc (all its threads)

    def metrics_row(self) -> dict:
        return {
            "dice": round(self.dice, 4),
            "jacobian_mean": round(self.jacobian_mean, 4),
            "jacobian_sd": round(self.jacobian_sd, 4),
            "folding_fraction": round(self.folding_fraction, 6),
            "inverse_error_mm": round(self.inverse_error_mm, 4),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
        }


def _smoothed(mask: sitk.Image, sigma_mm: float) -> sitk.Image:
    img = sitk.Cast(mask, sitk.sitkFloat32)
    return sitk.SmoothingRecursiveGaussian(img, sigma_mm) if sigma_mm > 0 else img


def _isotropic(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Float image resampled (linear) to isotropic ``spacing_mm`` over the same physical extent."""
    old = np.asarray(image.GetSpacing())
    size = np.asarray(image.GetSize())
    new_size = [int(np.ceil(n * o / spacing_mm)) for n, o in zip(size, old, strict=True)]
    direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1)
    # keep the outer edge of the first voxel where it was
    origin = np.asarray(image.GetOrigin()) + direction @ ((spacing_mm - old) / 2.0)
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), new_size, sitk.Transform(), sitk.sitkLinear,
                         origin.tolist(), [spacing_mm] * image.GetDimension(), image.GetDirection(), 0.0,
                         sitk.sitkFloat32)


def _union_grid(atlas: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """A grid in the atlas's orientation and spacing covering the atlas grid and the moving image."""
    dim = atlas.GetDimension()
    size = np.asarray(moving.GetSize())
    corners = []
    for bits in range(2**dim):
        idx = [(size[a] - 1) * ((bits >> a) & 1) for a in range(dim)]
        p = moving.TransformIndexToPhysicalPoint([int(i) for i in idx])
        corners.append(atlas.TransformPhysicalPointToContinuousIndex(p))
    corners = np.asarray(corners)
    lo = np.minimum(np.floor(corners.min(axis=0)), 0).astype(int) - 2
    hi = np.maximum(np.ceil(corners.max(axis=0)), np.asarray(atlas.GetSize()) - 1).astype(int) + 2
    grid = sitk.Image([int(v) for v in (hi - lo + 1)], sitk.sitkUInt8)
    grid.SetSpacing(atlas.GetSpacing())
    grid.SetDirection(atlas.GetDirection())
    grid.SetOrigin(atlas.TransformContinuousIndexToPhysicalPoint([float(v) for v in lo]))
    return grid


def _add_vector(field: sitk.Image, vec: np.ndarray) -> sitk.Image:
    arr = sitk.GetArrayFromImage(field) + np.asarray(vec, float)
    out = sitk.GetImageFromArray(arr.astype(np.float64), isVector=True)
    out.CopyInformation(field)
    return out


def jacobian_determinant(field: sitk.Image) -> sitk.Image:
    """det(I + grad u) of a displacement field u (physical mm, direction cosines accounted for)."""
    dim = field.GetDimension()
    u = sitk.GetArrayFromImage(field)  # (..., dim), spatial axes in reverse index order
    spacing = np.asarray(field.GetSpacing())
    direction = np.asarray(field.GetDirection()).reshape(dim, dim)
    # g[..., c, a] = d u_c / d q_a, q_a = spacing_a * index_a (index axis a is array axis dim-1-a)
    g = np.stack([np.stack(np.gradient(u[..., c], *spacing[::-1]), axis=-1)[..., ::-1] for c in range(dim)],
                 axis=-2)
    # x = origin + D q  =>  du/dx = (du/dq) D^T
    jac = np.linalg.det(np.eye(dim) + g @ direction.T)
    out = sitk.GetImageFromArray(jac.astype(np.float32))
    out.CopyInformation(field)
    return out


def register_disc(atlas_mask: sitk.Image, patient_mask: sitk.Image, settings: RegistrationSettings | None = None,
                  level: str = "") -> DiscTransform:
    """Register a patient disc mask to an atlas disc mask (both binary, any geometry, same dimension)."""
    s = settings or RegistrationSettings()
    t0, c0 = time.perf_counter(), time.process_time()
    dim = atlas_mask.GetDimension()
    if patient_mask.GetDimension() != dim:
        raise DiscSkipped(
            f"dimension mismatch: the atlas is {dim}D but the disc is {patient_mask.GetDimension()}D; "
            f"register with dimension {patient_mask.GetDimension()} or use a {patient_mask.GetDimension()}D atlas"
        )
    atlas_mask = sitk.Cast(atlas_mask > 0, sitk.sitkUInt8)
    patient_mask = sitk.Cast(patient_mask > 0, sitk.sitkUInt8)
    c_fixed = centroid_mm(atlas_mask)
    shift = centroid_mm(patient_mask) - c_fixed  # centroid initialisation: patient = atlas + shift
    moving = sitk.Image(patient_mask)
    moving.SetOrigin((np.asarray(patient_mask.GetOrigin()) - shift).tolist())

    elastix.set_global_threads(s.threads)
    po = elastix.parameter_object(
        dim,
        grid_spacing_mm=s.grid_spacing_mm if dim == 2 else s.grid_spacing_3d_mm,
        bspline_iterations=s.bspline_iterations if dim == 2 else s.bspline_iterations_3d,
        rigidity_weight=s.rigidity_weight if dim == 2 else s.rigidity_weight_3d,
        affine_iterations=s.affine_iterations,
        affine_resolutions=s.affine_resolutions,
        bspline_resolutions=s.bspline_resolutions if dim == 2 else s.bspline_resolutions_3d,
        spatial_samples=s.spatial_samples, center_mm=c_fixed, affine_only=s.affine_only, seed=s.seed,
        step_estimation=s.step_estimation if dim == 2 else s.step_estimation_3d,
    )
    fixed_img, moving_img = _smoothed(atlas_mask, s.mask_sigma_mm), _smoothed(moving, s.mask_sigma_mm)
    if dim == 3 and s.registration_spacing_3d_mm:
        fixed_img = _smoothed(_isotropic(atlas_mask, s.registration_spacing_3d_mm), s.mask_sigma_mm)
        moving_img = _smoothed(_isotropic(moving, s.registration_spacing_3d_mm), s.mask_sigma_mm)
    grid = _union_grid(fixed_img, moving)
    field = elastix.run_registration(fixed_img, moving_img, po, grid)
    jac = sitk.Resample(jacobian_determinant(field), atlas_mask, sitk.Transform(), sitk.sitkLinear, 0.0,
                        sitk.sitkFloat32)

    forward = sitk.DisplacementFieldTransform(_add_vector(field, shift))
    # 20 fixed-point iterations to 0.01 mm mean / 0.1 mm max residual: on a real 3D disc the round-trip
    # error was the same as with 50 iterations to 0.001 mm (0.009 mm mean) at less than half the cost
    inv_field = sitk.InvertDisplacementField(field, maximumNumberOfIterations=20,
                                             maxErrorToleranceThreshold=0.1,
                                             meanErrorToleranceThreshold=0.01,
                                             enforceBoundaryCondition=False)
    # inverse on the patient crop grid: y -> (y - shift) + v(y - shift)
    v_on_patient = sitk.Resample(inv_field, patient_mask, sitk.TranslationTransform(dim, (-shift).tolist()),
                                 sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    inverse = sitk.DisplacementFieldTransform(_add_vector(v_on_patient, -shift))

    warped = sitk.Resample(patient_mask, atlas_mask, forward, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    fixed_arr = sitk.GetArrayViewFromImage(atlas_mask) > 0
    j = sitk.GetArrayViewFromImage(jac)
    pts = np.argwhere(fixed_arr)[:, ::-1]
    if len(pts) > 400:
        pts = pts[np.linspace(0, len(pts) - 1, 400).astype(int)]
    errs = []
    for idx in pts:
        x = np.asarray(atlas_mask.TransformIndexToPhysicalPoint([int(v) for v in idx]))
        errs.append(np.linalg.norm(np.asarray(inverse.TransformPoint(forward.TransformPoint(x.tolist()))) - x))
    return DiscTransform(
        level=level, forward=forward, inverse=inverse, atlas_grid=atlas_mask, patient_grid=patient_mask,
        jacobian=jac,
        dice=dice(sitk.GetArrayViewFromImage(warped), fixed_arr),
        jacobian_mean=float(j[fixed_arr].mean()), jacobian_sd=float(j[fixed_arr].std()),
        folding_fraction=float((j <= 0).mean()), inverse_error_mm=float(np.mean(errs)),
        seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
    )


def to_atlas(result: DiscTransform, image: sitk.Image, interpolator: str = "linear") -> sitk.Image:
    """Resample a patient image (any grid in the patient's physical space) onto the atlas disc grid.

    ``"nearest"`` keeps the pixel type (labelmaps keep their label values); others give float32.
    """
    interp = INTERPOLATORS[interpolator]
    ptype = image.GetPixelID() if interpolator == "nearest" else sitk.sitkFloat32
    return sitk.Resample(image, result.atlas_grid, result.forward, interp, 0, ptype)


def to_patient(result: DiscTransform, atlas_image: sitk.Image, interpolator: str = "linear",
               reference: sitk.Image | None = None) -> sitk.Image:
    """Bring an atlas-space image back to the patient: onto the patient disc grid, or pasted into
    ``reference`` (a patient image grid the disc crop was cut from; 0 outside the disc region)."""
    interp = INTERPOLATORS[interpolator]
    ptype = atlas_image.GetPixelID() if interpolator == "nearest" else sitk.sitkFloat32
    out = sitk.Resample(atlas_image, result.patient_grid, result.inverse, interp, 0, ptype)
    if reference is not None:
        out = sitk.Resample(out, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, ptype)
    return out
