"""``discanalysis stats COHORT.csv --out DIR``: voxel-wise statistics on atlas-space maps of a cohort."""

from __future__ import annotations

import argparse

from ..errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="voxel-wise statistics of a cohort's atlas-space maps (correlation, t-tests, paired, map vs map)",
        description="Voxel-wise statistics on the atlas-space maps listed in a cohort CSV (columns: subject, level, "
        "optional timepoint, map_<name> paths, covariates). Writes r/t/p/q/n/mask NRRD maps on the atlas grid, "
        "summary.csv/json and a PNG figure per level and map into --out.",
    )
    p.add_argument("cohort", metavar="COHORT.csv", help="cohort description CSV")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--test", default="pearson", choices=("pearson", "partial", "welch", "student", "paired", "map-corr"),
                   help="pearson/partial: correlation with --variable (partial: adjusted for --covariates); "
                   "welch/student: two groups of --group; paired: two timepoints; map-corr: two maps (default pearson)")
    p.add_argument("--variable", help="column correlated with the maps (pearson, partial)")
    p.add_argument("--covariates", default="", help="comma-separated adjustment columns (partial), e.g. age,sex,bmi")
    p.add_argument("--group", help="two-valued column defining the groups (welch, student)")
    p.add_argument("--group-one", help="value of --group that is group 1 (effect = group 1 - group 0); default: "
                   "the second value in sorted order")
    p.add_argument("--correction", default="fdr", choices=("fdr", "bonferroni", "maxt", "none"),
                   help="multiple-comparison correction: Benjamini-Hochberg FDR (default), Bonferroni, permutation "
                   "max-statistic FWE (maxt), or none")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the corrected p (default 0.05)")
    p.add_argument("--permutations", type=int, default=1000, help="permutations for maxt (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the permutations (default 0)")
    p.add_argument("--min-subjects", type=int, default=5, help="voxels with fewer subjects are not tested (default 5)")
    p.add_argument("--maps", default="", help="comma-separated map columns to analyse (default all; map-corr: two)")
    p.add_argument("--levels", default="", help="comma-separated levels to analyse (default all)")
    p.add_argument("--range", action="append", default=[], metavar="MAP=LOW:HIGH",
                   help="inclusion range (exclusive) of a map column, e.g. map_t2=0:150 (repeatable; defaults: "
                   "map_t2 0:150, map_t1rho 0:250; empty side = no limit)")
    p.add_argument("--atlas", metavar="IMAGE", help="atlas image on the maps' grid, shown under the statistic in the "
                   "figures (default: the mean map of the included subjects)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(handler=run)


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_range(text: str) -> tuple[str, tuple[float | None, float | None]]:
    try:
        name, bounds = text.split("=", 1)
        lo, hi = bounds.split(":", 1)
        return name.strip(), (float(lo) if lo.strip() else None, float(hi) if hi.strip() else None)
    except ValueError:
        raise InputError(f"--range '{text}' is not MAP=LOW:HIGH (e.g. map_t2=0:150).") from None


def run(args: argparse.Namespace) -> int:
    from ..cohort import load_cohort
    from ..cohortstats import CohortStatsRequest, run_cohort_stats
    from ..voxelstats import StatsSettings
    from .main import progress_callback

    settings = StatsSettings(
        test=args.test, correction=args.correction, alpha=args.alpha, permutations=args.permutations,
        seed=args.seed, min_subjects=args.min_subjects,
    )
    cohort = load_cohort(args.cohort, min_subjects=min(3, args.min_subjects))
    request = CohortStatsRequest(
        settings=settings, variable=args.variable, covariates=_split(args.covariates), group=args.group,
        group_one=args.group_one, maps=_split(args.maps), levels=_split(args.levels),
        value_ranges=dict(parse_range(r) for r in args.range), figures=not args.no_figures,
        atlas=args.atlas,
    )
    with progress_callback(args, "stats") as cb:
        outputs = run_cohort_stats(cohort, args.out, request, progress=cb)
    for o in outputs:
        s = o.summary
        peak = f", peak t {s['peak_t']:.2f} at ijk {s['peak_index_ijk']}" if "peak_t" in s else ""
        print(f"{o.level} {o.map_name} {args.test}: {s['n_subjects']} subjects, {s['n_voxels_tested']} voxels tested "
              f"({s['n_voxels_too_few_subjects']} masked), {s['n_significant']} significant at {args.correction} "
              f"q < {args.alpha:g}{peak}")
        if s.get("notes"):
            print(f"  notes: {s['notes']}")
    print(f"maps, figures and summary.csv written to {args.out}")
    return 0
