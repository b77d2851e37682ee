"""``discanalysis demo --out DIR``: the synthetic phantom through every pipeline step that exists."""

from __future__ import annotations

import argparse
import time


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="write the synthetic phantom and run every pipeline step on it")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--seed", type=int, default=0, help="phantom random seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from .main import progress_callback

    t0 = time.perf_counter()
    with progress_callback(args, "demo") as callback:
        result = run_demo(args.out, seed=args.seed, progress=callback)
    print("DiscAnalysis demo (synthetic phantom - not clinical data)")
    for line in result.lines:
        print(f"  - {line}")
    steps = ", ".join(f"{name} {sec:.2f} s" for name, sec in result.seconds_per_step)
    print(f"  time: {time.perf_counter() - t0:.1f} s ({steps})")
    print(f"Outputs are in {result.out_dir.resolve()}")
    return 0
