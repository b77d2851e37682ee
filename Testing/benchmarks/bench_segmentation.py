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
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


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

    big = torch.nn.functional.interpolate(torch.from_numpy(s256[8][None, None]), size=(512, 512), mode="bilinear")[0, 0].numpy()
    img512 = sitk.GetImageFromArray(big)
    img512.SetSpacing((0.5, 0.5))
    t512 = timeit(lambda: segment_image(img512, net=net), args.repeats)

    vol = sitk.GetImageFromArray(s256)
    vol.SetDirection((0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    t16 = timeit(lambda: segment_image(vol, net=net), max(1, args.repeats // 2))
    t16_tta = timeit(lambda: segment_image(vol, SegmentationSettings(tta=True), net=net), 1)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"input: {source}; torch threads {args.threads}; load average {load:.1f}; baseline 512^2 matmul {base * 1e3:.1f} ms")
    print(f"network only, 256^2:              {t_net * 1e3:7.1f} ms  ({t_net / base:.1f} x baseline)")
    print(f"segment_image, 256^2 slice 1 mm:  {t256 * 1e3:7.1f} ms  ({t256 / base:.1f} x baseline)  goal <= 50 ms")
    print(f"segment_image, 512^2 slice 0.5 mm:{t512 * 1e3:7.1f} ms  ({t512 / base:.1f} x baseline)")
    print(f"segment_image, 16 x 256^2 stack:  {t16:7.2f} s   ({t16 / base:.0f} x baseline)  goal <= 1 s")
    print(f"  same stack with --tta:          {t16_tta:7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
