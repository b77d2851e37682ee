"""Benchmark: disc-by-disc registration on the phantom (prints numbers; not collected by pytest).

Measured in one run, against the affine-only registration of the same discs as the baseline:

* cold: a new Python process (interpreter start, imports, elastix load, the five 2D discs), with 2
  workers (affine + B-spline, then affine only) and with 1 worker (in-process), timed from outside;
  last, the same 2-worker run through the full ``itk`` package (``DISCANALYSIS_ITK_FULL=1``: the
  binding used before session 3) as the baseline of the lean binding;
  CPU seconds = the process + the workers' fork server + the workers (read from /proc, Linux);
* warm: in this process, after a first call has started the fork server: five 2D discs with 2 workers
  and in-process, per-disc CPU seconds from the report (``cpu_seconds``);
* 3D: seconds and CPU seconds per disc, in-process.

Goals (issue 7): <= 2 s per 2D disc, <= 5 s for five 2D discs with 2 workers, <= 15 s per 3D disc.
Run from the repository root: ``PYTHONPATH=. python Testing/benchmarks/bench_registration.py``
(``--no-cold``: skip the fresh processes; ``--no-3d``: skip 3D).
The load average is printed with every number: on a shared machine wall times scale with it; CPU
seconds do not (much), and are what the work costs on an idle core.
"""

import os
import subprocess
import sys
import time

from DiscAnalysisLib.phantom import PhantomSettings, make_phantom
from DiscAnalysisLib.registration import RegistrationSettings, register_labelmap
from DiscAnalysisLib.registration.elastix import FULL_ENV, warm_up

COLD = r"""
import os, sys, time
t0 = time.perf_counter()

def tree_cpu():
    # this process + the fork server + its reaped children (the workers), in seconds
    from multiprocessing import forkserver
    total = time.process_time()
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in f[11:15]) / os.sysconf("SC_CLK_TCK")
    return total

if __name__ == "__main__":
    from DiscAnalysisLib.phantom import PhantomSettings, make_phantom
    from DiscAnalysisLib.registration import RegistrationSettings, register_labelmap
    labels = make_phantom(PhantomSettings(seed=0)).labels
    res = register_labelmap(labels, dim=2, workers=int(sys.argv[1]),
                            settings=RegistrationSettings(affine_only=sys.argv[2] == "affine"))
    dice = [r.transform.dice for r in res if r.ok]
    print(f"{time.perf_counter() - t0:.2f} {tree_cpu():.2f} {len(dice)} {sum(dice) / max(len(dice), 1):.3f}")
"""


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def _cold(workers: int, mode: str, binding: str = "lean") -> None:
    env = dict(os.environ)
    env.pop(FULL_ENV, None)
    if binding == "full":
        env[FULL_ENV] = "1"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD, str(workers), mode], check=True, capture_output=True,
                         text=True, env=env).stdout.split()
    wall = time.perf_counter() - t0
    inner, cpu, n, dice = out[-4:]
    name = "affine only" if mode == "affine" else "affine + B-spline"
    print(f"cold 2D {name:18s}, {workers} worker(s), {binding} itk binding: {n} discs in {wall:.1f} s wall from process start "
          f"({float(inner):.1f} s inside Python), {float(cpu):.1f} CPU s in all processes, mean Dice {dice}; "
          f"{_load()}", flush=True)


def _warm(labels, workers: int) -> None:
    for name, s in (("affine only", RegistrationSettings(affine_only=True)),
                    ("affine + B-spline", RegistrationSettings())):
        t0, c0 = time.perf_counter(), time.process_time()
        res = register_labelmap(labels, dim=2, settings=s, workers=workers)
        wall, parent_cpu = time.perf_counter() - t0, time.process_time() - c0
        ok = [r for r in res if r.ok]
        disc_cpu = sum(r.transform.cpu_seconds for r in ok)
        dice = sum(r.transform.dice for r in ok) / max(len(ok), 1)
        print(f"warm 2D {name:18s}, {workers} worker(s): {len(ok)} discs in {wall:.2f} s wall; CPU: "
              f"{disc_cpu / max(len(ok), 1):.2f} s per disc registration, {parent_cpu:.2f} s this process; "
              f"mean Dice {dice:.3f}; {_load()}", flush=True)


def _per_disc_3d(labels) -> None:
    for name, s in (("affine only", RegistrationSettings(affine_only=True)),
                    ("affine + B-spline", RegistrationSettings())):
        t0, c0 = time.perf_counter(), time.process_time()
        res = register_labelmap(labels, dim=3, settings=s)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ok = [r for r in res if r.ok]
        n = max(len(ok), 1)
        print(f"3D {name:18s}, in-process: {len(ok)} discs, {wall / n:.2f} s wall and {cpu / n:.2f} CPU s per disc "
              f"(registration alone {sum(r.transform.cpu_seconds for r in ok) / n:.2f} CPU s), mean Dice "
              f"{sum(r.transform.dice for r in ok) / n:.3f}, max folding "
              f"{max((r.transform.folding_fraction for r in ok), default=0):.4f}; {_load()}", flush=True)


def main() -> None:
    print(f"{os.cpu_count()} CPUs; {_load()}", flush=True)
    if "--no-cold" not in sys.argv:
        for workers, mode, binding in ((2, "full", "lean"), (2, "affine", "lean"), (1, "full", "lean"),
                                       (2, "full", "full")):
            _cold(workers, mode, binding)
    labels = make_phantom(PhantomSettings(seed=0)).labels
    t0, c0 = time.perf_counter(), time.process_time()
    warm_up(1)
    print(f"elastix load in this process: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} CPU s; "
          f"{_load()}", flush=True)
    t0 = time.perf_counter()
    register_labelmap(labels, dim=2, workers=2)  # starts the fork server (its own elastix load)
    print(f"first 2-worker call (fork server loads elastix): {time.perf_counter() - t0:.1f} s wall; {_load()}",
          flush=True)
    _warm(labels, 2)
    _warm(labels, 1)
    if "--no-3d" not in sys.argv:
        _per_disc_3d(labels)
    print(f"done; {_load()}")


if __name__ == "__main__":
    main()
