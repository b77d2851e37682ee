"""The demo: the synthetic phantom through every pipeline step that exists.

Each step is a function ``step(context, progress) -> list[str]`` returning summary lines; later
capabilities register themselves by appending to :data:`DEMO_STEPS`. The demo is for showing the tool
working end to end on known data, never for claiming clinical accuracy (the phantom is synthetic).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .progress import Progress, ProgressCallback


@dataclass
class DemoContext:
    """What the steps share: the phantom, where its files are, and the output folder."""

    out_dir: Path
    seed: int = 0
    phantom: object = None
    paths: dict[str, Path] = field(default_factory=dict)


DemoStep = Callable[[DemoContext, Progress], list[str]]


def _write_phantom(ctx: DemoContext, progress: Progress) -> list[str]:
    from .phantom import PhantomSettings, make_phantom, write_phantom

    progress.report(0.0, "building phantom")
    ctx.phantom = make_phantom(PhantomSettings(seed=ctx.seed))
    progress.report(0.5, "writing phantom")
    ctx.paths.update(write_phantom(ctx.phantom, ctx.out_dir / "phantom"))
    grades = ", ".join(f"{k} {v}" for k, v in ctx.phantom.grades.items())
    return [f"phantom written to {ctx.out_dir / 'phantom'} (Pfirrmann grades: {grades})"]


def _read_back(ctx: DemoContext, progress: Progress) -> list[str]:
    from .image_io import describe

    info = describe(ctx.paths["t2w"])[0]
    return [
        f"read back t2w: size {'x'.join(map(str, info.size))}, spacing "
        f"{' x '.join(f'{s:g}' for s in info.spacing_mm or ())} mm, orientation {info.orientation}"
    ]


def _markers(ctx: DemoContext, progress: Progress) -> list[str]:
    from .markers.demo_step import markers_demo_step

    return markers_demo_step(ctx, progress)


def _register(ctx: DemoContext, progress: Progress) -> list[str]:
    from .registration.demo_step import registration_demo_step

    return registration_demo_step(ctx, progress)


#: The steps, in order. Later capabilities append theirs (segment, markers, grade, fit, register, report).
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("phantom", _write_phantom),
    ("read back", _read_back),
    ("markers", _markers),
    ("register", _register),
]


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    lines: tuple[str, ...]
    seconds_per_step: tuple[tuple[str, float], ...]


def run_demo(out_dir: str | Path, *, seed: int = 0, progress: ProgressCallback | Progress | None = None) -> DemoResult:
    """Run every registered demo step on the phantom, writing into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out_dir=out, seed=seed)
    prog = Progress.wrap(progress)
    lines: list[str] = []
    timings: list[tuple[str, float]] = []
    n = len(DEMO_STEPS)
    for i, (name, step) in enumerate(DEMO_STEPS):
        t0 = time.perf_counter()
        sub = prog.sub(i / n, (i + 1) / n)
        sub.report(0.0, name)
        lines.extend(step(ctx, sub))
        sub.report(1.0, name)
        timings.append((name, time.perf_counter() - t0))
    return DemoResult(out, tuple(lines), tuple(timings))
