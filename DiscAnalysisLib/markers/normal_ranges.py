"""Population normal ranges (BianqueNet) and the signal-based grade.

The tables in ``Resources/NormalRanges`` are built by ``scripts/build_normal_ranges.py`` from the
BianqueNet population data (Zheng et al., Nat Commun 2022, doi:10.1038/s41467-022-28387-5; 1,051 adults, four Chinese hospitals)
and are checked against the SHA-256 below before they are read.

Conventions
-----------
* Groups: level x sex (F, M, or all) x age band (20-30, 30-40, 40-50, 50-60, 60-70, 70-90; lower bound
  inclusive, 90 included in 70-90). ΔSI has no sex split in the source (no sex effect in the paper). When
  no sex is given, "all" is used; when no age is given or it lies outside 20-90 y, all ages are used. A
  cell with fewer than :data:`MIN_GROUP_N` discs falls back to all ages of the same level and sex.
* Percentile rank: linear interpolation between the shipped percentiles (2.5 ... 97.5), clipped to
  [2.5, 97.5]; flag ``low``/``high`` outside the central 95 % reference interval (2.5th-97.5th
  percentile, the usual clinical reference-interval convention), ``normal`` inside.
* BianqueNet divides the disc area of the central 80 % by the *full* AP width, so its DH, DHI and HDR are
  0.8 x ours (``function/calcu_DHI_512.py``: ``HD = sum_A / w_D``); we compare 0.8 x dhi and 0.8 x hdr.
  Its DH is in pixels of unpublished size and is never compared with a length in mm.
* Signal grade: the modified Pfirrmann grade (1, 2, 3, 4, 5 = grades 5-8) whose ΔSI distribution is
  nearest in units of its SD, ``argmin_g |ΔSI - mean_g| / sd_g``; ΔSI above the grade-1 mean gives 1 and
  below the grade-5 mean gives 5. This is BianqueNet's rule (``quantitative_analysis.signal_fenji``),
  which compares the two nearest grades the same way, with the per-grade mean and SD from ``SI.xlsx``.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..resources import verified_path

NORMAL_RANGES_FILE = "NormalRanges/normal_ranges.csv"
NORMAL_RANGES_SHA256 = "dff9cd06d69ed6b02955ebfac9b2862d14b653d0f1926c8cc1704b24717926a2"
GRADES_FILE = "NormalRanges/delta_si_by_grade.csv"
GRADES_SHA256 = "1efb3980cde8325a86b15176f02adef4c1d583b8c5a5b52ebc07d6262ce75206"

PERCENTILES: tuple[float, ...] = (2.5, 5, 10, 25, 50, 75, 90, 95, 97.5)
AGE_BANDS: tuple[tuple[int, int], ...] = ((20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 90))
#: Cells smaller than this fall back to all ages of the same level and sex.
MIN_GROUP_N = 20
#: BianqueNet's DH is (area of the central 80 %) / (full width) = 0.8 x our mean height.
BIANQUENET_HEIGHT_FACTOR = 0.8


@dataclass(frozen=True)
class RangeRow:
    marker: str
    level: str
    sex: str
    age_band: str
    unit: str
    n: int
    mean: float
    sd: float
    quantiles: tuple[float, ...]  # at PERCENTILES

    @property
    def label(self) -> str:
        ages = "all ages" if self.age_band == "all" else f"{self.age_band} y"
        sex = "both sexes" if self.sex == "all" else self.sex
        return f"{self.level} {sex} {ages} (n={self.n})"


@dataclass(frozen=True)
class Comparison:
    """A value's place in its reference group."""

    percentile: float
    z: float
    flag: str  # "low" | "normal" | "high"
    group: RangeRow


def _read_csv(relative: str, sha: str) -> list[dict[str, str]]:
    path = verified_path(relative, sha)
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@functools.lru_cache(maxsize=1)
def _table() -> dict[tuple[str, str, str, str], RangeRow]:
    out = {}
    for r in _read_csv(NORMAL_RANGES_FILE, NORMAL_RANGES_SHA256):
        q = tuple(float(r[f"p{p:g}"]) for p in PERCENTILES)
        row = RangeRow(r["marker"], r["level"], r["sex"], r["age_band"], r["unit"], int(r["n"]),
                       float(r["mean"]), float(r["sd"]), q)
        out[(row.marker, row.level, row.sex, row.age_band)] = row
    return out


@functools.lru_cache(maxsize=1)
def grade_table() -> tuple[tuple[int, float, float], ...]:
    """(grade, mean ΔSI, SD) per modified Pfirrmann grade 1..5 (5 = grades 5-8)."""
    rows = _read_csv(GRADES_FILE, GRADES_SHA256)
    return tuple((int(r["grade"]), float(r["mean"]), float(r["sd"])) for r in rows)


def normalise_sex(sex: str | None) -> str | None:
    if sex is None or str(sex).strip() == "":
        return None
    s = str(sex).strip().upper()
    if s in ("F", "FEMALE", "W"):
        return "F"
    if s in ("M", "MALE"):
        return "M"
    raise InputError(f"Sex must be F or M; got {sex!r}.")


def age_band(age_years: float | None) -> str:
    """The BianqueNet age band of an age, or "all" when unknown or outside 20-90 y."""
    if age_years is None or not math.isfinite(age_years):
        return "all"
    for lo, hi in AGE_BANDS:
        if lo <= age_years < hi or (hi == 90 and age_years == 90):
            return f"{lo}-{hi}"
    return "all"


def reference_group(marker: str, level: str, sex: str | None, age_years: float | None) -> RangeRow | None:
    """The population cell for a marker ('dhi_bianquenet', 'hdr_bianquenet', 'delta_si', 'dh_bianquenet')."""
    table = _table()
    s = "all" if marker == "delta_si" else (normalise_sex(sex) or "all")
    band = age_band(age_years)
    row = table.get((marker, level, s, band))
    if row is None or row.n < MIN_GROUP_N:
        row = table.get((marker, level, s, "all"))
    return row


def percentile_rank(value: float, group: RangeRow) -> float:
    """Percentile rank of ``value`` in ``group`` (interpolated between the shipped knots, clipped 2.5..97.5)."""
    q = np.asarray(group.quantiles)
    return float(np.interp(value, q, PERCENTILES))


def compare(value: float, group: RangeRow) -> Comparison:
    q = group.quantiles
    flag = "low" if value < q[0] else ("high" if value > q[-1] else "normal")
    z = (value - group.mean) / group.sd if group.sd > 0 else float("nan")
    return Comparison(percentile_rank(value, group), float(z), flag, group)


def signal_grade(delta_si: float) -> int:
    """Signal-based modified Pfirrmann grade (1..5, 5 = grades 5-8) of a ΔSI; see the module docstring."""
    grades = grade_table()
    if delta_si > grades[0][1]:
        return grades[0][0]
    if delta_si < grades[-1][1]:
        return grades[-1][0]
    return min(grades, key=lambda g: (abs(delta_si - g[1]) / g[2], g[0]))[0]
