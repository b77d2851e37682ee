"""The elastix calls: parameter maps, thread settings, displacement field and Jacobian out.

itk-elastix is imported lazily, and only the part of it these calls need.

Why not ``itk.ElastixRegistrationMethod``: itk's lazy loader then imports the Elastix module's whole
declared dependency closure (29 ITK modules, 55 SWIG extensions, ~1.6 GB), and the SWIG initialisation of
those extensions (type-table merging, ~70 % of it in ``strcmp``; measured with ``perf``) took 17-20 s of
CPU on this machine: most of a registration call from a fresh process. The elastix wrappers themselves
need only ITKCommon, ITKTransform, ITKMesh, the NumPy bridge and the Elastix module, which import in ~3 s.
``_Lean`` imports exactly those SWIG modules and drives the same C++ filters through their low-level
methods; if this itk-elastix build lays its modules out differently, ``_itk_api`` falls back to the full
``itk`` package (slow import, same results). ``Testing/core/test_registration_lean.py`` checks that both
give the same displacement field.

Threads are set once per process with ``MultiThreaderBase.SetGlobalDefaultNumberOfThreads``: passing
``number_of_threads`` to a multi-metric registration (our B-spline stage with the rigidity penalty)
segfaults, https://github.com/InsightSoftwareConsortium/ITKElastix/issues/160 (regression test in
Testing/core/test_registration_threads.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np
import SimpleITK as sitk

from ..errors import MissingDependencyError, require

_THREADS_SET: int | None = None
_API = None
# DISCANALYSIS_ITK_FULL=1 forces the full itk package (for comparison and as an escape hatch)
FULL_ENV = "DISCANALYSIS_ITK_FULL"


def itk_module():
    return require("itk", "Disc registration (elastix)", "pip install itk-elastix")


@contextlib.contextmanager
def _torch_decorations_off():
    """Keep itk from importing torch (~2 s) while its wrappers load.

    itk's snake_case functions are wrapped by ``itk.support.helpers.accept_array_like_xarray_torch``,
    which imports torch at decoration time whenever torch is installed, only to accept tensors as
    inputs. The lean binding calls none of those functions, so the flag is off during its imports and
    restored after (a later full ``itk`` use in the same process still gets torch support).
    """
    try:
        from itk.support import helpers
    except ImportError:
        yield
        return
    had = getattr(helpers, "_HAVE_TORCH", None)
    if had is None or "torch" in sys.modules:
        yield
        return
    helpers._HAVE_TORCH = False
    try:
        yield
    finally:
        helpers._HAVE_TORCH = had


class _Binding:
    """What both bindings share: the global thread setting and a new parameter object."""

    name = ""
    _threader = None  # itk MultiThreaderBase class
    _parameter_class = None  # elastix ParameterObject class

    def set_threads(self, n: int) -> None:
        self._threader.SetGlobalDefaultNumberOfThreads(n)
        self._threader.SetGlobalMaximumNumberOfThreads(n)

    def parameter_object(self):
        return self._parameter_class.New()


class _Lean(_Binding):
    """The few itk-elastix classes used here, imported without itk's lazy loader (see module docstring)."""

    name = "lean"

    def __init__(self):
        with _torch_decorations_off():
            self._import()

    def _import(self):
        import itk.elxParameterObjectPython as params
        import itk.ITKCommonBasePython as base
        import itk.itkElastixRegistrationMethodPython as reg
        import itk.itkMatrixPython as matrix
        import itk.itkPyBufferPython as buffer
        import itk.itkTransformixFilterPython as tfx
        import itk.vnl_matrixPython as vnl

        # the classes and low-level methods used below, resolved once: fail now (and fall back to the full
        # package) if this build names them differently
        self._vnl_matrix = vnl.vnl_matrixD
        self._classes = {
            d: {
                "registration": getattr(reg, f"itkElastixRegistrationMethodIF{d}IF{d}"),
                "transformix": getattr(tfx, f"itkTransformixFilterIF{d}"),
                "image_view": getattr(buffer, f"itkPyBufferIF{d}")._GetImageViewFromArray,
                "field_view": getattr(buffer, f"itkPyBufferIVF{d}{d}")._GetArrayViewFromImage,
                "matrix": getattr(matrix, f"itkMatrixD{d}{d}"),
            }
            for d in (2, 3)
        }
        for obj, name in ((sys.modules["itk.itkImagePython"].itkImageF2, "_SetBase"),
                          (self._classes[2]["registration"], "SetLogToConsole"),
                          (self._classes[2]["transformix"], "SetComputeDeformationField")):
            getattr(obj, name)
        self._threader = base.itkMultiThreaderBase
        self._parameter_class = params.elastixParameterObject

    def image(self, arr: np.ndarray, spacing, origin, direction: np.ndarray):
        d = arr.ndim
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        img = self._classes[d]["image_view"](arr, arr.shape[::-1], 1)
        img._SetBase(arr)  # the image is a view: keep the buffer alive with it
        img.SetSpacing([float(v) for v in spacing])
        img.SetOrigin([float(v) for v in origin])
        vnl = self._vnl_matrix(d, d)
        for r in range(d):
            for c in range(d):
                vnl.put(r, c, float(direction[r, c]))
        img.SetDirection(self._classes[d]["matrix"](vnl))
        return img

    def register(self, fixed, moving, po):
        d = fixed.GetImageDimension()
        f = self._classes[d]["registration"].New()
        f.SetFixedImage(fixed)
        f.SetMovingImage(moving)
        f.SetParameterObject(po)
        f.SetLogToConsole(False)
        f.UpdateLargestPossibleRegion()
        return f.GetTransformParameterObject()

    def deformation_field(self, moving, tp, output_directory: str) -> np.ndarray:
        d = moving.GetImageDimension()
        t = self._classes[d]["transformix"].New()
        t.SetMovingImage(moving)
        t.SetTransformParameterObject(tp)
        t.SetLogToConsole(False)
        t.SetOutputDirectory(output_directory)
        t.SetComputeDeformationField(True)
        t.UpdateLargestPossibleRegion()
        field = t.GetOutputDeformationField()
        size = [int(v) for v in field.GetBufferedRegion().GetSize()]
        view = self._classes[d]["field_view"](field)
        return np.asarray(view).view(np.float32).reshape(*size[::-1], d).copy()


class _Full(_Binding):
    """The same calls through the full itk package (its lazy loader imports every dependency)."""

    name = "full"

    def __init__(self):
        self._itk = itk_module()
        try:
            for name in ("ParameterObject", "elastix_registration_method", "TransformixFilter",
                         "MultiThreaderBase", "image_from_array", "array_from_image", "matrix_from_array"):
                getattr(self._itk, name)
        except AttributeError as exc:  # itk without its elastix module
            raise MissingDependencyError(
                f"Disc registration (elastix) needs itk-elastix; this itk has no {exc}. "
                "Install it with: pip install itk-elastix"
            ) from exc
        self._threader = self._itk.MultiThreaderBase
        self._parameter_class = self._itk.ParameterObject

    def image(self, arr: np.ndarray, spacing, origin, direction: np.ndarray):
        itk = self._itk
        out = itk.image_from_array(np.ascontiguousarray(arr, dtype=np.float32))
        out.SetSpacing([float(v) for v in spacing])
        out.SetOrigin([float(v) for v in origin])
        out.SetDirection(itk.matrix_from_array(np.asarray(direction, float)))
        return out

    def register(self, fixed, moving, po):
        _, tp = self._itk.elastix_registration_method(fixed, moving, parameter_object=po, log_to_console=False)
        return tp

    def deformation_field(self, moving, tp, output_directory: str) -> np.ndarray:
        tfx = self._itk.TransformixFilter.New(moving, transform_parameter_object=tp, log_to_console=False,
                                              output_directory=output_directory)
        tfx.SetComputeDeformationField(True)
        tfx.UpdateLargestPossibleRegion()
        return self._itk.array_from_image(tfx.GetOutputDeformationField()).astype(np.float32)


def _itk_api():
    """The binding in use: lean unless it cannot be imported or ``DISCANALYSIS_ITK_FULL=1``."""
    global _API
    if _API is None:
        itk_module()  # a clear "pip install itk-elastix" error when it is missing
        if os.environ.get(FULL_ENV, "") not in ("", "0"):
            _API = _Full()
        else:
            try:
                _API = _Lean()
            except (ImportError, AttributeError):
                _API = _Full()
    return _API


def binding_name() -> str:
    """"lean" or "full": which itk-elastix binding this process uses (loads it)."""
    return _itk_api().name


def set_global_threads(n: int) -> None:
    """Set ITK's default thread count for every filter in this process (the issue-160-safe way)."""
    global _THREADS_SET
    n = max(1, int(n))
    if _THREADS_SET == n:
        return
    _itk_api().set_threads(n)
    _THREADS_SET = n


def load() -> None:
    """Load the elastix classes now (the first import takes seconds).

    Creates no ITK filter, so no ITK thread pool is started: safe to call in a fork server before it forks.
    """
    _itk_api()


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
    d = image.GetDimension()
    return _itk_api().image(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                            np.asarray(image.GetDirection(), float).reshape(d, d))


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
    po = _itk_api().parameter_object()
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
    api = _itk_api()
    f_itk, m_itk = to_itk(fixed), to_itk(moving)
    tp = api.register(f_itk, m_itk, po)
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
        arr = api.deformation_field(m_itk, tp, tmp)
    arr = arr.astype(np.float64).reshape(*field_grid.GetSize()[::-1], d)
    field_img = sitk.GetImageFromArray(arr, isVector=True)
    field_img.CopyInformation(field_grid)
    return field_img
