"""Voxel-wise statistics of a cohort (cohort CSV -> maps, summary table and figures).

For each disc level of the cohort and each map column (``map_t2``, ``map_t1rho``, ...), the atlas-space maps
are stacked into a (subjects, voxels) array, implausible values are excluded (:data:`DEFAULT_RANGES`, from
Iriondo et al. section 2.3: T1rho < 250 ms, T2 < 150 ms; override with ``value_ranges``), the subject-level
variables are read from the CSV (rows with a missing value are left out and counted), and
:func:`DiscAnalysisLib.voxelstats.voxel_test` runs. Outputs per level and map, in
``<out>/<level>/<map>_<test>_``:

* ``r.nrrd`` (correlation tests), ``t.nrrd``, ``p.nrrd``, ``q.nrrd`` (corrected p), ``n.nrrd`` (subjects per
  voxel), ``mask.nrrd`` (1 = tested), ``effect.nrrd`` (t-tests: mean difference), ``mean.nrrd`` (mean map of
  the included subjects), all on the atlas grid of the inputs (geometry copied from the first map);
* ``figure.png``: three orthogonal slices through the peak voxel: the mean map with the statistic where
  q < alpha;
* one row per analysis in ``<out>/summary.csv`` and ``summary.json``: voxels tested, voxels masked for too
  few subjects, voxels significant, peak statistic and its location (index i, j, k and LPS mm), number of
  significant clusters (26-connected) and the largest cluster's size.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cohort import Cohort, CohortRow
from .errors import InputError
from .progress import Progress, ProgressCallback
from .voxelstats import StatsSettings, VoxelStatsResult, apply_range, voxel_test

log = logging.getLogger(__name__)

#: Inclusion ranges (exclusive) per map column, from Iriondo et al. 2.3 (data set B: T1rho < 200 ms and
#: T2 < 150 ms; data set A: T1rho < 250 ms). Maps not listed: finite values only.
DEFAULT_RANGES: dict[str, tuple[float | None, float | None]] = {
    "map_t1rho": (0.0, 250.0),
    "map_t2": (0.0, 150.0),
}


@dataclass(frozen=True)
class CohortStatsRequest:
    """What to analyse: the test settings plus the cohort columns it uses.

    variable - column correlated with the maps (pearson, partial); covariates - adjustment columns
    (partial); group - two-valued column (welch, student; ``group_one`` names the value that is group 1,
    default: the second in sorted order); maps - map columns to analyse (default: all; map-corr needs two);
    levels - levels to analyse (default: all); value_ranges - inclusion ranges per map column; atlas - an
    image on the maps' grid (e.g. the atlas T2w template) used as the figures' background instead of the
    mean map; figures - write the PNG figures.
    """

    settings: StatsSettings = StatsSettings()
    variable: str | None = None
    covariates: tuple[str, ...] = ()
    group: str | None = None
    group_one: str | None = None
    maps: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    value_ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    figures: bool = True
    atlas: str | None = None


@dataclass(frozen=True)
class AnalysisOutput:
    level: str
    map_name: str
    result: VoxelStatsResult
    files: dict[str, Path]
    summary: dict


def _ranges(req: CohortStatsRequest, column: str):
    return req.value_ranges.get(column, DEFAULT_RANGES.get(column, (None, None)))


def _load_stack(rows: Sequence[CohortRow], column: str, lo, hi):
    import SimpleITK as sitk

    from .image_io import read_image

    ref = None
    arrays = []
    for r in rows:
        img = read_image(r.maps[column])
        if ref is None:
            ref = img
        arrays.append(sitk.GetArrayFromImage(img).astype(np.float64).ravel())
    stack = apply_range(np.vstack(arrays), lo, hi)
    return stack, ref


def _subject_inputs(cohort: Cohort, rows: list[CohortRow], req: CohortStatsRequest):
    """Subject-level arrays for the test, the rows kept, and notes on dropped rows / codings."""
    test = req.settings.test
    notes = []
    keep = np.ones(len(rows), dtype=bool)
    x = cov = group = None
    if test in ("pearson", "partial"):
        if not req.variable:
            raise InputError(f"The {test} test needs a variable: give --variable COLUMN (e.g. age, odi).")
        x, note = cohort.numeric(rows, req.variable)
        notes += [note] if note else []
        keep &= np.isfinite(x)
        if test == "partial":
            if not req.covariates:
                raise InputError("The partial test needs covariates: give --covariates age,sex,bmi (columns of the CSV).")
            if req.variable in req.covariates:
                raise InputError(f"'{req.variable}' is both the variable and a covariate; remove it from the covariates.")
            cols = []
            for c in req.covariates:
                vals, note = cohort.numeric(rows, c)
                notes += [note] if note else []
                cols.append(vals)
                keep &= np.isfinite(vals)
            cov = np.column_stack(cols)
    elif test in ("welch", "student"):
        if not req.group:
            raise InputError(f"The {test} t-test needs a two-valued group column: give --group COLUMN.")
        labels = cohort.labels(rows, req.group)
        values = sorted({v for v in labels if v is not None})
        if len(values) != 2:
            raise InputError(
                f"Group column '{req.group}' must hold exactly two values for a t-test; it holds "
                f"{len(values)} ({', '.join(values[:6])}). Choose a two-valued column or recode it."
            )
        one = req.group_one if req.group_one is not None else values[1]
        if one not in values:
            raise InputError(f"Group value '{one}' does not occur in column '{req.group}' (values: {', '.join(values)}).")
        keep &= np.array([v is not None for v in labels])
        group = np.array([v == one for v in labels])
        zero = [v for v in values if v != one][0]
        notes.append(f"group 1 = {req.group} '{one}', group 0 = '{zero}'; effect = mean(group 1) - mean(group 0)")
    dropped = int((~keep).sum())
    if dropped:
        notes.append(f"{dropped} row(s) left out for a missing value in the variables used")
    idx = np.flatnonzero(keep)
    def pick(a):
        return None if a is None else a[idx]

    return [rows[i] for i in idx], pick(x), pick(cov), pick(group), notes


def _paired_rows(rows: list[CohortRow], level: str):
    """(baseline rows, follow-up rows) matched by subject, for a cohort with exactly two timepoints."""
    tps = sorted({r.timepoint for r in rows}, key=_timepoint_key)
    if "" in tps or len(tps) != 2:
        raise InputError(
            f"The paired test needs a timepoint column with exactly two values per level (level {level} has "
            f"{', '.join(repr(t) for t in tps) or 'none'}). Add a 'timepoint' column (e.g. 0 and 1)."
        )
    first = {r.subject: r for r in rows if r.timepoint == tps[0]}
    second = {r.subject: r for r in rows if r.timepoint == tps[1]}
    both = [s for s in first if s in second]
    return [first[s] for s in both], [second[s] for s in both], tps, len(first) + len(second) - 2 * len(both)


def _timepoint_key(t: str):
    try:
        return (0, float(t), t)
    except ValueError:
        return (1, 0.0, t)


def run_cohort_stats(
    cohort: Cohort,
    out_dir: str | Path,
    request: CohortStatsRequest = CohortStatsRequest(),
    *,
    progress: ProgressCallback | Progress | None = None,
) -> list[AnalysisOutput]:
    """Run the requested voxel-wise test for every (level, map) of the cohort; write maps, figures and the
    summary table into ``out_dir``. Returns one :class:`AnalysisOutput` per analysis."""
    req = request
    test = req.settings.test
    out = Path(out_dir)
    prog = Progress.wrap(progress)
    levels = req.levels or cohort.levels
    unknown = [lv for lv in levels if lv not in cohort.levels]
    if unknown:
        raise InputError(f"Level(s) {', '.join(unknown)} not in the cohort (levels: {', '.join(cohort.levels)}).")
    maps = req.maps or cohort.map_columns
    bad = [m for m in maps if m not in cohort.map_columns]
    if bad:
        raise InputError(f"Map column(s) {', '.join(bad)} not in the cohort (map columns: {', '.join(cohort.map_columns)}).")
    if test == "map-corr":
        if len(maps) != 2:
            raise InputError(
                f"map-corr correlates two maps; the cohort/selection has {len(maps)} ({', '.join(maps)}). "
                "Give --maps map_t1rho,map_t2."
            )
        jobs = [(lv, tuple(maps)) for lv in levels]
    else:
        jobs = [(lv, (m,)) for lv in levels for m in maps]
    results: list[AnalysisOutput] = []
    for j, (level, cols) in enumerate(jobs):
        sub = prog.sub(j / len(jobs), (j + 1) / len(jobs))
        name = "_vs_".join(c.removeprefix("map_") for c in cols)
        sub.report(0.0, f"{level} {name}")
        results.append(_run_one(cohort, out, req, level, cols, name, sub))
    _write_summary(out, [r.summary for r in results])
    return results


def _run_one(cohort, out: Path, req: CohortStatsRequest, level: str, cols, name: str, prog: Progress) -> AnalysisOutput:
    test = req.settings.test
    rows_all = [r for r in cohort.subset(level) if all(r.maps.get(c) is not None for c in cols)]
    notes: list[str] = []
    kwargs = {}
    if test == "paired":
        base, follow, tps, unpaired = _paired_rows(rows_all, level)
        if unpaired:
            notes.append(f"{unpaired} row(s) without a partner timepoint left out")
        notes.append(f"effect = timepoint '{tps[1]}' - timepoint '{tps[0]}'")
        rows = base
        y, ref = _load_stack(base, cols[0], *_ranges(req, cols[0]))
        y2, _ = _load_stack(follow, cols[0], *_ranges(req, cols[0]))
        kwargs["y2"] = y2
    else:
        if cohort.has_timepoints and len({r.timepoint for r in rows_all}) > 1:
            raise InputError(
                f"Level {level} has several timepoints; a {test} test needs one row per subject. Use the paired "
                "test, or a cohort CSV with one timepoint."
            )
        rows, x, cov, group, more = _subject_inputs(cohort, rows_all, req)
        notes += more
        if not rows:
            raise InputError(f"No subject of level {level} has all the variables needed for the {test} test.")
        y, ref = _load_stack(rows, cols[0], *_ranges(req, cols[0]))
        kwargs.update(x=x, covariates=cov, group=group)
        if test == "map-corr":
            kwargs["y2"], _ = _load_stack(rows, cols[1], *_ranges(req, cols[1]))
    if len({r.subject for r in rows}) != len(rows):
        raise InputError(f"Level {level}: a subject appears twice in the {test} analysis; each subject needs one row.")
    if len(rows) < req.settings.min_subjects:
        raise InputError(
            f"Level {level}, {name}: {len(rows)} subject(s) usable for the {test} test, fewer than the minimum "
            f"{req.settings.min_subjects}. Add subjects or lower --min-subjects."
        )
    result = voxel_test(y, req.settings, progress=prog.sub(0.0, 0.85), **kwargs)
    stem = f"{name}_{test}"
    folder = out / level
    files = _write_maps(result, ref, y, folder, stem)
    summary = _summary_row(result, ref, level, name, notes + list(result.notes))
    if req.figures:
        background = _atlas_array(req.atlas, ref) if req.atlas else None
        files["figure"] = _figure(result, ref, y, folder / f"{stem}_figure.png", f"{level} {name} {test}", background)
    prog.report(1.0, f"{level} {name}")
    summary["files"] = str(folder / f"{stem}_*")
    return AnalysisOutput(level, name, result, files, summary)


def _as_image(flat: np.ndarray, ref, dtype=np.float32):
    import SimpleITK as sitk

    arr = np.asarray(flat).reshape(sitk.GetArrayFromImage(ref).shape).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    return img


def _mean_map(y: np.ndarray) -> np.ndarray:
    """Mean over subjects of the included values (NaN where no subject has a value)."""
    ok = np.isfinite(y)
    count = ok.sum(0)
    total = np.where(ok, y, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _write_maps(result: VoxelStatsResult, ref, y: np.ndarray, folder: Path, stem: str) -> dict[str, Path]:
    from .image_io import write_image

    files = {}
    maps = {"t": result.t, "p": result.p, "q": result.q}
    if result.r is not None:
        maps["r"] = result.r
    if result.effect is not None:
        maps["effect"] = result.effect
    maps["mean"] = _mean_map(y)
    for key, arr in maps.items():
        files[key] = write_image(_as_image(arr, ref), folder / f"{stem}_{key}.nrrd")
    files["n"] = write_image(_as_image(result.n, ref, np.int16), folder / f"{stem}_n.nrrd")
    files["mask"] = write_image(_as_image(result.mask, ref, np.uint8), folder / f"{stem}_mask.nrrd")
    files["significant"] = write_image(_as_image(result.significant, ref, np.uint8), folder / f"{stem}_significant.nrrd")
    return files


def _summary_row(result: VoxelStatsResult, ref, level: str, name: str, notes: list[str]) -> dict:
    import SimpleITK as sitk
    from scipy import ndimage

    row = {"level": level, "map": name, **result.to_row()}
    shape = sitk.GetArrayFromImage(ref).shape
    if "peak_voxel" in row:
        kji = np.unravel_index(row.pop("peak_voxel"), shape)
        ijk = tuple(int(v) for v in kji[::-1])
        ijk3 = ijk + (0,) * (ref.GetDimension() - len(ijk))
        lps = ref.TransformIndexToPhysicalPoint(ijk3[: ref.GetDimension()])
        row["peak_index_ijk"] = " ".join(map(str, ijk))
        row["peak_lps_mm"] = " ".join(f"{c:.2f}" for c in lps)
    sig = result.significant.reshape(shape)
    labels, n_clusters = ndimage.label(sig, structure=np.ones((3,) * sig.ndim))
    sizes = np.bincount(labels.ravel())[1:] if n_clusters else np.array([], dtype=int)
    row["n_clusters"] = int(n_clusters)
    row["largest_cluster_voxels"] = int(sizes.max()) if sizes.size else 0
    row["notes"] = "; ".join(n for n in notes if n)
    return row


def _write_summary(out: Path, rows: list[dict]) -> None:
    from .image_io import write_csv, write_text

    write_csv(rows, out / "summary.csv")
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    write_text(json.dumps(clean, indent=2), out / "summary.json")


def _atlas_array(path: str, ref) -> np.ndarray:
    """The atlas image's voxels, refused unless it lies on the maps' grid."""
    import SimpleITK as sitk

    from .cohort import Grid
    from .image_io import read_image

    atlas = read_image(path)
    if not Grid.of(atlas).matches(Grid.of(ref)):
        raise InputError(
            f"The atlas {path} is not on the grid of the maps ({Grid.of(atlas).describe()} vs {Grid.of(ref).describe()}). "
            "Give the atlas image the maps were registered to."
        )
    return sitk.GetArrayFromImage(atlas).astype(np.float64)


def _figure(result: VoxelStatsResult, ref, y: np.ndarray, path: Path, title: str,
            background: np.ndarray | None = None) -> Path:
    """Three orthogonal slices through the peak: the atlas (or the mean map) in grey, the statistic where
    significant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from .image_io import atomic_path

    shape = sitk.GetArrayFromImage(ref).shape
    mean = _mean_map(y).reshape(shape) if background is None else background.reshape(shape)
    stat = (result.r if result.r is not None else result.t).reshape(shape)
    sig = result.significant.reshape(shape)
    tested = np.where(result.mask, np.abs(result.t), -np.inf)
    peak = np.unravel_index(int(np.argmax(tested)), shape) if result.mask.any() else tuple(s // 2 for s in shape)
    if len(shape) == 2:
        shape, mean, stat, sig, peak = (1, *shape), mean[None], stat[None], sig[None], (0, *peak)
    sp = ref.GetSpacing()
    sp = tuple(sp) + (1.0,) * (3 - len(sp))
    views = [
        ("axis k (slice)", lambda a: a[peak[0]], (sp[0], sp[1])),
        ("axis j", lambda a: a[:, peak[1], :], (sp[0], sp[2])),
        ("axis i", lambda a: a[:, :, peak[2]], (sp[1], sp[2])),
    ]
    label = "r" if result.r is not None else "t"
    lim = float(np.nanmax(np.abs(stat[np.isfinite(stat)]))) if np.isfinite(stat).any() else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    im = None
    for ax, (name, cut, (sx, sy)) in zip(axes, views, strict=True):
        m2 = cut(mean)
        ax.imshow(np.nan_to_num(m2), cmap="gray", origin="upper", aspect=sy / sx, interpolation="nearest")
        overlay = np.where(cut(sig), cut(stat), np.nan)
        im = ax.imshow(overlay, cmap="coolwarm", vmin=-lim, vmax=lim, origin="upper", aspect=sy / sx, interpolation="nearest")
        ax.set_title(f"{name} through peak")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label=f"{label} (shown where q < {result.settings.alpha:g})")
    fig.suptitle(f"{title}: {int(result.significant.sum())} of {int(result.mask.sum())} tested voxels significant "
                 f"({result.settings.correction})")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ synthetic cohort
@dataclass(frozen=True)
class SyntheticCohort:
    csv_path: Path
    effect_mask: np.ndarray  # (k, j, i) bool: voxels with a planted effect
    disc_mask: np.ndarray  # (k, j, i) bool: voxels inside the atlas disc


def make_synthetic_cohort(
    out_dir: str | Path,
    *,
    n_subjects: int = 24,
    size_ijk: tuple[int, int, int] = (24, 16, 6),
    effect_ms_per_year: float = -1.0,
    group_effect_ms: float = -15.0,
    noise_ms: float = 6.0,
    seed: int = 0,
    level: str = "L4-L5",
    timepoints: int = 2,
) -> SyntheticCohort:
    """Write a synthetic cohort of known truth: atlas-space T2 and T1rho maps (NRRD) and its CSV.

    The atlas disc is an ellipsoid; outside it maps are 0 (excluded by the inclusion range). In an inner
    "nucleus" ellipsoid, T2 falls by ``effect_ms_per_year`` per year of age and by ``group_effect_ms`` in
    group "case"; elsewhere in the disc T2 depends on neither. Sex and BMI are random covariates without
    effect. T1rho = 1.4 T2 + noise (voxel-wise correlated across subjects). ``timepoints`` 2: a follow-up per
    subject whose T2 is 12 ms lower in the nucleus (``cohort.csv``; ``cohort_baseline.csv`` has timepoint 0). For tests and the demo; never evidence about real discs.
    """
    import SimpleITK as sitk

    from .image_io import write_image

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    ni, nj, nk = size_ijk
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    c = ((ni - 1) / 2, (nj - 1) / 2, (nk - 1) / 2)
    rad = (ni / 2 - 0.5, nj / 2 - 0.5, nk / 2 + 0.5)
    d2 = ((ii - c[0]) / rad[0]) ** 2 + ((jj - c[1]) / rad[1]) ** 2 + ((kk - c[2]) / rad[2]) ** 2
    disc = d2 <= 1.0
    effect = d2 <= 0.3
    ages = rng.uniform(20, 60, n_subjects)
    sexes = rng.choice(["F", "M"], n_subjects)
    bmis = rng.normal(25, 3, n_subjects)
    groups = np.array(["case" if i % 2 else "control" for i in range(n_subjects)])
    rows = []
    for s in range(n_subjects):
        for tp in range(timepoints):
            base = 100.0 + rng.normal(0, noise_ms, disc.shape)
            shift = effect_ms_per_year * (ages[s] - 40.0) + (group_effect_ms if groups[s] == "case" else 0.0)
            shift += -12.0 if tp == 1 else 0.0
            t2 = np.where(disc, base + np.where(effect, shift, 0.0), 0.0)
            t1rho = np.where(disc, 1.4 * t2 + rng.normal(0, noise_ms, disc.shape), 0.0)
            paths = {}
            for name, arr in (("t2", t2), ("t1rho", t1rho)):
                img = sitk.GetImageFromArray(arr.astype(np.float32))
                img.SetSpacing((0.5, 0.5, 1.0))
                img.SetOrigin((-6.0, -4.0, -3.0))
                rel = Path(f"S{s:02d}") / f"{level}_tp{tp}_{name}.nrrd"
                write_image(img, out / rel)
                paths[f"map_{name}"] = rel.as_posix()
            rows.append({
                "subject": f"S{s:02d}", "level": level, "timepoint": tp, **paths,
                "age": round(float(ages[s]), 1), "sex": sexes[s], "bmi": round(float(bmis[s]), 1), "group": groups[s],
            })
    from .cohort import write_cohort_csv

    csv_path = write_cohort_csv(rows, out / "cohort.csv")
    base_rows = [{k: v for k, v in r.items() if k != "timepoint"} for r in rows if r["timepoint"] == 0]
    write_cohort_csv(base_rows, out / "cohort_baseline.csv")
    return SyntheticCohort(csv_path, effect, disc)
