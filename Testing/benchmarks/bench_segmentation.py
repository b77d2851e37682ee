#!/usr/bin/env python
"""Segmentation speed on CPU: per 256 x 256 and 512 x 512 slice, per 16-slice stack (prints numbers).

    python Testing/benchmarks/bench_segmentation.py [--threads 2] [--repeats 5]

Times (median of --repeats) for: the network alone on a 256^2 input; the whole ``segment_image`` on a
256^2 slice at 1 mm (no resampling), a 512^2 slice at 0.55 mm (resampled to 1 mm first), and a 16-slice
256^2 stack at 1 mm. Inputs are the real lumbar_t2_3d subject 11 when available (so post-processing
sees real discs), else random noise (post-processing then has nothing to do). A baseline matrix
multiply measured in the same process gives a ratio that is comparable across loaded/unloaded machines.
Goals (issue 4): <= 50 ms per 256^2 slice and <= 1 s per stack on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def timeit(fn, repeats):
    """Median wall seconds over ``repeats`` runs (after a warm-up); CPU seconds of the process go to CPU_S."""
    fn()  # warm-up
    ts, cs = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    CPU_S.append(statistics.median(cs))
    return statistics.median(ts)


CPU_S: list[float] = []  # median CPU seconds (all threads of this process) of the last timeit calls


def real_or_noise():
    data = Path(os.environ.get("DISCANALYSIS_DATA", ROOT.parent / "shared" / "data")) / "lumbar_t2_3d" / "11_T2w.nrrd"
    if data.exists():
        img = sitk.ReadImage(str(data))
        arr = sitk.GetArrayFromImage(img).astype(np.float32)  # (k, j, i) = (lr, si, ap) at 1 mm
        return arr[25:41], "lumbar_t2_3d subject 11 (held out of the shipped weights)"
    return np.random.default_rng(0).random((16, 221, 221)).astype(np.float32) * 1000, "random noise"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from DiscAnalysisLib.segmentation import SegmentationSettings, network, segment_image

    net = network.load_model()
    stack, source = real_or_noise()
    pad = lambda a, n: np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, max(0, n - a.shape[-2])), (0, max(0, n - a.shape[-1]))], mode="edge")[..., :n, :n]  # noqa: E731
    s256 = pad(stack, 256)
    a = torch.randn(512, 512)
    base = timeit(lambda: a @ a, args.repeats)

    x = torch.randn(1, 1, 256, 256)
    with torch.inference_mode():
        t_net = timeit(lambda: net(x), args.repeats)

    img2d = sitk.GetImageFromArray(s256[8])
    img2d.SetSpacing((1.0, 1.0))
    t256 = timeit(lambda: segment_image(img2d, net=net), args.repeats)
    t256_rule = timeit(lambda: segment_image(img2d, SegmentationSettings(level_judge=False), net=net), args.repeats)

    big = torch.nn.functional.interpolate(torch.from_numpy(s256[8][None, None]), size=(512, 512), mode="bilinear")[0, 0].numpy()
    img512 = sitk.GetImageFromArray(big)
    img512.SetSpacing((0.5, 0.5))
    t512 = timeit(lambda: segment_image(img512, net=net), args.repeats)

    vol = sitk.GetImageFromArray(s256)
    vol.SetDirection((0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    t16 = timeit(lambda: segment_image(vol, net=net), max(1, args.repeats // 2))
    t16_tta = timeit(lambda: segment_image(vol, SegmentationSettings(tta=True), net=net), 1)

    # parts of the 256^2 slice: intensity normalisation (percentile clip + CLAHE + z-score), post-processing
    from DiscAnalysisLib.segmentation.postprocess import assign_levels
    from DiscAnalysisLib.segmentation.preprocess import normalise_slice

    t_norm = timeit(lambda: normalise_slice(s256[8]), args.repeats)
    p1 = network.predict_probabilities(net, normalise_slice(s256[8])[None])
    t_post = timeit(lambda: assign_levels(p1, (1.0, 1.0, 1.0)), args.repeats)
    # the lowest-disc judge's own call (two crops and its network), timed directly: the difference of the two
    # 256^2 medians above is of the same order as the machine's noise
    from DiscAnalysisLib.segmentation import judge
    from DiscAnalysisLib.segmentation.postprocess import PostprocessSettings, find_discs

    discs = find_discs(p1, (1.0, 1.0, 1.0), PostprocessSettings())
    t_judge = timeit(lambda: judge.make_check(judge.shipped_judge(), s256[8][None], (1.0, 1.0, 1.0))(discs), args.repeats)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = dict(zip(("base", "net", "256", "256rule", "512", "16", "tta", "norm", "post", "judge"), CPU_S, strict=True))
    print(f"input: {source}; torch threads {args.threads}; load average (1/5/15 min) {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} on {os.cpu_count()} CPUs; baseline 512^2 matmul {base * 1e3:.1f} ms")
    print("(wall = median wall time; cpu = median CPU time of this process, all threads)")
    print(f"network only, 256^2 (net(x), {args.threads} threads): {t_net * 1e3:7.1f} ms wall {cpu['net'] * 1e3:7.1f} ms cpu  "
          f"({t_net / base:.1f} x baseline)")
    print(f"segment_image, 256^2 slice 1 mm:   {t256 * 1e3:7.1f} ms wall {cpu['256'] * 1e3:7.1f} ms cpu  "
          f"({t256 / base:.1f} x baseline)  goal <= 50 ms")
    print(f"  same slice without the judge:    {t256_rule * 1e3:7.1f} ms wall {cpu['256rule'] * 1e3:7.1f} ms cpu  "
          f"(difference {(t256 - t256_rule) * 1e3:.1f} ms)")
    print(f"segment_image, 512^2 slice 0.5 mm: {t512 * 1e3:7.1f} ms wall {cpu['512'] * 1e3:7.1f} ms cpu  ({t512 / base:.1f} x baseline)")
    print(f"segment_image, 16 x 256^2 stack:   {t16:7.2f} s  wall {cpu['16']:7.2f} s  cpu  ({t16 / base:.0f} x baseline)  goal <= 1 s")
    print(f"  same stack with --tta:           {t16_tta:7.2f} s  wall {cpu['tta']:7.2f} s  cpu")
    print(f"parts of the 256^2 slice: normalisation (CLAHE) {t_norm * 1e3:.1f} ms wall {cpu['norm'] * 1e3:.1f} ms cpu; "
          f"post-processing {t_post * 1e3:.1f} ms wall {cpu['post'] * 1e3:.1f} ms cpu; "
          f"the lowest-disc judge's call {t_judge * 1e3:.1f} ms wall {cpu['judge'] * 1e3:.1f} ms cpu")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
