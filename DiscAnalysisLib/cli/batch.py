"""``discanalysis batch CASES_DIR|CASES.csv --out DIR``: many patients, resumable, failures logged."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="run the pipeline on many patients (resumable; one failure never stops the rest)")
    p.add_argument("cases", metavar="CASES_DIR|CASES.csv",
                   help="a folder (one case per image file or sub-folder) or a CSV with columns case_id,image"
                        "[,labels,age,sex,t2_series,t1rho_series,t2_times_ms,t1rho_times_ms,pixel_spacing_mm]")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one sub-folder per case)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--register", action="store_true", help="also register each disc to the atlas")
    p.add_argument("--no-report", action="store_true", help="skip the HTML reports")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline import PipelineSettings, discover_cases, run_batch
    from .main import progress_callback

    if args.workers < 1:
        raise InputError("--workers must be at least 1.")
    cases = discover_cases(args.cases)
    settings = PipelineSettings(register=args.register, report=not args.no_report)
    with progress_callback(args, "batch") as cb:
        result = run_batch(cases, args.out, settings, workers=args.workers, progress=cb)
    print(f"{len(result.done)} done, {len(result.skipped)} already done (skipped), {len(result.failed)} failed")
    for cid, reason in result.failed:
        print(f"  failed {cid}: {reason}")
    print(f"Summary: {result.summary_csv}")
    print(f"Failures: {result.failures_csv}")
    return 0 if not result.failed else 3
