"""Compiled (numba) engine of the relaxometry fit: start values, Levenberg-Marquardt and SST per voxel.

Same algorithm, step for step, as the numpy engine in :mod:`.fitting` (weighted log-linear start,
damping schedule x0.1 / x10, acceptance test ``cost1 <= cost``, convergence rule, hopeless-voxel rule),
but one voxel at a time in machine code instead of whole-chunk numpy expressions: each voxel stops after
its own iterations, nothing is allocated per iteration, and the GIL is released (``nogil``) so the fit's
chunk threads really run in parallel. The statuses and quality maps are then computed by the same numpy
code for both engines (``fitting._finish``). The numpy engine stays the reference and the fallback when
numba is not installed; the tests check that both give the same maps.

Compiled once per machine and cached on disk (numba ``cache=True``: next to this file, or in the user's
cache directory when the package folder is read-only, e.g. inside a Slicer install).
"""

from __future__ import annotations

import numpy as np

from . import _lm_math

try:  # numba is optional: without it the numpy implementation is used
    import numba
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None

AVAILABLE = numba is not None


def _decay(t, r, uniform, out):  # pragma: no cover - compiled
    """exp(-t r) for all time points; for equally spaced times by repeated multiplication (2 exp calls
    instead of N; exact to rounding), as ``fitting._Decay`` does."""
    n = t.shape[0]
    if uniform:
        out[0] = np.exp(-t[0] * r)
        q = np.exp(-(t[1] - t[0]) * r)
        for i in range(1, n):
            out[i] = out[i - 1] * q
    else:
        for i in range(n):
            out[i] = np.exp(-t[i] * r)


def _lm_one(yv, wv, weighted, t, uniform, a, r, offset, max_iterations, tol, e, res, e1, res1):
    """LM of one voxel (``yv``, weights ``wv``) from ``(a, r)``; returns a, r, c, cost, converged."""
    n = yv.shape[0]
    tiny = 1e-300
    c = 0.0
    lam = 1e-3
    cost = 0.0
    h33 = 0.0
    _decay(t, r, uniform, e)
    for i in range(n):
        wi = wv[i] if weighted else 1.0
        res[i] = yv[i] - a * e[i]
        cost += wi * res[i] * res[i]
        h33 += wi
    for _ in range(max_iterations):
        h11 = 0.0
        s_te2 = 0.0
        s_tte2 = 0.0
        g1 = 0.0
        s_ter = 0.0
        s_e = 0.0
        s_te = 0.0
        g3 = 0.0
        for i in range(n):
            wi = wv[i] if weighted else 1.0
            we = wi * e[i]
            wee = we * e[i]
            h11 += wee
            s_te2 += t[i] * wee
            s_tte2 += t[i] * t[i] * wee
            wer = we * res[i]
            g1 += wer
            s_ter += t[i] * wer
            if offset:
                s_e += we
                s_te += t[i] * we
                g3 += wi * res[i]
        h12 = -a * s_te2
        h22 = a * a * s_tte2
        g2 = -a * s_ter
        f = 1.0 + lam
        dc = 0.0
        if offset:
            da, dr, dc = _solve3(h11 * f, h12, s_e, h22 * f, -a * s_te, h33 * f, g1, g2, g3)
        else:
            da, dr = _solve2(h11 * f, h12, h22 * f, g1, g2)
        scale_a = abs(a) + tiny
        small = (abs(da) <= tol * scale_a) and (abs(dr) <= tol * (abs(r) + tiny)) and (lam <= 1e-2)
        if offset:
            small = small and (abs(dc) <= tol * (scale_a + abs(c)))
        a1 = a + da
        r1 = r + dr
        c1 = c + dc
        cost1 = 0.0
        _decay(t, r1, uniform, e1)
        for i in range(n):
            wi = wv[i] if weighted else 1.0
            res1[i] = yv[i] - a1 * e1[i] - c1
            cost1 += wi * res1[i] * res1[i]
        if cost1 <= cost:  # NaN compares False: a step to a non-finite cost is rejected
            a = a1
            r = r1
            c = c1
            cost = cost1
            for i in range(n):
                e[i] = e1[i]
                res[i] = res1[i]
            lam = max(lam * 0.1, 1e-12)
        else:
            lam = lam * 10.0
        if small or lam > 1e12 or not np.isfinite(cost):
            return a, r, c, cost, small
    return a, r, c, cost, False


def _fit_columns(y, logy, t, uniform, n_par, offset, max_iterations, tol,
                 n_valid, start_ok, decaying_start, out_a, out_r, out_c, out_cost, out_converged, sst):
    """Start values (weighted log-linear, as ``fitting._start_and_fit_numpy``), LM and SST of every column."""
    n, m = y.shape
    yv = np.empty(n)
    wv = np.empty(n)
    e = np.empty(n)
    res = np.empty(n)
    e1 = np.empty(n)
    res1 = np.empty(n)
    for j in range(m):
        nv = 0.0
        npos = 0
        sw = 0.0
        st = 0.0
        stt = 0.0
        sl = 0.0
        stl = 0.0
        sy = 0.0
        syy = 0.0
        for i in range(n):
            v = y[i, j]
            if np.isfinite(v):
                wv[i] = 1.0
                yv[i] = v
                nv += 1.0
                sy += v
                syy += v * v
                if v > 0:
                    npos += 1
                    wl = v * v
                    lv = logy[i, j]
                    sw += wl
                    st += t[i] * wl
                    stt += t[i] * t[i] * wl
                    sl += wl * lv
                    stl += t[i] * wl * lv
            else:
                wv[i] = 0.0
                yv[i] = 0.0
        weighted = nv < n
        n_valid[j] = nv
        sst[j] = syy - sy * sy / nv
        det = sw * stt - st * st
        slope = (sw * stl - st * sl) / det
        intercept = (sl - slope * st) / sw
        r0 = -slope
        ok = not ((nv < n_par) or (npos < 2) or not (det > 1e-12 * max(sw * stt, 1e-300)))
        start_ok[j] = ok
        decaying_start[j] = r0 > 0
        out_converged[j] = False
        if not (ok and r0 > 0):
            out_a[j] = np.nan
            out_r[j] = np.nan
            out_c[j] = np.nan
            out_cost[j] = np.nan
            continue
        a0 = np.exp(min(max(intercept, -700.0), 700.0))
        a, r, c, cost, conv = _lm_one(yv, wv, weighted, t, uniform, a0, r0, offset, max_iterations, tol,
                                      e, res, e1, res1)
        out_a[j] = a
        out_r[j] = r
        out_c[j] = c
        out_cost[j] = cost
        out_converged[j] = conv


if AVAILABLE:
    _decay = numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")(_decay)
    _solve2 = numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")(_lm_math.solve2)
    _solve3 = numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")(_lm_math.solve3)
    _lm_one = numba.njit(nogil=True, cache=True, error_model="numpy")(_lm_one)
    _kernel = numba.njit(nogil=True, cache=True, error_model="numpy")(_fit_columns)
else:  # pragma: no cover
    _kernel = None


def fit_columns(y, t, settings):
    """Start values, LM and SST of every column of ``y`` (N, m): the tuple ``fitting._finish`` takes."""
    m = y.shape[1]
    y = np.ascontiguousarray(y, dtype=np.float64)
    t1 = np.ascontiguousarray(np.ravel(t), dtype=np.float64)
    n_valid, sst = np.empty(m), np.empty(m)
    start_ok, decaying_start, converged = np.empty(m, np.bool_), np.empty(m, np.bool_), np.empty(m, np.bool_)
    a, r, c, cost = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    # The logs of the start values, as in the numpy engine: float32 logs over the whole chunk (numpy's
    # vectorised log is ~20 x faster than one libm call per point, and float32 is plenty for a start).
    with np.errstate(divide="ignore", invalid="ignore"):
        logy = np.log(y.astype(np.float32))
    _kernel(y, logy, t1, _lm_math.equally_spaced(t1), settings.n_parameters, bool(settings.offset), int(settings.max_iterations),
            float(settings.tolerance), n_valid, start_ok, decaying_start, a, r, c, cost, converged, sst)
    return n_valid, start_ok, decaying_start, a, r, c, cost, converged, sst
