"""Cohort description: one CSV row per subject, disc level (and optional timepoint).

The cohort CSV is the hand-over between the per-patient pipeline (registration writes atlas-space maps)
and the cohort statistics. It is written by a batch script or by hand::

    subject,level,timepoint,map_t2,map_t1rho,age,sex,bmi,odi,group
    S01,L4-L5,0,S01/L4-L5_t2_atlas.nrrd,S01/L4-L5_t1rho_atlas.nrrd,34,F,22.1,12,control

Columns
-------
* ``subject`` and ``level`` (required): the subject identifier and the disc level name ("L4-L5").
* ``timepoint`` (optional): baseline / follow-up; (subject, level, timepoint) must be unique.
* ``map_<name>`` (at least one): path of an atlas-space map (NRRD, NIfTI, ...). Relative paths are resolved
  against the CSV's folder. An empty cell means "no map for this row" (the row is left out of analyses of
  that map). All maps of one level must lie on the same grid (size, spacing, origin, direction): they are
  registered to the same atlas.
* anything else: covariates, outcomes and group labels. Numeric columns are read as numbers (empty cell =
  missing); a column whose values are all non-numeric with exactly two distinct values (``F``/``M``) is
  coded 0/1 in sorted order when used as a number, and the coding is reported. Rows with a missing value in
  a variable an analysis uses are left out of that analysis (as in Iriondo et al., section 2.3: "missing
  data ... exclude patient maps from the analysis concerning those variables").
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

SUBJECT, LEVEL, TIMEPOINT = "subject", "level", "timepoint"
MAP_PREFIX = "map_"
REQUIRED_COLUMNS = (SUBJECT, LEVEL)
_MISSING = {"", "na", "nan", "n/a", "none", "null"}
_GEOMETRY_RTOL = 1e-4


def _is_missing(value: str) -> bool:
    return value.strip().lower() in _MISSING


def _to_float(value: str) -> float | None:
    try:
        v = float(value)
    except ValueError:
        return None
    return v


@dataclass(frozen=True)
class Grid:
    """Geometry of an atlas-space map: size (i, j, k), spacing (mm), origin (mm, LPS), direction."""

    size: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    origin_mm: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> Grid:
        return cls(
            tuple(int(s) for s in image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(o) for o in image.GetOrigin()),
            tuple(float(d) for d in image.GetDirection()),
        )

    def matches(self, other: Grid) -> bool:
        if self.size != other.size:
            return False
        scale = max(max(self.spacing_mm), 1e-6)
        return (
            np.allclose(self.spacing_mm, other.spacing_mm, rtol=_GEOMETRY_RTOL, atol=1e-6)
            and np.allclose(self.origin_mm, other.origin_mm, atol=_GEOMETRY_RTOL * scale * 10)
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )

    def describe(self) -> str:
        return (
            f"size {'x'.join(map(str, self.size))}, spacing {' x '.join(f'{s:g}' for s in self.spacing_mm)} mm, "
            f"origin ({', '.join(f'{o:g}' for o in self.origin_mm)}) mm"
        )


@dataclass(frozen=True)
class CohortRow:
    subject: str
    level: str
    timepoint: str
    maps: dict[str, Path | None]
    values: dict[str, str]
    line: int  # line number in the CSV (header = 1), for messages


@dataclass(frozen=True)
class Cohort:
    """A validated cohort description (see the module docstring for the CSV layout)."""

    path: Path
    rows: tuple[CohortRow, ...]
    map_columns: tuple[str, ...]
    value_columns: tuple[str, ...]
    grids: dict[str, Grid] = field(default_factory=dict)  # per level

    # ----------------------------------------------------------------------------------------- queries
    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.level for r in self.rows))

    @property
    def has_timepoints(self) -> bool:
        return any(r.timepoint for r in self.rows)

    def subset(self, level: str | None = None, map_column: str | None = None) -> list[CohortRow]:
        """Rows of ``level`` (all levels when None) that have a map in ``map_column`` (any when None)."""
        return [
            r
            for r in self.rows
            if (level is None or r.level == level) and (map_column is None or r.maps.get(map_column) is not None)
        ]

    def require_columns(self, columns: Iterable[str], purpose: str) -> None:
        missing = [c for c in columns if c not in self.value_columns]
        if missing:
            raise InputError(
                f"{self.path.name} has no column {', '.join(repr(c) for c in missing)} needed for {purpose}. "
                f"Its covariate/label columns are: {', '.join(self.value_columns) or '(none)'}. Add the column "
                "or choose one of those."
            )

    def numeric(self, rows: Sequence[CohortRow], column: str) -> tuple[np.ndarray, str]:
        """Values of ``column`` for ``rows`` as float (NaN = missing), and a note on any coding used.

        Raises InputError for a column mixing numbers and text, or holding more than two distinct texts.
        """
        self.require_columns([column], f"the variable '{column}'")
        all_values = [r.values[column] for r in self.rows]
        present = [v.strip() for v in all_values if not _is_missing(v)]
        numbers = [_to_float(v) for v in present]
        if all(n is not None for n in numbers):
            out = np.array([np.nan if _is_missing(r.values[column]) else float(r.values[column]) for r in rows])
            return out, ""
        texts = sorted({v for v, n in zip(present, numbers, strict=True) if n is None})
        if any(n is not None for n in numbers):
            bad = [(r.line, r.values[column]) for r in self.rows if not _is_missing(r.values[column]) and _to_float(r.values[column]) is None]
            raise InputError(
                f"Column '{column}' of {self.path.name} mixes numbers and text (e.g. line {bad[0][0]}: "
                f"'{bad[0][1]}'). Use numbers only, or leave the cell empty for a missing value."
            )
        if len(texts) != 2:
            raise InputError(
                f"Column '{column}' of {self.path.name} is not numeric (values: {', '.join(texts[:6])}"
                f"{', ...' if len(texts) > 6 else ''}). A covariate must be a number, or a two-valued label "
                "(e.g. F/M) that is coded 0/1; recode it as numbers."
            )
        coding = {texts[0]: 0.0, texts[1]: 1.0}
        out = np.array([np.nan if _is_missing(r.values[column]) else coding[r.values[column].strip()] for r in rows])
        return out, f"{column}: {texts[0]}=0, {texts[1]}=1"

    def labels(self, rows: Sequence[CohortRow], column: str) -> list[str | None]:
        """Values of a label/group column as text (None = missing)."""
        self.require_columns([column], f"the group column '{column}'")
        return [None if _is_missing(r.values[column]) else r.values[column].strip() for r in rows]


# --------------------------------------------------------------------------------------------- loading
def load_cohort(
    path: str | os.PathLike,
    *,
    check_files: bool = True,
    check_grids: bool = True,
    min_subjects: int = 3,
) -> Cohort:
    """Read and validate a cohort CSV.

    Checks: required columns, at least one ``map_`` column, unique (subject, level, timepoint), that every
    named map exists (``check_files``) and that all maps of a level share one grid (``check_grids``: reads
    each file's header only), and at least ``min_subjects`` distinct subjects. Raises InputError naming the
    problem, the line and the fix.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Cohort file not found: {p}. Give the path of the cohort CSV.")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            raw_rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Cannot read {p} as a CSV file ({exc}). Save the cohort table as UTF-8 CSV.") from None
    if not header:
        raise InputError(f"{p} is empty; expected a header line with at least: subject, level, map_<name>.")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise InputError(f"{p.name} has duplicate column names: {', '.join(dup)}. Rename them.")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"{p.name} lacks the required column(s) {', '.join(missing)} (header: {', '.join(header)}). "
            "A cohort CSV needs: subject, level, one or more map_<name> columns (e.g. map_t2), then covariates."
        )
    map_columns = tuple(h for h in header if h.startswith(MAP_PREFIX))
    if not map_columns:
        raise InputError(
            f"{p.name} has no map column. Name the columns holding atlas-space map paths map_<name> (e.g. map_t2, "
            "map_t1rho)."
        )
    value_columns = tuple(h for h in header if h not in (SUBJECT, LEVEL, TIMEPOINT) and h not in map_columns)
    if not raw_rows:
        raise InputError(f"{p.name} has a header but no rows.")

    base = p.resolve().parent
    rows: list[CohortRow] = []
    seen: dict[tuple[str, str, str], int] = {}
    problems: list[str] = []
    for i, raw in enumerate(raw_rows, start=2):
        raw = {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in raw.items()}
        subject = raw.get(SUBJECT, "").strip()
        level = raw.get(LEVEL, "").strip()
        timepoint = raw.get(TIMEPOINT, "").strip()
        if not subject or not level:
            problems.append(f"line {i}: empty subject or level")
            continue
        key = (subject, level, timepoint)
        if key in seen:
            raise InputError(
                f"{p.name}: line {i} repeats subject '{subject}', level '{level}'"
                + (f", timepoint '{timepoint}'" if timepoint else "")
                + f" of line {seen[key]}. Each subject/level/timepoint must appear once; add a timepoint column "
                "for repeated scans."
            )
        seen[key] = i
        maps: dict[str, Path | None] = {}
        for m in map_columns:
            v = raw.get(m, "").strip()
            if _is_missing(v):
                maps[m] = None
                continue
            mp = Path(v).expanduser()
            if not mp.is_absolute():
                mp = base / mp
            maps[m] = mp
        rows.append(CohortRow(subject, level, timepoint, maps, {c: raw.get(c, "") or "" for c in value_columns}, i))
    if problems:
        raise InputError(f"{p.name}: {'; '.join(problems[:5])}. Every row needs a subject and a level.")

    if check_files:
        absent = [(r.line, m, path) for r in rows for m, path in r.maps.items() if path is not None and not path.is_file()]
        if absent:
            listing = "; ".join(f"line {ln} {m}: {path}" for ln, m, path in absent[:5])
            raise InputError(
                f"{len(absent)} map file(s) named in {p.name} do not exist ({listing}"
                f"{'; ...' if len(absent) > 5 else ''}). Relative paths are resolved against {base}."
            )
    n_subjects = len({r.subject for r in rows})
    if n_subjects < min_subjects:
        raise InputError(
            f"{p.name} describes {n_subjects} subject(s); cohort statistics need at least {min_subjects}. Add rows."
        )
    cohort = Cohort(p, tuple(rows), map_columns, value_columns)
    if check_grids and check_files:
        cohort = Cohort(p, tuple(rows), map_columns, value_columns, _check_grids(cohort))
    return cohort


def _read_grid(path: Path) -> Grid:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"Cannot read {path} as an image. Atlas-space maps must be NRRD, NIfTI or MHA files.") from None
    return Grid(
        tuple(int(s) for s in reader.GetSize()),
        tuple(float(s) for s in reader.GetSpacing()),
        tuple(float(o) for o in reader.GetOrigin()),
        tuple(float(d) for d in reader.GetDirection()),
    )


def _check_grids(cohort: Cohort) -> dict[str, Grid]:
    grids: dict[str, Grid] = {}
    first: dict[str, tuple[int, str, Path]] = {}
    for r in cohort.rows:
        for m, path in r.maps.items():
            if path is None:
                continue
            g = _read_grid(path)
            if r.level not in grids:
                grids[r.level] = g
                first[r.level] = (r.line, m, path)
            elif not grids[r.level].matches(g):
                ln, m0, p0 = first[r.level]
                raise InputError(
                    f"Maps of level {r.level} are on different grids: {path.name} (line {r.line}, {m}: {g.describe()}) "
                    f"vs {p0.name} (line {ln}, {m0}: {grids[r.level].describe()}). Voxel-wise statistics need every "
                    "map of a level registered to the same atlas grid; resample them onto the atlas."
                )
    return grids


def write_cohort_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write cohort rows (dicts with subject, level, map_* paths, covariates) as a cohort CSV, atomically."""
    from .image_io import write_csv

    if not rows:
        raise InputError("No cohort rows to write.")
    return write_csv(rows, path)
