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


def _fit_relaxometry(ctx: DemoContext, progress: Progress) -> list[str]:
    from .relaxometry.pipeline import demo_step

    return demo_step(ctx, progress)


def _cohort_stats(ctx: DemoContext, progress: Progress) -> list[str]:
    """Voxel-wise partial correlation with age on a small synthetic cohort of atlas-space T2 maps."""
    from .cohort import load_cohort
    from .cohortstats import CohortStatsRequest, make_synthetic_cohort, run_cohort_stats
    from .voxelstats import StatsSettings

    folder = ctx.out_dir / "cohort"
    progress.report(0.0, "writing a synthetic cohort")
    synthetic = make_synthetic_cohort(folder, n_subjects=16, size_ijk=(16, 12, 4), seed=ctx.seed,
                                      timepoints=1)
    cohort = load_cohort(folder / "cohort_baseline.csv")
    request = CohortStatsRequest(StatsSettings("partial", "fdr"), variable="age", covariates=("sex", "bmi"),
                                 maps=("map_t2",))
    (out,) = run_cohort_stats(cohort, folder / "stats", request, progress=progress.sub(0.3, 1.0))
    sig = out.result.significant.reshape(synthetic.effect_mask.shape)
    recovered = float(sig[synthetic.effect_mask].mean())
    outside = int(sig[synthetic.disc_mask & ~synthetic.effect_mask].sum())
    return [
        f"cohort statistics: partial correlation of T2 with age (adjusted for sex, BMI) in {out.summary['n_subjects']} "
        f"synthetic subjects: {out.summary['n_significant']} of {out.summary['n_voxels_tested']} voxels significant "
        f"(FDR q < 0.05); planted age-effect region recovered {recovered:.0%}, {outside} voxels outside it; "
        f"maps in {folder / 'stats'}"
    ]


def _segment(ctx: DemoContext, progress: Progress) -> list[str]:
    """Segment the phantom's T2w image with the shipped network and compare with the phantom's labels.

    The network was trained on real scans only; the phantom is synthetic, so this shows the pipeline
    end to end, and the Dice reported here is not a measure of accuracy on patients (docs/validation.md).
    """
    import json

    import SimpleITK as sitk

    from . import levels
    from .errors import InputError
    from .image_io import write_image, write_text
    from .segmentation import segment_image

    try:
        result = segment_image(ctx.phantom.t2w, progress=progress)
    except InputError as exc:
        return [f"segmentation of the phantom: {exc}"]
    out = ctx.out_dir / "segmentation"
    ctx.paths["segmentation"] = write_image(result.labels, out / "labels.nrrd")
    write_text(json.dumps(result.to_dict(), indent=2), out / "qc.json")
    pred = sitk.GetArrayFromImage(result.labels)
    truth = sitk.GetArrayFromImage(ctx.phantom.labels)
    parts = []
    for name in levels.DISCS:
        a, b = pred == levels.DISC_LABELS[name], truth == levels.DISC_LABELS[name]
        d = 2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1)
        parts.append(f"{name} {d:.2f}")
    found = sum(r.found for r in result.levels if r.level in levels.DISCS)
    return [
        f"segmentation written to {out / 'labels.nrrd'}: {found}/5 discs found; Dice vs phantom truth "
        f"(synthetic image, network trained on real scans): {', '.join(parts)}"
        + (f"; QC flags: {', '.join(result.flags)}" if result.flags else "")
    ]


def _grade(ctx: DemoContext, progress: Progress) -> list[str]:
    from .grading.demo_step import grading_demo_step

    return grading_demo_step(ctx, progress)


def _patient_report(ctx: DemoContext, progress: Progress) -> list[str]:
    """The whole-patient pipeline (``discanalysis run``) on the phantom: the segmentation made above, the
    T2 and T1rho series, markers, grades, fits and the HTML report."""
    from .pipeline import PatientInputs, PipelineSettings, run_patient

    series = {kind: tuple(str(p) for k, p in sorted(ctx.paths.items()) if k.startswith(f"{kind}_series/"))
              for kind in ("t2", "t1rho")}
    inputs = PatientInputs(
        image=str(ctx.paths["t2w"]), case_id="phantom", labels=str(ctx.paths.get("segmentation") or ctx.paths["labels"]),
        age_years=45, sex="F", t2_series=series["t2"], t1rho_series=series["t1rho"],
    )
    result = run_patient(inputs, ctx.out_dir / "patient", PipelineSettings(synthetic=True, tta=False), progress=progress)
    graded = sum(r["grade"] is not None for r in result.rows)
    return [
        f"whole-patient pipeline: {graded}/5 discs graded, T2/T1rho per disc, markers with percentiles "
        f"(age 45, F) -> {result.out_dir / 'results.csv'}",
        f"report: {result.files['report']}",
    ]


#: The steps, in order. Later capabilities append theirs (segment, markers, grade, fit, register, report).
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("phantom", _write_phantom),
    ("read back", _read_back),
    ("markers", _markers),
    ("fit T2/T1rho", _fit_relaxometry),
    ("cohort statistics", _cohort_stats),
    ("segment", _segment),
    ("grade", _grade),
    ("register", _register),
    ("patient report", _patient_report),
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
