"""``discanalysis run INPUT --out DIR``: one patient from scan to report."""

from __future__ import annotations

import argparse


def _times(text: str | None):
    if not text:
        return None
    from ..errors import InputError

    try:
        return tuple(float(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise InputError(f"Times must be numbers in ms separated by commas or spaces, not '{text}'.") from None


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="whole pipeline for one patient: segment, markers, grade, fits, report")
    p.add_argument("image", metavar="INPUT", help="sagittal T2w image: NRRD/NIfTI/MHA/PNG file or DICOM folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--case-id", default="", help="name used in the report (default: the input file name)")
    p.add_argument("--labels", metavar="LABELMAP", help="use this labelmap (e.g. edited) instead of segmenting")
    p.add_argument("--age", type=float, help="age in years (for population percentiles)")
    p.add_argument("--sex", choices=("F", "M"), help="sex (for population percentiles)")
    p.add_argument("--pixel-spacing-mm", type=float, help="pixel spacing of a PNG/BMP input (not stored in such files)")
    p.add_argument("--t2-series", nargs="+", default=(), metavar="PATH", help="multi-echo T2 series (folder/files)")
    p.add_argument("--t2-times-ms", help="echo times if not in the headers, e.g. '10,20,30'")
    p.add_argument("--t1rho-series", nargs="+", default=(), metavar="PATH", help="spin-lock T1rho series")
    p.add_argument("--t1rho-times-ms", help="spin-lock times if not in the headers, e.g. '1,10,30,60'")
    p.add_argument("--register", action="store_true", help="also register each disc to the atlas")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--no-tta", action="store_true", help="no test-time augmentation in grading (faster)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import PatientInputs, PipelineSettings, run_patient
    from .main import progress_callback

    inputs = PatientInputs(
        image=args.image, case_id=args.case_id, labels=args.labels, age_years=args.age, sex=args.sex,
        t2_series=tuple(args.t2_series), t1rho_series=tuple(args.t1rho_series),
        t2_times_ms=_times(args.t2_times_ms), t1rho_times_ms=_times(args.t1rho_times_ms),
        pixel_spacing_mm=args.pixel_spacing_mm,
    )
    settings = PipelineSettings(register=args.register, report=not args.no_report, tta=not args.no_tta)
    with progress_callback(args, f"run {inputs.name}") as cb:
        result = run_patient(inputs, args.out, settings, progress=cb)
    print(f"{result.case_id}: {sum(1 for r in result.rows if r.get('grade') is not None)} of {len(result.rows)} discs graded")
    for r in result.rows:
        g = "-" if r.get("grade") is None else f"grade {r['grade']} ({r['grade_confidence']:.2f})"
        dh = "-" if r.get("dh_mm") is None else f"DH {r['dh_mm']:.1f} mm"
        print(f"  {r['level']:6s} {g:18s} {dh:12s} {r.get('qc') or ''}")
    for flag in result.flags:
        print(f"  note: {flag}")
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
    print(f"  time: {steps}")
    if "report" in result.files:
        print(f"Report: {result.files['report']}")
    print(f"Outputs are in {result.out_dir.resolve()}")
    return 0
