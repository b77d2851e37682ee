"""Benchmark of the voxel-wise statistics: 30 subjects x 786,432 voxels (e.g. a 96 x 128 x 64 atlas grid).

Goals (issue 8): r, t and FDR maps <= 1 s; 1000 maxT permutations <= 10 s on 2 cores. Prints wall times,
the load average (the development machine is shared), and ratios to a baseline measured in this process
(one float64 matrix product x @ Y of the same size, which tracks the machine's current speed).

    python Testing/benchmarks/bench_voxelstats.py [--voxels 786432] [--subjects 30] [--permutations 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from DiscAnalysisLib import voxelstats as vs  # noqa: E402


def _best(fn, repeat=3):
    """(best wall time, CPU time of that run, result)."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=786_432)
    ap.add_argument("--subjects", type=int, default=30)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="BLAS threads (set before numpy starts: use env vars)")
    args = ap.parse_args()
    n, v = args.subjects, args.voxels
    rng = np.random.default_rng(0)
    y = rng.normal(100, 10, (n, v))
    x = rng.normal(size=n)
    cov = rng.normal(size=(n, 3))
    g = np.arange(n) % 2 == 0
    y[:, : v // 20] += 5 * x[:, None]
    # warm-up: imports (scipy.stats, statsmodels) are not part of the timing
    vs.voxel_test(y[:, :1000], vs.StatsSettings(test="pearson", correction="fdr"), x=x)

    print(f"# {n} subjects x {v} voxels; load average {os.getloadavg()}; cpus {os.cpu_count()}; "
          f"OMP/OPENBLAS threads {os.environ.get('OMP_NUM_THREADS')}/{os.environ.get('OPENBLAS_NUM_THREADS')}")
    base, _, _ = _best(lambda: x @ y)
    print(f"baseline x @ Y (float64 matvec): {base * 1e3:.1f} ms")
    for test, kw in (("pearson", {"x": x}), ("partial", {"x": x, "covariates": cov}), ("welch", {"group": g})):
        s = vs.StatsSettings(test=test, correction="fdr")
        t, cpu, res = _best(lambda s=s, kw=kw: vs.voxel_test(y, s, **kw))
        print(f"{test:8s} maps + FDR: {t:.3f} s wall, {cpu:.3f} s CPU  (goal <= 1 s; {t / base:.0f} x baseline); "
              f"{int(res.significant.sum())} significant")
    for test, kw in (("pearson", {"x": x}), ("partial", {"x": x, "covariates": cov}), ("welch", {"group": g}),
                     ("student", {"group": g})):
        s = vs.StatsSettings(test=test, correction="maxt", permutations=args.permutations)
        t, cpu, res = _best(lambda s=s, kw=kw: vs.voxel_test(y, s, **kw), repeat=1)
        print(f"{test:8s} maxT {args.permutations} permutations: {t:.2f} s wall, {cpu:.2f} s CPU  (goal <= 10 s; "
              f"{t / base:.0f} x baseline); "
              f"{int(res.significant.sum())} significant; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
