"""The elastix calls: parameter maps, thread settings, displacement field and Jacobian out.

itk-elastix is imported lazily (its first import loads ~1.6 GB of ITK modules and takes seconds).

Threads are set once per process with ``itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads``: passing
``number_of_threads`` to a multi-metric registration (our B-spline stage with the rigidity penalty)
segfaults, https://github.com/InsightSoftwareConsortium/ITKElastix/issues/160 (regression test in
Testing/core/test_registration_threads.py).
"""

from __future__ import annotations

import tempfile

import numpy as np
import SimpleITK as sitk

from ..errors import require

_THREADS_SET: int | None = None


def itk_module():
    return require("itk", "Disc registration (elastix)", "pip install itk-elastix")


def set_global_threads(n: int) -> None:
    """Set ITK's default thread count for every filter in this process (the issue-160-safe way)."""
    global _THREADS_SET
    n = max(1, int(n))
    if _THREADS_SET == n:
        return
    itk = itk_module()
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(n)
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(max(n, 1))
    _THREADS_SET = n


def load() -> None:
    """Load the elastix module objects now (itk loads them lazily on first attribute access).

    Creates no ITK filter, so no ITK thread pool is started: safe to call in a fork server before it forks.
    """
    itk = itk_module()
    for name in ("ParameterObject", "elastix_registration_method", "TransformixFilter", "MultiThreaderBase",
                 "image_from_array", "array_from_image", "matrix_from_array"):
        getattr(itk, name)


def warm_up(threads: int = 1, *, worker: bool = False) -> None:
    """Load elastix and set ITK's global thread count (a worker-pool initialiser calls this).

    ``worker=True`` (a process that only registers discs) also sets SimpleITK's global thread count, so
    the filters around elastix (smoothing, resampling, field inversion) use ``threads`` per worker instead
    of one thread per core in every worker; the main process's SimpleITK setting is left alone.
    """
    load()
    set_global_threads(threads)
    if worker:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(threads)))


def to_itk(image: sitk.Image):
    """SimpleITK scalar image -> itk.Image[F] with the same geometry."""
    itk = itk_module()
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    out = itk.image_from_array(arr)
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.GetOrigin())
    d = image.GetDimension()
    out.SetDirection(itk.matrix_from_array(np.asarray(image.GetDirection(), float).reshape(d, d)))
    return out


def parameter_object(dim: int, *, grid_spacing_mm: float, bspline_iterations: int, rigidity_weight: float,
                     affine_iterations: int, affine_resolutions: int, bspline_resolutions: int,
                     spatial_samples: int, center_mm, affine_only: bool = False, seed: int = 0,
                     step_estimation: str = "Original"):
    """Affine (recursive pyramid) then B-spline with a TransformRigidityPenalty, both on mask images.

    The metric is mean squares between Gaussian-smoothed binary masks: the paper's registration is
    mask-guided because intensity-guided registration failed on discs (Iriondo et al., Registration).
    ``step_estimation`` is the B-spline stage's ``ASGDParameterEstimationMethod``: "Original" (Jacobian
    terms; ~5 s of a 3D disc's B-spline stage) or "DisplacementDistribution" (Qiao et al. 2016; same
    Dice and Jacobian SD on real 3D discs, ~3 CPU s less per disc).
    """
    itk = itk_module()
    po = itk.ParameterObject.New()
    common = {
        "FixedInternalImagePixelType": ["float"],
        "MovingInternalImagePixelType": ["float"],
        "FixedImagePyramid": ["FixedRecursiveImagePyramid"],
        "MovingImagePyramid": ["MovingRecursiveImagePyramid"],
        "Interpolator": ["LinearInterpolator"],
        "Optimizer": ["AdaptiveStochasticGradientDescent"],
        "ImageSampler": ["RandomCoordinate"],
        "NumberOfSpatialSamples": [str(int(spatial_samples))],
        "NewSamplesEveryIteration": ["true"],
        "RandomSeed": [str(int(seed) + 1)],
        "ResampleInterpolator": ["FinalLinearInterpolator"],
        "Resampler": ["DefaultResampler"],
        "HowToCombineTransforms": ["Compose"],
        "WriteResultImage": ["false"],
        "ResultImagePixelType": ["float"],
        "UseDirectionCosines": ["true"],
        "AutomaticParameterEstimation": ["true"],
    }
    aff = dict(common)
    aff.update({
        "Registration": ["MultiResolutionRegistration"],
        "Transform": ["AffineTransform"],
        "Metric": ["AdvancedMeanSquares"],
        "AutomaticScalesEstimation": ["true"],
        "AutomaticTransformInitialization": ["false"],
        "CenterOfRotationPoint": [f"{c:.6f}" for c in center_mm],
        "NumberOfResolutions": [str(int(affine_resolutions))],
        "MaximumNumberOfIterations": [str(int(affine_iterations))],
    })
    po.AddParameterMap(aff)
    if not affine_only:
        bs = dict(common)
        bs.update({
            "Registration": ["MultiMetricMultiResolutionRegistration"],
            "Transform": ["BSplineTransform"],
            "BSplineTransformSplineOrder": ["3"],
            "Metric": ["AdvancedMeanSquares", "TransformRigidityPenalty"],
            "Metric0Weight": ["1.0"],
            "Metric1Weight": [f"{float(rigidity_weight):.6g}"],
            "UseLinearityCondition": ["true"],
            "UseOrthonormalityCondition": ["true"],
            "UsePropernessCondition": ["true"],
            "FinalGridSpacingInPhysicalUnits": [f"{float(grid_spacing_mm):.6g}"] * dim,
            "NumberOfResolutions": [str(int(bspline_resolutions))],
            "MaximumNumberOfIterations": [str(int(bspline_iterations))],
            "ASGDParameterEstimationMethod": [step_estimation],
        })
        po.AddParameterMap(bs)
    return po


def run_registration(fixed: sitk.Image, moving: sitk.Image, po, field_grid: sitk.Image):
    """Register ``moving`` to ``fixed``; return the displacement field sampled on ``field_grid``
    (a sitk vector image, LPS mm).

    itk.transformix_jacobian is not used: it round-trips through files in the current directory, which
    races between worker processes; the Jacobian is computed from the field instead.
    """
    itk = itk_module()
    f_itk, m_itk = to_itk(fixed), to_itk(moving)
    _, tp = itk.elastix_registration_method(f_itk, m_itk, parameter_object=po, log_to_console=False)
    # the displacement field on a grid that covers atlas and (centred) patient domains, for inversion
    d = field_grid.GetDimension()
    for i in range(tp.GetNumberOfParameterMaps()):
        tp.SetParameter(i, "Size", [str(s) for s in field_grid.GetSize()])
        tp.SetParameter(i, "Origin", [f"{o:.9g}" for o in field_grid.GetOrigin()])
        tp.SetParameter(i, "Spacing", [f"{s:.9g}" for s in field_grid.GetSpacing()])
        # elastix lists the direction matrix column by column (SimpleITK gives it row by row)
        cols = np.asarray(field_grid.GetDirection()).reshape(d, d).T.ravel()
        tp.SetParameter(i, "Direction", [f"{v:.9g}" for v in cols])
    with tempfile.TemporaryDirectory(prefix="discanalysis-transformix-") as tmp:
        # transformix writes the field into its output directory (the current one by default)
        tfx = itk.TransformixFilter.New(m_itk, transform_parameter_object=tp, log_to_console=False,
                                        output_directory=tmp)
        tfx.SetComputeDeformationField(True)
        tfx.UpdateLargestPossibleRegion()
        field = tfx.GetOutputDeformationField()
    arr = itk.array_from_image(field).astype(np.float64).reshape(*field_grid.GetSize()[::-1], d)
    field_img = sitk.GetImageFromArray(arr, isVector=True)
    field_img.CopyInformation(field_grid)
    return field_img
