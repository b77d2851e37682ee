"""Benchmark of the relaxometry fit (issue 3). Not collected by pytest; run it and read the numbers:

    python Testing/benchmarks/bench_relaxometry.py [--subset 2000] [--repeats 3]

Synthetic series: 256 x 256 x 12 voxels x 6 echoes, TE = 10, 25, ..., 85 ms, T2 uniform in 20..150 ms,
S0 = 1000, Rician noise with sigma = S0 / 50 (SNR 50 at t = 0). Prints, measured in this one process:
throughput (Mvoxel/s, wall clock and per CPU-second) of ``fit_relaxation`` and of a per-voxel
``scipy.optimize.curve_fit`` loop on a random subset, their ratio, median |T2 - curve_fit T2|, bias and
RMSE of T2 against the truth, the Cramér-Rao lower bound (Gaussian noise, RMS over the voxels' true T2),
the failed-fit fraction and the peak working memory (tracemalloc, maps excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from DiscAnalysisLib.relaxometry import FitSettings, FitStatus, fit_relaxation  # noqa: E402
from DiscAnalysisLib.relaxometry.fitting import uses_compiled  # noqa: E402

SHAPE = (12, 256, 256)  # (k, j, i)
TE_MS = np.linspace(10.0, 85.0, 6)
S0 = 1000.0
SNR = 50.0


def make_series(seed: int = 0):
    rng = np.random.default_rng(seed)
    t2 = rng.uniform(20.0, 150.0, SHAPE)
    sigma = S0 / SNR
    series = np.empty((TE_MS.size, *SHAPE), np.float32)
    for i, te in enumerate(TE_MS):
        clean = S0 * np.exp(-te / t2)
        series[i] = np.hypot(clean + rng.normal(0, sigma, SHAPE), rng.normal(0, sigma, SHAPE))
    return series, t2, sigma


def crlb_sd_ms(t2: np.ndarray, sigma: float) -> np.ndarray:
    """Vectorised CRLB of T for S0 exp(-t/T), Gaussian noise sigma (standard deviation, ms)."""
    t = TE_MS[:, None]
    e = np.exp(-t / t2[None])
    j1, j2 = e, S0 * t * e / t2[None] ** 2
    i11, i12, i22 = (j1 * j1).sum(0), (j1 * j2).sum(0), (j2 * j2).sum(0)
    return np.sqrt(sigma**2 * i11 / (i11 * i22 - i12 * i12))


def curve_fit_loop(series2d: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, float]:
    from scipy.optimize import curve_fit

    def model(t, a, tau):
        return a * np.exp(-t / tau)

    out = np.full(idx.size, np.nan)
    t0 = time.perf_counter()
    for n, i in enumerate(idx):
        y = series2d[:, i].astype(np.float64)
        try:
            p, _ = curve_fit(model, TE_MS, y, p0=(float(y[0]), 50.0), maxfev=2000)
            out[n] = p[1]
        except RuntimeError:
            pass
    return out, time.perf_counter() - t0


def timed_fits(series, settings, repeats):
    """The fit and the median wall and CPU seconds of ``repeats`` runs."""
    walls, cpus, fit = [], [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fit = fit_relaxation(series, TE_MS, settings=settings)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return fit, float(np.median(walls)), float(np.median(cpus))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=2000, help="voxels for the curve_fit loop")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of our fit (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="FitSettings.n_threads (default min(2, CPUs))")
    ap.add_argument("--engine", default="auto", choices=("auto", "compiled", "numpy"), help="FitSettings.engine")
    args = ap.parse_args()

    series, t2, sigma = make_series()
    n_vox = t2.size
    settings = FitSettings(n_threads=args.threads, engine=args.engine)
    print(f"series: {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} voxels x {TE_MS.size} echoes (TE {TE_MS[0]:g}..{TE_MS[-1]:g} ms), "
          f"T2 U(20,150) ms, S0 {S0:g}, Rician SNR {SNR:g} (sigma {sigma:g})")
    print(f"machine: {os.cpu_count()} CPUs, load average before the run {os.getloadavg()[0]:.2f}, "
          f"fit threads {settings.threads}, engine {'compiled (numba)' if uses_compiled(settings) else 'numpy'}")

    fit_relaxation(series[:, :1], TE_MS, settings=settings)  # warm-up (imports, thread pool)
    fit, wall, cpu = timed_fits(series, settings, args.repeats)
    # The numpy engine in the same process, as the in-run baseline of the compiled one.
    np_fit, np_wall, np_cpu = timed_fits(series, FitSettings(n_threads=args.threads, engine="numpy"), args.repeats)
    ours_wall = n_vox / wall / 1e6
    ours_cpu = n_vox / cpu / 1e6

    rng = np.random.default_rng(1)
    idx = rng.choice(n_vox, args.subset, replace=False)
    s2d = series.reshape(TE_MS.size, -1)
    cf_c0 = time.process_time()
    cf_t2, cf_wall = curve_fit_loop(s2d, idx)
    cf_cpu = time.process_time() - cf_c0
    cf_rate_wall = args.subset / cf_wall / 1e6
    cf_rate_cpu = args.subset / cf_cpu / 1e6

    est = fit.t_ms.ravel().astype(np.float64)
    ok = fit.status.ravel() == FitStatus.FITTED
    truth = t2.ravel()
    err = est[ok] - truth[ok]
    crlb = crlb_sd_ms(truth, sigma)
    crlb_rms = float(np.sqrt(np.mean(crlb**2)))
    rmse = float(np.sqrt(np.mean(err**2)))
    both = np.isfinite(cf_t2) & ok[idx]
    d_cf = np.abs(cf_t2[both] - est[idx][both])

    tracemalloc.start()
    fit_m = fit_relaxation(series, TE_MS, settings=settings)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maps = fit_m.t_ms.size * (4 * 4 + 1)

    print(f"ours:      {ours_wall:7.3f} Mvoxel/s wall ({wall:.3f} s, median of {args.repeats}), "
          f"{ours_cpu:7.3f} Mvoxel per CPU-second")
    print(f"numpy engine: {n_vox / np_wall / 1e6:7.3f} Mvoxel/s wall ({np_wall:.3f} s), "
          f"{n_vox / np_cpu / 1e6:7.3f} Mvoxel per CPU-second; ours / numpy engine {np_wall / wall:.2f} x (wall), "
          f"{np_cpu / cpu:.2f} x (CPU); max |dT2| between engines "
          f"{np.nanmax(np.abs(np_fit.t_ms.astype(float) - fit.t_ms)):.2e} ms")
    print(f"curve_fit: {cf_rate_wall * 1e6:9.0f} voxel/s wall, {cf_rate_cpu * 1e6:9.0f} voxel per CPU-second "
          f"({args.subset} voxels)")
    print(f"ratio:     {ours_wall / cf_rate_wall:7.0f} x (wall), {ours_cpu / cf_rate_cpu:7.0f} x (CPU time)")
    print(f"agreement with curve_fit: median |dT2| {np.median(d_cf):.2e} ms, 99th pct {np.percentile(d_cf, 99):.2e} ms, "
          f"max {d_cf.max():.2e} ms ({both.sum()} voxels)")
    print(f"accuracy vs truth (fitted voxels): bias {err.mean():+.3f} ms, RMSE {rmse:.3f} ms, "
          f"CRLB {crlb_rms:.3f} ms (RMS over voxels), RMSE/CRLB {rmse / crlb_rms:.3f}")
    for lo, hi in ((20, 50), (50, 100), (100, 150)):
        sel = ok & (truth >= lo) & (truth < hi)
        e = est[sel] - truth[sel]
        print(f"  T2 {lo:3d}-{hi:3d} ms: bias {e.mean():+.3f} ms, RMSE {np.sqrt(np.mean(e**2)):.3f} ms, "
              f"CRLB {np.sqrt(np.mean(crlb[sel]**2)):.3f} ms")
    counts = fit.status_counts()
    print(f"failed fits: {100 * fit.failed_fraction():.4f} % ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})")
    print(f"peak working memory (tracemalloc, output maps of {maps / 1e6:.1f} MB excluded): {(peak - maps) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
