"""``discanalysis markers IMAGE LABELMAP``: quantitative disc markers with population percentiles.

Writes one row per disc level (L1-L2 ... L5-S1) to a CSV file with a sidecar ``<name>.columns.csv``
(column, unit, definition), or to a JSON file (``--json`` or a ``.json`` output name) holding
``{"columns": {name: {"unit", "definition"}}, "rows": [...]}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "markers",
        help="disc height, DHI, HDR, ΔSI, regional signal markers and population percentiles per disc level",
        description="Quantitative markers of each lumbar disc from a sagittal T2w image and its level labelmap "
        "(discs 120-124, vertebrae 20-24/26, CSF 61). Columns and their units are documented in the sidecar "
        "<out>.columns.csv (or in the JSON).",
    )
    p.add_argument("image", metavar="IMAGE", help="T2-weighted image (NRRD/NIfTI/MHA/DICOM folder, or a PNG/BMP slice)")
    p.add_argument("labelmap", metavar="LABELMAP", help="labelmap on the same grid (DiscAnalysis/SPINEPS labels)")
    p.add_argument("--age", type=float, default=None, help="patient age in years (chooses the reference age band)")
    p.add_argument("--sex", choices=("F", "M", "f", "m"), default=None, help="patient sex (reference group)")
    p.add_argument("--pixel-spacing-mm", type=float, default=None, metavar="X",
                   help="pixel spacing of a PNG/BMP slice, which stores none (otherwise only ratios are given)")
    p.add_argument("--map", action="append", default=[], metavar="NAME=FILE",
                   help="relaxation-time map on the same grid, summarised per zone; NAME carries the unit, "
                        "e.g. t2_ms=t2map.nrrd (repeatable)")
    p.add_argument("--out", required=True, metavar="FILE", help="output table (.csv, or .json)")
    p.add_argument("--json", action="store_true", help="write JSON even if FILE does not end in .json")
    p.set_defaults(handler=run)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text of ``rows`` (empty cells for None; floats with full precision)."""
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return buf.getvalue()


def docs_to_csv(docs: dict[str, tuple[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["column", "unit", "definition"])
    for name, (unit, text) in docs.items():
        w.writerow([name, unit, text])
    return buf.getvalue()


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.stem + ".columns.csv")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..image_io import read_image, write_text
    from ..markers import MarkerSettings, compute_markers
    from .main import progress_callback

    image = read_image(args.image, pixel_spacing_mm=args.pixel_spacing_mm)
    labels = read_image(args.labelmap, pixel_spacing_mm=args.pixel_spacing_mm)
    maps = {}
    for item in args.map:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--map expects NAME=FILE (e.g. t2_ms=t2map.nrrd); got {item!r}.")
        maps[name] = read_image(path, pixel_spacing_mm=args.pixel_spacing_mm)
    settings = MarkerSettings(age_years=args.age, sex=args.sex)
    with progress_callback(args, "markers") as cb:
        report = compute_markers(image, labels, settings, maps=maps, progress=cb)
    rows = report.rows()
    docs = report.column_docs()
    out = Path(args.out)
    if args.json or out.suffix.lower() == ".json":
        payload = {
            "columns": {k: {"unit": u, "definition": d} for k, (u, d) in docs.items()},
            "rows": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows],
        }
        write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", out)
    else:
        write_text(rows_to_csv(rows), out)
        write_text(docs_to_csv(docs), sidecar_path(out))
    for r in rows:
        dh = "n/a" if r["dh_mm"] is None else f"{r['dh_mm']:.2f} mm"
        dhi = "n/a" if r["dhi"] is None else f"{r['dhi']:.3f}"
        dsi = "n/a" if r["delta_si"] is None else f"{r['delta_si']:.1f}"
        print(f"{r['level']}: {r['status']}; DH {dh}, DHI {dhi}, ΔSI {dsi}"
              + (f" (signal grade {r['signal_grade']})" if r["signal_grade"] is not None else ""))
    print(f"wrote {out}" + ("" if out.suffix.lower() == ".json" or args.json else f" and {sidecar_path(out)}"))
    return 0
