"""Benchmark: disc markers on the default phantom (prints numbers; not collected by pytest).

Baseline measured in the same process: one full pass over the T2w volume (sitk -> numpy copy + mean), so
the ratio says how many "volume reads" the markers cost. Run from the repository root:
``PYTHONPATH=. python Testing/benchmarks/bench_markers.py``.
"""

import time

import numpy as np
import SimpleITK as sitk

from DiscAnalysisLib.markers import compute_markers
from DiscAnalysisLib.phantom import PhantomSettings, make_phantom


def _best(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ph = make_phantom(PhantomSettings(seed=0))
    base = _best(lambda: float(np.mean(sitk.GetArrayFromImage(ph.t2w).astype(np.float64))))
    plain = _best(lambda: compute_markers(ph.t2w, ph.labels))
    with_map = _best(lambda: compute_markers(ph.t2w, ph.labels, maps={"t2_ms": ph.t2_ms}))
    print(f"phantom {ph.t2w.GetSize()}: baseline volume read {base * 1e3:.1f} ms")
    print(f"markers, 5 levels:          {plain * 1e3:.1f} ms ({plain / base:.0f} x baseline)")
    print(f"markers + one T2 map:       {with_map * 1e3:.1f} ms ({with_map / base:.0f} x baseline)")


if __name__ == "__main__":
    main()
