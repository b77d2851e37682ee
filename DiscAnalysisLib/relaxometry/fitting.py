"""Voxel-wise mono-exponential fits of T2 (echo times) and T1rho (spin-lock times) series.

Model: ``S(t) = S0 * exp(-t / T)`` (two parameters, as in the voxel-based relaxometry pipeline of the
paper in ``shared/papers/voxel_based_T1rho_T2_relaxometry_pipeline.txt``, "two-parameter
Levenberg-Marquardt mono-exponential fitting"), optionally ``S(t) = S0 * exp(-t / T) + C`` with a constant
offset ``C`` for series whose late points sit on the noise floor.

How it is computed (no per-voxel Python loop):

1. **Start**: weighted log-linear least squares, ``log S = log S0 - t / T`` with weights ``S**2`` (the
   standard weights that make the log-transformed problem approximate the linear-scale least squares,
   because ``var(log S) ~ sigma**2 / S**2``), solved in closed form for every voxel at once.
2. **Levenberg-Marquardt** on the linear-scale sum of squares (what ``scipy.optimize.curve_fit`` minimises),
   parameterised by ``(S0, R = 1/T[, C])``; the 2 x 2 (3 x 3) damped normal equations of every voxel are
   solved analytically (Cramer's rule) in one numpy expression, with a damping factor per voxel
   (x0.1 after a step that lowered the cost, x10 after one that did not). A voxel stops when a lightly
   damped (~Gauss-Newton) step changes every parameter by less than ``settings.tolerance`` (relative);
   finished voxels are dropped from the working arrays.
3. Voxels are processed in chunks sized from ``settings.memory_budget_mb`` so that the working memory
   stays bounded whatever the volume size (inputs are read through views, outputs are float32).

Array axis order follows ``SimpleITK.GetArrayFromImage``: a series is ``(N, k, j, i)`` (time first).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import SimpleITK as sitk

from .. import image_io
from ..errors import InputError
from ..progress import Progress, ProgressCallback
from . import _lm_math

log = logging.getLogger(__name__)

KINDS = {"t2": "T2", "t1rho": "T1rho"}
#: Largest chunk (voxels): small enough for the work arrays to stay in the CPU cache.
CHUNK_VOXELS = 16384
ENGINES = ("auto", "compiled", "numpy")


@functools.lru_cache(maxsize=1)
def _compiled_available() -> bool:
    try:
        from . import _lm_compiled
    except Exception:  # pragma: no cover - a broken numba install: fall back to numpy
        log.warning("numba could not be imported; relaxometry fits use the numpy engine", exc_info=True)
        return False
    return _lm_compiled.AVAILABLE


#: With engine "auto", fits of fewer voxels use numpy: loading numba and its compiled kernel (~0.5 s from
#: the on-disk cache, several seconds the first time on a machine) costs more than it saves on them.
AUTO_COMPILED_MIN_VOXELS = 200_000


def uses_compiled(settings: FitSettings, n_voxels: int | None = None) -> bool:
    """Whether a fit of ``n_voxels`` voxels (None: a large one) with ``settings`` uses the compiled engine."""
    if settings.engine != "auto":
        return settings.engine == "compiled"
    if n_voxels is not None and n_voxels < AUTO_COMPILED_MIN_VOXELS:
        return False
    return _compiled_available()


class FitStatus(IntEnum):
    """Per-voxel outcome, stored as uint8 in :attr:`RelaxationFit.status`."""

    FITTED = 0  #: converged, decaying, T inside the bounds
    MASKED = 1  #: outside the mask; not fitted
    TOO_FEW_POINTS = 2  #: fewer finite time points than parameters, or < 2 positive points for the start
    NOT_DECAYING = 3  #: the signal does not decrease with time (fitted rate <= 0)
    OUT_OF_BOUNDS = 4  #: converged, but T outside ``t_bounds_ms`` or S0 <= 0
    NOT_CONVERGED = 5  #: no convergence within ``max_iterations`` (last estimate kept)


STATUS_DESCRIPTIONS: dict[int, str] = {
    FitStatus.FITTED: "fitted",
    FitStatus.MASKED: "masked (outside the mask)",
    FitStatus.TOO_FEW_POINTS: "too few valid time points",
    FitStatus.NOT_DECAYING: "signal not decaying",
    FitStatus.OUT_OF_BOUNDS: "T or S0 out of bounds",
    FitStatus.NOT_CONVERGED: "not converged",
}


@dataclass(frozen=True)
class FitSettings:
    """Settings of :func:`fit_relaxation`.

    ``t_bounds_ms``: plausible range of the fitted time constant; a converged fit outside it gets status
    OUT_OF_BOUNDS (its value is kept in the map for inspection). ``None`` means 0.5 ms to 10 x the
    longest time of the series: a time constant outside that range cannot be measured by the series.
    ``tolerance``: relative size of the Gauss-Newton step of every parameter below which a voxel counts
    as converged; the step is still taken, so the final error is far below it. The default 1e-4 changes T2
    on the benchmark by at most 5e-4 ms (median 8e-6 ms) against 1e-10, 10,000 x below the noise (CRLB
    1.7-7.6 ms), and saves the third full Gauss-Newton iteration (~25 % of the time); use 1e-6 or lower
    to reproduce an external fit to the last digit. ``memory_budget_mb``: working memory of
    all chunks in flight together. ``n_threads``: chunks fitted in parallel (numpy releases the GIL in
    its loops); ``None`` = min(2, CPU count). ``engine``: ``"compiled"`` runs the Levenberg-Marquardt
    iterations in numba-compiled code (same algorithm, same results to rounding, several times faster),
    ``"numpy"`` in whole-chunk numpy expressions, ``"auto"`` (default) the compiled one when numba is
    installed and at least ``AUTO_COMPILED_MIN_VOXELS`` voxels are to be fitted.
    """

    offset: bool = False
    max_iterations: int = 60
    tolerance: float = 1e-4
    t_bounds_ms: tuple[float, float] | None = None
    memory_budget_mb: float = 48.0
    n_threads: int | None = None
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}.")
        if self.engine == "compiled" and not _compiled_available():
            raise InputError("engine 'compiled' needs the numba package: pip install numba (or use engine 'numpy').")
        if self.max_iterations < 1:
            raise InputError(f"max_iterations must be >= 1; got {self.max_iterations}.")
        if not (0 < self.tolerance < 1):
            raise InputError(f"tolerance must be in (0, 1); got {self.tolerance}.")
        if self.t_bounds_ms is not None:
            lo, hi = self.t_bounds_ms
            if not (0 <= lo < hi):
                raise InputError(f"t_bounds_ms must be (low, high) with 0 <= low < high; got {self.t_bounds_ms}.")
        if not self.memory_budget_mb > 1:
            raise InputError(f"memory_budget_mb must be > 1; got {self.memory_budget_mb}.")
        if self.n_threads is not None and self.n_threads < 1:
            raise InputError(f"n_threads must be >= 1; got {self.n_threads}.")

    @property
    def threads(self) -> int:
        return self.n_threads or max(1, min(2, os.cpu_count() or 1))

    @property
    def n_parameters(self) -> int:
        return 3 if self.offset else 2

    def bounds_for(self, times_ms: Sequence[float]) -> tuple[float, float]:
        if self.t_bounds_ms is not None:
            return float(self.t_bounds_ms[0]), float(self.t_bounds_ms[1])
        return 0.5, 10.0 * float(max(times_ms))


@dataclass(frozen=True, eq=False)
class RelaxationFit:
    """Maps of one fit, arrays in SimpleITK array order (k, j, i), plus the series geometry.

    ``t_ms`` is T2 or T1rho in ms (``kind``), ``s0`` the signal at t = 0, ``r2`` the coefficient of
    determination of the fit on the linear scale, ``rmse`` the root-mean-square residual (signal units),
    ``status`` a :class:`FitStatus` code per voxel. Voxels without an estimate (masked, too few points)
    are NaN in the float maps; the status map says why.
    """

    kind: str
    times_ms: tuple[float, ...]
    s0: np.ndarray
    t_ms: np.ndarray
    r2: np.ndarray
    rmse: np.ndarray
    status: np.ndarray
    offset: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    settings: FitSettings = field(default_factory=FitSettings)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.t_ms.shape)

    @property
    def map_name(self) -> str:
        return f"{self.kind}_ms"

    def status_counts(self) -> dict[str, int]:
        """Number of voxels per status name (all statuses listed, zeros included)."""
        counts = np.bincount(self.status.ravel(), minlength=len(FitStatus))
        return {s.name.lower(): int(counts[s]) for s in FitStatus}

    def failed_fraction(self) -> float:
        """Fraction of the attempted (not masked) voxels whose status is not FITTED."""
        attempted = int(np.count_nonzero(self.status != FitStatus.MASKED))
        failed = int(np.count_nonzero((self.status != FitStatus.MASKED) & (self.status != FitStatus.FITTED)))
        return failed / attempted if attempted else 0.0

    def _image(self, array: np.ndarray, fill_value: float | None) -> sitk.Image:
        arr = array
        if fill_value is not None and arr.dtype.kind == "f":
            arr = np.where(np.isfinite(arr), arr, np.float32(fill_value)).astype(arr.dtype, copy=False)
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        if self.spacing is not None:
            image.SetSpacing(self.spacing)
            image.SetOrigin(self.origin)
            image.SetDirection(self.direction)
        return image

    def to_images(self, fill_value: float | None = 0.0) -> dict[str, sitk.Image]:
        """The maps as SimpleITK images with the series geometry.

        Keys: ``"S0"``, ``"T2_ms"`` or ``"T1rho_ms"``, ``"R2"``, ``"RMSE"``, ``"status"`` (uint8) and
        ``"offset"`` when the offset model was used. NaN (no estimate) becomes ``fill_value`` (0 by
        default, since viewers handle NaN poorly; ``None`` keeps NaN).
        """
        images = {
            "S0": self._image(self.s0, fill_value),
            self.map_name: self._image(self.t_ms, fill_value),
            "R2": self._image(self.r2, fill_value),
            "RMSE": self._image(self.rmse, fill_value),
            "status": self._image(self.status, None),
        }
        if self.offset is not None:
            images["offset"] = self._image(self.offset, fill_value)
        return images


# ---------------------------------------------------------------------------------------------- inputs
def _as_volumes(series) -> tuple[list[np.ndarray], tuple[int, ...], sitk.Image | None]:
    """Flat read-only views (one per time point) of the series, its spatial shape and a reference image."""
    reference = None
    if isinstance(series, np.ndarray):
        if series.ndim < 2:
            raise InputError(f"A series array must be (N time points, ...voxels); got shape {series.shape}.")
        arrays = [series[i] for i in range(series.shape[0])]
    else:
        try:
            items = list(series)
        except TypeError:
            raise InputError("The series must be a numpy array (N, ...) or a list of images/arrays.") from None
        if items and all(isinstance(x, sitk.Image) for x in items):
            reference = items[0]
            _check_same_grid(items)
            arrays = [sitk.GetArrayViewFromImage(x) for x in items]
        elif all(isinstance(x, np.ndarray) for x in items):
            arrays = list(items)
        else:
            raise InputError("The series must be a numpy array (N, ...) or a list of SimpleITK images or arrays.")
    if not arrays:
        raise InputError("The series is empty: give at least 2 time points.")
    shape = tuple(arrays[0].shape)
    for i, a in enumerate(arrays):
        if tuple(a.shape) != shape:
            raise InputError(
                f"Time point {i + 1} has shape {tuple(a.shape)} but time point 1 has {shape}: all volumes of a "
                "series must be on the same grid."
            )
        if a.dtype.kind not in "fiub":
            raise InputError(f"Time point {i + 1} has a non-numeric pixel type ({a.dtype}).")
    flats = [np.ravel(np.asarray(a)) for a in arrays]
    return flats, shape, reference


def _check_same_grid(images: Sequence[sitk.Image]) -> None:
    ref = images[0]
    for i, im in enumerate(images[1:], start=2):
        problems = image_io.grid_differences(im, ref)
        if im.GetNumberOfComponentsPerPixel() != 1:
            problems.append("not a scalar image")
        if problems:
            raise InputError(
                f"Time point {i} is not on the same grid as time point 1 ({'; '.join(problems)}). All echoes / "
                "spin-lock volumes must share one grid: resample them first or check that they belong together."
            )


def validate_times(times_ms, n_volumes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check the times and return ``(sorted_times, order)``; ``order`` sorts the volumes with the times.

    Raises InputError for fewer than 2 times, a count that differs from the number of volumes,
    non-finite or negative times, and duplicates (two volumes at one time cannot be told apart: average
    them or drop one first).
    """
    try:
        t = np.asarray([float(x) for x in times_ms], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"Times must be numbers in ms; got {times_ms!r}.") from None
    if t.size != n_volumes:
        raise InputError(
            f"{t.size} times given for {n_volumes} volumes: give exactly one echo / spin-lock time (ms) per volume."
        )
    if t.size < 2:
        raise InputError(f"A relaxation fit needs at least 2 time points; got {t.size}.")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise InputError(f"Times must be finite and >= 0 ms; got {', '.join(f'{x:g}' for x in t)}.")
    order = np.argsort(t, kind="stable")
    ts = t[order]
    dup = ts[1:][np.diff(ts) <= 1e-9 * max(1.0, float(ts.max()))]
    if dup.size:
        raise InputError(
            f"Duplicate time {dup[0]:g} ms: two volumes at the same time cannot both be fitted as different "
            "points. Remove or average the repeated volume."
        )
    if np.any(order != np.arange(t.size)):
        log.info("times were not in increasing order; volumes re-ordered with them")
    return ts, order


def _as_mask(mask, shape: tuple[int, ...], reference: sitk.Image | None) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, sitk.Image):
        if reference is not None:
            try:
                _check_same_grid([reference, mask])
            except InputError:
                raise InputError(
                    "The mask is not on the grid of the series (size, spacing, origin or direction differ); "
                    "resample it onto the series first (relaxometry.series.resample_labels_to)."
                ) from None
        arr = sitk.GetArrayViewFromImage(mask)
    else:
        arr = np.asarray(mask)
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"The mask has shape {tuple(arr.shape)} but the series volumes have {tuple(shape)}.")
    flat = np.ravel(arr)  # a view for contiguous input: tested for != 0 range by range, not copied whole
    if not np.any(flat):
        raise InputError("The mask is empty (no non-zero voxel): nothing to fit. Check the labelmap or drop the mask.")
    return flat


# ------------------------------------------------------------------------------------------------ fit
def fit_relaxation(
    series,
    times_ms: Sequence[float],
    mask=None,
    settings: FitSettings = FitSettings(),
    *,
    kind: str = "t2",
    progress: Progress | ProgressCallback | None = None,
) -> RelaxationFit:
    """Fit ``S0 * exp(-t / T) [+ C]`` in every voxel of ``series``.

    ``series``: numpy array ``(N, ...)`` (time first, then SimpleITK array order k, j, i), or a list of N
    SimpleITK images on one grid, or a list of N arrays. ``times_ms``: the N echo or spin-lock times
    (any order; volumes are sorted with them). ``mask``: optional array or image of the volume's shape;
    non-zero voxels are fitted, others get status MASKED. ``kind``: ``"t2"`` or ``"t1rho"`` (names only).
    """
    kind_name = KINDS.get(str(kind).lower())
    if kind_name is None:
        raise InputError(f"Unknown kind '{kind}'; use 't2' or 't1rho'.")
    flats, shape, reference = _as_volumes(series)
    t_sorted, order = validate_times(times_ms, len(flats))
    if len(flats) < settings.n_parameters:
        raise InputError(
            f"The {'offset ' if settings.offset else ''}model has {settings.n_parameters} parameters but the series "
            f"has only {len(flats)} time points."
        )
    flats = [flats[i] for i in order]
    mask_flat = _as_mask(mask, shape, reference)
    n_vox = int(np.prod(shape)) if shape else 1
    n_t = len(flats)
    bounds = settings.bounds_for(t_sorted)

    s0 = np.full(n_vox, np.nan, np.float32)
    tm = np.full(n_vox, np.nan, np.float32)
    r2 = np.full(n_vox, np.nan, np.float32)
    rmse = np.full(n_vox, np.nan, np.float32)
    off = np.full(n_vox, np.nan, np.float32) if settings.offset else None
    status = np.full(n_vox, FitStatus.MASKED, np.uint8)

    # About 10 (N, m) float64 work arrays and 30 per-voxel vectors live at once inside _fit_chunk; chunks
    # of a few ten thousand voxels also keep those arrays in the CPU cache.
    n_threads = settings.threads
    per_voxel_bytes = 8 * (10 * n_t + 30)
    chunk = int(settings.memory_budget_mb * 1e6 / n_threads / per_voxel_bytes)
    chunk = max(1024, min(chunk, CHUNK_VOXELS))
    prog = Progress.wrap(progress)
    prog.report(0.0, f"fitting {kind_name}")
    t_col = t_sorted[:, None]

    def chunks():
        """Voxel selections of at most ``chunk`` voxels: slices, or masked indices found range by range
        (so that no whole-volume index array is ever built)."""
        if mask_flat is None:
            for start in range(0, n_vox, chunk):
                yield slice(start, min(n_vox, start + chunk))
            return
        span = 16 * chunk
        for start in range(0, n_vox, span):
            idx = np.flatnonzero(mask_flat[start:start + span]) + start
            for k in range(0, idx.size, chunk):
                yield idx[k:k + chunk]

    local = threading.local()

    def work(sel) -> int:
        count = sel.stop - sel.start if isinstance(sel, slice) else sel.size
        # Work buffers are allocated once per thread and reused for every chunk: fresh large arrays cost
        # page faults that take longer than the arithmetic on them.
        if getattr(local, "y", None) is None:
            local.y = np.empty((n_t, chunk), np.float64)
            local.buf = None if compiled else np.empty((7, n_t, chunk), np.float64)
        y = local.y[:, :count]
        for i, f in enumerate(flats):
            y[i] = f[sel]
        res = _fit_chunk(y, t_col, settings, bounds, local.buf, compiled)
        s0[sel], tm[sel], r2[sel], rmse[sel], status[sel] = res[0], res[1], res[2], res[3], res[4]
        if off is not None:
            off[sel] = res[5]
        return count

    total = n_vox if mask_flat is None else int(np.count_nonzero(mask_flat))
    compiled = uses_compiled(settings, total)
    done = 0
    with _single_threaded_blas():
        if n_threads == 1 or total <= chunk:
            for sel in chunks():
                done += work(sel)
                prog.report(done / max(total, 1), f"fitting {kind_name}")
        else:
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                # A bounded window of chunks in flight: memory stays within the budget and a cancellation
                # (an exception raised by the progress callback) stops the work soon.
                pending = []
                for sel in chunks():
                    pending.append(pool.submit(work, sel))
                    if len(pending) >= 2 * n_threads:
                        done += pending.pop(0).result()
                        prog.report(done / max(total, 1), f"fitting {kind_name}")
                for fut in pending:
                    done += fut.result()
                    prog.report(done / max(total, 1), f"fitting {kind_name}")

    geometry = {}
    if reference is not None:
        geometry = {"spacing": reference.GetSpacing(), "origin": reference.GetOrigin(),
                    "direction": reference.GetDirection()}
    return RelaxationFit(
        kind=kind_name,
        times_ms=tuple(float(x) for x in t_sorted),
        s0=s0.reshape(shape),
        t_ms=tm.reshape(shape),
        r2=r2.reshape(shape),
        rmse=rmse.reshape(shape),
        status=status.reshape(shape),
        offset=None if off is None else off.reshape(shape),
        settings=settings,
        **geometry,
    )


def _single_threaded_blas():
    """Keep BLAS single-threaded during the fit: the sums over time points are tiny gemv calls that a
    multi-threaded BLAS slows down, and the chunks already run in parallel."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _fit_chunk(y: np.ndarray, t: np.ndarray, settings: FitSettings, bounds: tuple[float, float],
               work: np.ndarray | None = None, compiled: bool = False):
    """Fit every column of ``y`` (N, m); ``t`` is (N, 1). Returns s0, T, R2, RMSE, status[, offset]."""
    if compiled:
        from ._lm_compiled import fit_columns

        parts = fit_columns(y, t, settings)
    else:
        parts = _start_and_fit_numpy(y, t, settings, work)
    return _finish(parts, settings, bounds)


def _start_and_fit_numpy(y: np.ndarray, t: np.ndarray, settings: FitSettings, work: np.ndarray | None):
    """Start values and LM of every column with numpy; returns the per-voxel quantities :func:`_finish`
    turns into maps: ``n_valid, start_ok, decaying_start, a, r, c, cost, converged, sst``."""
    m = y.shape[1]
    n_par = settings.n_parameters
    finite = np.isfinite(y)
    if finite.all():
        w = None  # all weights 1: skip the multiplications
        n_valid = np.full(m, float(y.shape[0]))
    else:
        w = finite.astype(np.float64)
        y = np.where(finite, y, 0.0)
        n_valid = w.sum(0)
    positive = y > 0
    n_pos = positive.sum(0)

    # 1. Weighted log-linear start: weights y**2 (zero for non-positive or non-finite points). float32
    # logs are plenty for a start value and twice as fast as float64 ones.
    t1 = np.ascontiguousarray(t.ravel(), dtype=np.float64)
    one = np.ones_like(t1)
    all_positive = bool(positive.all())
    wl = y * y
    if all_positive:
        logy = np.log(y.astype(np.float32))
    else:
        wl[~positive] = 0.0
        logy = np.log(np.where(positive, y, 1.0).astype(np.float32))
    sw, st, stt = one @ wl, t1 @ wl, (t1 * t1) @ wl
    wl *= logy
    sl, stl = one @ wl, t1 @ wl
    del wl, logy
    det = sw * stt - st * st
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (sw * stl - st * sl) / det
        intercept = (sl - slope * st) / sw
    r0 = -slope
    a0 = np.exp(np.clip(intercept, -700, 700))

    start_ok = ~((n_valid < n_par) | (n_pos < 2) | ~(det > 1e-12 * np.maximum(sw * stt, 1e-300)))
    decaying_start = r0 > 0
    todo = np.flatnonzero(start_ok & decaying_start)
    a_f, r_f, c_f, cost_f = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    converged = np.zeros(m, bool)
    if todo.size:
        whole = todo.size == m
        yy = y if whole else y[:, todo]
        ww = None if w is None else (w if whole else w[:, todo])
        res = _levenberg_marquardt(yy, ww, t, a0[todo], r0[todo], settings, work)
        a_f[todo], r_f[todo], c_f[todo], cost_f[todo], converged[todo] = res
    # SST = sum y^2 - (sum y)^2 / n (y is 0 at invalid points, so plain sums are the weighted ones).
    sy = one @ y
    with np.errstate(divide="ignore", invalid="ignore"):
        sst = one @ (y * y) - sy * sy / n_valid
    return n_valid, start_ok, decaying_start, a_f, r_f, c_f, cost_f, converged, sst


def _finish(parts, settings: FitSettings, bounds: tuple[float, float]):
    """Statuses and fit-quality maps from the per-voxel results of either engine."""
    n_valid, start_ok, decaying_start, a_f, r_f, c_f, cost_f, converged = parts[:8]
    sst = np.maximum(parts[8], 0.0)
    m = n_valid.shape[0]
    status = np.full(m, FitStatus.NOT_CONVERGED, np.uint8)
    status[~start_ok] = FitStatus.TOO_FEW_POINTS
    status[start_ok & ~decaying_start] = FitStatus.NOT_DECAYING
    todo = start_ok & decaying_start
    finite_par = np.isfinite(a_f) & np.isfinite(r_f) & np.isfinite(cost_f)
    decaying = r_f > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_fit = 1.0 / r_f
    status[todo & converged & finite_par] = FitStatus.FITTED
    status[todo & finite_par & ~decaying] = FitStatus.NOT_DECAYING
    oob = todo & converged & finite_par & decaying & ((t_fit < bounds[0]) | (t_fit > bounds[1]) | ~(a_f > 0))
    status[oob] = FitStatus.OUT_OF_BOUNDS
    s0 = np.where(todo, a_f, np.nan)
    rate = np.where(todo, r_f, np.nan)
    sse = np.where(todo, cost_f, np.nan)

    # Fit quality on the linear scale over the valid points: R2 = 1 - SSE / SST, RMSE = sqrt(SSE / n).
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_ms = np.where(rate != 0, 1.0 / rate, np.inf)
        t_ms[np.isnan(rate)] = np.nan
        r2 = np.where(sst > 0, 1.0 - sse / sst, np.nan)
        rmse = np.sqrt(sse / n_valid)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd estimates become +-inf in float32 (flagged)
        out = [s0.astype(np.float32), t_ms.astype(np.float32), r2.astype(np.float32), rmse.astype(np.float32), status]
        if settings.offset:
            out.append(np.where(todo, c_f, np.nan).astype(np.float32))
    return out


class _Decay:
    """Writes exp(-t r) for all time points into ``out``; for equally spaced times by repeated
    multiplication (2 exp calls per voxel instead of N), exact to rounding and several times faster."""

    def __init__(self, t: np.ndarray) -> None:
        tt = t.ravel()
        steps = np.diff(tt)
        self.t = t
        self.t0 = float(tt[0])
        self.step = float(steps[0]) if steps.size else 0.0
        self.uniform = _lm_math.equally_spaced(tt)

    def __call__(self, r: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not self.uniform:
            np.multiply(self.t, -r, out=out)
            return np.exp(out, out=out)
        np.multiply(r, -self.t0, out=out[0])
        np.exp(out[0], out=out[0])
        q = np.exp(r * -self.step)
        for i in range(1, out.shape[0]):
            np.multiply(out[i - 1], q, out=out[i])
        return out


def _levenberg_marquardt(y, w, t, a, r, settings: FitSettings, work: np.ndarray | None = None):
    """Batched LM on sum_i w_i (y_i - a exp(-r t_i) [- c])**2.

    Returns a, r, c, final cost (weighted SSE) and converged, per column. The (N, m) work arrays are
    allocated once and reused in place (fresh large temporaries cost page faults that dominate the
    arithmetic); finished columns are compacted out so later iterations work on the stragglers only.
    """
    n, m = y.shape
    offset = settings.offset
    tol = settings.tolerance
    decay = _Decay(t)
    t1 = np.ascontiguousarray(t.ravel(), dtype=np.float64)
    t2 = t1 * t1
    one = np.ones_like(t1)
    weighted = w is not None
    n_buf = 7 if weighted else 6
    if work is not None and work.shape[0] >= n_buf and work.shape[1] == n and work.shape[2] >= m:
        buf = work[:n_buf, :, :m]
    else:
        buf = np.empty((n_buf, n, m))
    buf[0] = y
    if weighted:
        buf[6] = w
    yb, eb, rb, e1b, r1b, pb = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]
    wb = buf[6] if weighted else None

    a = a.astype(np.float64, copy=True)
    r = r.astype(np.float64, copy=True)
    c = np.zeros(m)
    out_a, out_r, out_c = a.copy(), r.copy(), c.copy()
    out_cost = np.full(m, np.nan)
    converged_out = np.zeros(m, bool)

    ids = np.arange(m)  # column of the caller's arrays that each working column holds
    fin = np.zeros(m, bool)  # working columns already finished (kept until the next compaction)
    k = m
    decay(r, eb)
    np.multiply(eb, a, out=rb)
    np.subtract(yb, rb, out=rb)
    cost = _wcost(wb, rb, one, pb)
    lam = np.full(m, 1e-3)
    tiny = 1e-300
    h33 = None
    if offset:
        h33 = np.full(m, float(n)) if wb is None else one @ wb

    for _ in range(settings.max_iterations):
        Y, E, RES, E1, RES1, P = yb[:, :k], eb[:, :k], rb[:, :k], e1b[:, :k], r1b[:, :k], pb[:, :k]
        W = None if wb is None else wb[:, :k]
        # Normal equations of the Jacobian columns J_a = e, J_r = -a t e, J_c = 1 (weights w). The sums
        # over time points are row-vector products (BLAS gemv), faster than ndarray.sum(axis=0).
        if W is None:
            np.multiply(E, E, out=P)
        else:
            np.multiply(W, E, out=P)
            P *= E
        h11, s_te2, s_tte2 = one @ P, t1 @ P, t2 @ P
        np.multiply(E, RES, out=P)
        if W is not None:
            P *= W
        g1, s_ter = one @ P, t1 @ P
        h12 = -a * s_te2
        h22 = a * a * s_tte2
        g2 = -a * s_ter
        f = 1.0 + lam
        if offset:
            if W is None:
                h13, h23, g3 = one @ E, -a * (t1 @ E), one @ RES
            else:
                np.multiply(W, E, out=P)
                h13, h23 = one @ P, -a * (t1 @ P)
                np.multiply(W, RES, out=P)
                g3 = one @ P
            da, dr, dc = _solve3(h11 * f, h12, h13, h22 * f, h23, h33 * f, g1, g2, g3)
        else:
            da, dr = _solve2(h11 * f, h12, h22 * f, g1, g2)
            dc = None

        # Converged when the step is negligible for every parameter while the damping is light (the step
        # is then the Gauss-Newton step to within lam; a heavily damped step is small for another reason).
        scale_a = np.abs(a) + tiny
        small = (np.abs(da) <= tol * scale_a) & (np.abs(dr) <= tol * (np.abs(r) + tiny)) & (lam <= 1e-2)
        if offset:
            small &= np.abs(dc) <= tol * (scale_a + np.abs(c))

        a1 = a + da
        r1 = r + dr
        with np.errstate(over="ignore", invalid="ignore"):
            decay(r1, E1)
            np.multiply(E1, a1, out=RES1)
            np.subtract(Y, RES1, out=RES1)
            if offset:
                c1 = c + dc
                RES1 -= c1
            cost1 = _wcost(W, RES1, one, P)
        better = cost1 <= cost  # NaN compares False: a step to a non-finite cost is rejected
        better &= ~fin

        # Take the accepted steps: swap the trial buffers in and patch the rejected columns back.
        rejected = np.flatnonzero(~better)
        a = np.where(better, a1, a)
        r = np.where(better, r1, r)
        cost = np.where(better, cost1, cost)
        if offset:
            c = np.where(better, c1, c)
        if rejected.size:
            E1[:, rejected] = E[:, rejected]
            RES1[:, rejected] = RES[:, rejected]
        eb, e1b = e1b, eb
        rb, r1b = r1b, rb
        lam = np.where(better, np.maximum(lam * 0.1, 1e-12), lam * 10.0)

        # A column is done when converged, or hopeless (damping exploded without any progress).
        done = (small | (lam > 1e12) | ~np.isfinite(cost)) & ~fin
        if done.any():
            kk = ids[done]
            out_a[kk], out_r[kk], out_c[kk], out_cost[kk] = a[done], r[done], c[done], cost[done]
            converged_out[kk] = small[done]
            fin |= done
            if fin.all():
                k = 0
                break
            # Compacting copies every work array: worth it only once a good share has finished.
            if fin.mean() > 0.3:
                keep = ~fin
                new_k = int(keep.sum())
                for b in (yb, eb, rb) if wb is None else (yb, eb, rb, wb):
                    b[:, :new_k] = b[:, :k][:, keep]
                k = new_k
                ids = ids[keep]
                a, r, c, lam, cost = a[keep], r[keep], c[keep], lam[keep], cost[keep]
                if h33 is not None:
                    h33 = h33[keep]
                fin = np.zeros(k, bool)
    if k:  # ran out of iterations: keep the last estimate, flagged not converged
        keep = ~fin
        kk = ids[keep]
        out_a[kk], out_r[kk], out_c[kk], out_cost[kk] = a[keep], r[keep], c[keep], cost[keep]
    return out_a, out_r, out_c, out_cost, converged_out


def _wcost(w, res, one, scratch):
    np.multiply(res, res, out=scratch)
    if w is not None:
        scratch *= w
    return one @ scratch


def _solve2(h11, h12, h22, g1, g2):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _lm_math.solve2(h11, h12, h22, g1, g2)


def _solve3(h11, h12, h13, h22, h23, h33, g1, g2, g3):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _lm_math.solve3(h11, h12, h13, h22, h23, h33, g1, g2, g3)


# ------------------------------------------------------------------------------------------- accuracy
def crlb_t_ms(s0: float, t_ms: float, times_ms: Sequence[float], sigma: float) -> float:
    """Cramér-Rao lower bound (standard deviation, ms) of T for ``S0 exp(-t/T)`` in Gaussian noise ``sigma``.

    Fisher information ``I = J^T J / sigma^2`` with ``J = [exp(-t/T), S0 t exp(-t/T) / T^2]``; the bound
    is ``sqrt((I^-1)_TT)``.
    """
    t = np.asarray(times_ms, dtype=float)
    e = np.exp(-t / t_ms)
    j1 = e
    j2 = s0 * t * e / t_ms**2
    i11, i12, i22 = (j1 @ j1), (j1 @ j2), (j2 @ j2)
    det = i11 * i22 - i12 * i12
    return float(math.sqrt(sigma**2 * i11 / det))


def reduced_chi_square(fit: RelaxationFit, noise_sigma: float) -> np.ndarray:
    """``SSE / ((N - p) sigma^2)`` per voxel (float32, NaN where there is no fit).

    About 1 where the mono-exponential model explains the data down to the noise; well above 1 for
    multi-exponential decay, motion or stimulated echoes (see the brain check in docs/validation.md).
    Assumes every time point was valid (a voxel with missing points gets a slightly low value).
    ``noise_sigma``: standard deviation of the noise, e.g. from :func:`noise_sigma_from_background`.
    """
    if not noise_sigma > 0:
        raise InputError(f"noise_sigma must be > 0; got {noise_sigma}.")
    n = len(fit.times_ms)
    dof = n - fit.settings.n_parameters
    if dof < 1:
        raise InputError(f"{n} time points leave no degree of freedom for a goodness-of-fit test.")
    rmse = fit.rmse.astype(np.float64)
    return (rmse * rmse * n / (dof * noise_sigma**2)).astype(np.float32)


def noise_sigma_from_background(values: np.ndarray) -> float:
    """Noise sigma from magnitude-image background voxels (Rayleigh: mean = sigma * sqrt(pi / 2))."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or not np.any(v > 0):
        raise InputError("No non-zero background values to estimate the noise from (zero-filled background?).")
    return float(v.mean() / math.sqrt(math.pi / 2))
