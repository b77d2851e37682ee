"""Benchmark: disc-by-disc registration on the phantom (prints numbers; not collected by pytest).

Measured in one process, against the affine-only registration of the same discs as the baseline:
seconds per disc in 2D (mid-sagittal) and 3D, and the wall time for all five 2D discs with 2 worker
processes (a fresh spawn pool, so it includes each worker's one-off elastix load, also timed alone).
Goals (issue 7): <= 2 s per 2D disc, <= 5 s for five 2D discs with 2 workers, <= 15 s per 3D disc.
Run from the repository root: ``PYTHONPATH=. python Testing/benchmarks/bench_registration.py``
(``--warm-pool-only``: just the five discs on an already started 2-worker pool).
The load average is printed: on a shared machine wall times scale with it; CPU seconds (in-process
runs) do not, and are what a disc costs on an idle core.
"""

import os
import subprocess
import sys
import time

from DiscAnalysisLib.phantom import PhantomSettings, make_phantom
from DiscAnalysisLib.registration import RegistrationSettings, register_labelmap, worker_pool
from DiscAnalysisLib.registration.elastix import warm_up


def _per_disc(labels, dim, settings, workers=1):
    t0, c0 = time.perf_counter(), time.process_time()
    res = register_labelmap(labels, dim=dim, settings=settings, workers=workers)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = [r for r in res if r.ok]
    n = max(len(ok), 1)
    return wall, cpu / n, len(ok), sum(r.transform.seconds for r in ok) / n, sum(r.transform.dice for r in ok) / n


def _warm_pool(labels, settings) -> None:
    """Five 2D discs on a pool that has already loaded elastix (how a batch over many subjects runs)."""
    with worker_pool(2) as pool:
        register_labelmap(labels, dim=2, settings=settings, executor=pool)  # warm-up: loads elastix in both
        for name, s in (("affine only", RegistrationSettings(affine_only=True)), ("affine + B-spline", settings)):
            t0 = time.perf_counter()
            res = register_labelmap(labels, dim=2, settings=s, executor=pool)
            wall = time.perf_counter() - t0
            print(f"2D {name:18s}, 2 warm workers: {sum(r.ok for r in res)} discs in {wall:.1f} s wall")


def main() -> None:
    ph = make_phantom(PhantomSettings(seed=0))
    if "--warm-pool-only" in sys.argv:
        _warm_pool(ph.labels, RegistrationSettings())
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        return
    t0 = time.perf_counter()
    warm_up(1)
    print(f"elastix load in this process: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from DiscAnalysisLib.registration.elastix import warm_up; warm_up(1)"],
                   check=True)
    print(f"elastix load in a fresh process (what each worker pays once): {time.perf_counter() - t0:.1f} s")
    full, affine = RegistrationSettings(), RegistrationSettings(affine_only=True)
    for dim in (2, 3):
        for name, s in (("affine only", affine), ("affine + B-spline", full)):
            wall, cpu, n, per, dice = _per_disc(ph.labels, dim, s)
            print(f"{dim}D {name:18s}: {n} discs, {per:.2f} s per disc wall, {cpu:.2f} s per disc CPU "
                  f"(total wall {wall:.1f} s), mean Dice {dice:.3f}")
    for name, s in (("affine only", affine), ("affine + B-spline", full)):
        wall, _, n, per, dice = _per_disc(ph.labels, 2, s, workers=2)
        print(f"2D {name:18s}, 2 workers: five discs in {wall:.1f} s wall (incl. pool start), {per:.2f} s per disc")
    _warm_pool(ph.labels, full)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
