"""``discanalysis fit SERIES... --out DIR``: voxel-wise T2 / T1rho maps and per-disc summaries."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit T2 or T1rho maps from a multi-echo / spin-lock series (per-disc CSV with --mask)",
        description="Fit S(t) = S0 exp(-t/T) [+ C] in every voxel. SERIES is one multi-echo DICOM folder, one "
        "file or folder per time point, or one 4D NRRD/NIfTI file (then give --times-ms). Times are read from "
        "the headers where stored; --times-ms must agree with them.",
    )
    p.add_argument("series", nargs="+", metavar="SERIES", help="multi-echo DICOM folder, files/folders per time, or a 4D image")
    p.add_argument("--times-ms", nargs="+", type=float, metavar="T", help="echo / spin-lock times in ms, one per volume")
    p.add_argument("--kind", choices=("t2", "t1rho"), default="t2", help="what the times are (default t2)")
    p.add_argument("--mask", metavar="LABELMAP", help="labelmap: fit inside its non-zero voxels and summarise per disc")
    p.add_argument("--label-convention", default="spineps", choices=("spineps", "from_l5s1", "from_l1l2"),
                   help="label values of --mask (default spineps: discs 120..124)")
    p.add_argument("--offset", action="store_true", help="fit a constant offset too (series reaching the noise floor)")
    p.add_argument("--max-t-ms", type=float, help="summary threshold (default 150 for T2, 250 for T1rho)")
    p.add_argument("--min-r2", type=float, default=0.5, help="summary: minimum R2 of a voxel's fit (default 0.5)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .. import image_io
    from ..relaxometry import FitSettings, SummarySettings, load_series, run_relaxometry, write_outputs
    from .main import progress_callback

    series = load_series(args.series, args.times_ms, kind=args.kind)
    labels = image_io.read_image(args.mask) if args.mask else None
    with progress_callback(args, f"fitting {args.kind}") as cb:
        result = run_relaxometry(
            series,
            labels=labels,
            kind=args.kind,
            fit_settings=FitSettings(offset=args.offset),
            summary_settings=SummarySettings(max_t_ms=args.max_t_ms, min_r2=args.min_r2),
            label_convention=args.label_convention,
            progress=cb,
        )
    written = write_outputs(result, args.out)
    fit = result.fit
    counts = fit.status_counts()
    print(f"{fit.kind}: {len(fit.times_ms)} time points ({', '.join(f'{t:g}' for t in fit.times_ms)} ms, "
          f"from {result.times_source}); size {'x'.join(str(s) for s in reversed(fit.shape))}")
    print("voxels: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v))
    for row in result.disc_rows():
        if row.n_included:
            print(f"  {row.level}: median {row.median_ms:.1f} ms (IQR {row.iqr_ms:.1f}), mean {row.mean_ms:.1f} "
                  f"+/- {row.sd_ms:.1f} ms, {row.n_included}/{row.n_voxels} voxels")
        else:
            print(f"  {row.level}: {row.reason} ({row.n_voxels} voxels)")
    for name, path in written.items():
        print(f"wrote {name}: {path}")
    return 0
