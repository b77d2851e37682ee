#!/usr/bin/env python
"""Build the shipped normal-range tables from the BianqueNet population data.

Source: ``bianquenet/baseline_range`` of the shared data (the ``input/baseline_range`` folder of
github.com/no-saint-no-angel/BianqueNet; Zheng et al., "Deep learning approach for evaluating lumbar
intervertebral disc degeneration", Nat Commun 2022, doi:10.1038/s41467-022-28387-5, preprint CC-BY-4.0). Per-disc values of
1,051 adults from four Chinese hospitals.

Inputs and what we verified about them (the script re-checks each point and stops if it fails):

* ``{DH,DHI,DWR}/{marker}_{level}_trend.xlsx``: one row per disc: value, age band ('20-30' ... '70-90'),
  gender ('female' / 'male'). The subfolders ``0`` and ``1`` hold the same rows split by sex: ``0`` =
  female, ``1`` = male (their gender column says so; males have the larger DH and DHI and females the
  larger HDR, as the paper's Table 5 regression reports). We read the top-level files and group by the
  gender column of each file. Per-sex cells are built from the subfolder files and the "all" cells
  from the top-level files: the two versions differ in a few values per file (at most 18 of 391), where
  a value appears replaced by a constant equal to the file's (top level) or the sex's (subfolder) mean,
  apparently the authors' outlier handling. We keep the data as published; the tails are slightly
  narrower than a raw sample's would be.
* ``SI/SI_{level}_trend.xlsx``: ΔSI per disc by age band (no sex column; the paper finds no sex effect).
* ``SI/SI.xlsx`` (sheet ``SI_trend``): ΔSI by modified Pfirrmann grade (1, 2, 3, 4, 5 = grades 5-8). The
  same 1,162 values appear under each of the 5 location labels (checked: identical lists), so they are
  used once, pooled over levels. Mean and SD per grade agree with the paper's Table 7 (means within
  0.7, SDs within 0.11; Table 7 counts more discs, 5,255).

DH is in pixels of the 512 x 512 exports (BianqueNet measures in pixels; the physical pixel size is not
published), so its ranges are shipped for reference but never compared with a length in mm.

Outputs (``Resources/NormalRanges/``):

* ``normal_ranges.csv``: marker, level, sex (F, M, all), age_band (20-30 ... 70-90, all), unit, n, mean,
  sd and the percentiles 2.5, 5, 10, 25, 50, 75, 90, 95, 97.5 (numpy's default linear interpolation).
* ``delta_si_by_grade.csv``: grade, n, mean, sd and the same percentiles.

Usage: ``python scripts/build_normal_ranges.py [--data DIR]`` (default ``$DISCANALYSIS_DATA/bianquenet/baseline_range``,
``$DISCANALYSIS_DATA`` defaulting to ``../shared/data``); it prints
the SHA-256 of each output, which must be copied into ``DiscAnalysisLib/markers/normal_ranges.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISCANALYSIS_DATA", ROOT.parent / "shared" / "data"))
LEVELS = {"L1L2": "L1-L2", "L2L3": "L2-L3", "L3L4": "L3-L4", "L4L5": "L4-L5", "L5S1": "L5-S1"}
BANDS = ("20-30", "30-40", "40-50", "50-60", "60-70", "70-90")
PERCENTILES = (2.5, 5, 10, 25, 50, 75, 90, 95, 97.5)
MARKERS = {"DH": ("dh_bianquenet", "px"), "DHI": ("dhi_bianquenet", "ratio"), "DWR": ("hdr_bianquenet", "ratio")}
SEX = {"female": "F", "male": "M"}


def _rows(path: Path) -> list[tuple]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return [tuple(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
    finally:
        wb.close()


def _trend(path: Path) -> list[tuple[float, str, str]]:
    """(value, age band, sex) rows of a DH/DHI/DWR trend file (two header rows)."""
    out = []
    for r in _rows(path)[2:]:
        if r[1] is None:
            continue
        band, gender = str(r[2]), str(r[3])
        if band not in BANDS or gender not in SEX:
            raise SystemExit(f"{path}: unexpected age band / gender {band!r} {gender!r}")
        out.append((float(r[1]), band, SEX[gender]))
    return out


def _summary(values) -> list[str]:
    v = np.asarray(values, dtype=float)
    q = np.percentile(v, PERCENTILES)
    return [str(v.size), f"{v.mean():.6g}", f"{v.std(ddof=1):.6g}", *(f"{x:.6g}" for x in q)]


def build(data: Path) -> tuple[str, str]:
    header = "marker,level,sex,age_band,unit,n,mean,sd," + ",".join(f"p{p:g}" for p in PERCENTILES)
    lines = [header]
    for folder, (marker, unit) in MARKERS.items():
        for code, level in LEVELS.items():
            rows = _trend(data / folder / f"{folder}_{code}_trend.xlsx")
            groups = defaultdict(list)
            for value, band, _sex in rows:
                groups[("all", band)].append(value)
                groups[("all", "all")].append(value)
            for sub, sex in (("0", "F"), ("1", "M")):
                part = _trend(data / folder / sub / f"{folder}_{code}_trend.xlsx")
                if {r[2] for r in part} != {sex} or len(part) != sum(r[2] == sex for r in rows):
                    raise SystemExit(f"{folder}/{sub}/{code}: expected only the {sex} rows of the top-level file")
                for value, band, _sex in part:
                    groups[(sex, band)].append(value)
                    groups[(sex, "all")].append(value)
            for s in ("F", "M", "all"):
                for b in (*BANDS, "all"):
                    if groups[(s, b)]:
                        lines.append(",".join([marker, level, s, b, unit, *_summary(groups[(s, b)])]))
    for code, level in LEVELS.items():
        groups = defaultdict(list)
        for r in _rows(data / "SI" / f"SI_{code}_trend.xlsx")[1:]:
            if r[1] is None:
                continue
            band = str(r[0])
            if band not in BANDS:
                raise SystemExit(f"SI_{code}: unexpected age band {band!r}")
            groups[band].append(float(r[1]))
            groups["all"].append(float(r[1]))
        for b in (*BANDS, "all"):
            if groups[b]:
                lines.append(",".join(["delta_si", level, "all", b, "a.u. (CSF = 255)", *_summary(groups[b])]))
    normal = "\n".join(lines) + "\n"

    by_loc = defaultdict(lambda: defaultdict(list))
    for loc, grade, value in _rows(data / "SI" / "SI.xlsx")[1:]:
        by_loc[str(loc)][int(grade)].append(float(value))
    locs = sorted(by_loc)
    first = by_loc[locs[0]]
    if any(by_loc[loc] != first for loc in locs[1:]):
        raise SystemExit("SI.xlsx: the per-location lists differ; the pooled-once assumption does not hold")
    grade_lines = ["grade,n,mean,sd," + ",".join(f"p{p:g}" for p in PERCENTILES)]
    for g in sorted(first):
        grade_lines.append(",".join([str(g), *_summary(first[g])]))
    return normal, "\n".join(grade_lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "bianquenet" / "baseline_range")
    ap.add_argument("--out", type=Path, default=ROOT / "Resources" / "NormalRanges")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder not found: {args.data}", file=sys.stderr)
        return 2
    normal, grades = build(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("normal_ranges.csv", normal), ("delta_si_by_grade.csv", grades)):
        path = args.out / name
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{len(text.splitlines()) - 1} rows, sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
