"""Per-disc and per-zone summaries of a T2 / T1rho map.

Included voxels: status FITTED, ``min_t_ms <= T <= max_t_ms`` and ``R2 >= min_r2``. The default upper
thresholds are those of the voxel-based relaxometry paper (T2 < 150 ms, T1rho < 250 ms, data set A;
``shared/papers/voxel_based_T1rho_T2_relaxometry_pipeline.txt``, "Only voxels meeting threshold
criteria ... are included"). Excluded voxels are counted by reason, checked in this order: fit status
(masked, too few points, not decaying, out of bounds, not converged), T above the maximum, T below the
minimum, R2 below the minimum. Every disc level gets a row (and one per zone) even when it is absent or
has no included voxel; statistics are then NaN and ``reason`` says why, next to the counts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import SimpleITK as sitk

from .. import levels
from ..errors import InputError
from .fitting import FitStatus, RelaxationFit
from .zones import ZONE_NAMES_5, marker_zones

#: Default upper thresholds (ms) per kind, from the paper (data set A for T1rho, data set B for T2).
DEFAULT_MAX_T_MS: dict[str, float] = {"T2": 150.0, "T1rho": 250.0}


@dataclass(frozen=True)
class SummarySettings:
    """Which voxels enter the statistics. ``max_t_ms=None`` uses :data:`DEFAULT_MAX_T_MS` for the kind."""

    max_t_ms: float | None = None
    min_t_ms: float = 0.0
    min_r2: float = 0.5
    n_zones: int = 5

    def __post_init__(self) -> None:
        if self.n_zones < 1:
            raise InputError(f"n_zones must be >= 1; got {self.n_zones}.")
        if self.max_t_ms is not None and not self.max_t_ms > self.min_t_ms:
            raise InputError(f"max_t_ms ({self.max_t_ms}) must exceed min_t_ms ({self.min_t_ms}).")

    def max_for(self, kind: str) -> float:
        return float(self.max_t_ms) if self.max_t_ms is not None else DEFAULT_MAX_T_MS.get(kind, 250.0)


@dataclass(frozen=True)
class RegionSummary:
    """Statistics of T (ms) over the included voxels of one disc (``zone`` 0) or one of its zones."""

    level: str
    zone: int
    region: str
    kind: str
    n_voxels: int
    n_included: int
    n_excluded_masked: int
    n_excluded_too_few_points: int
    n_excluded_not_decaying: int
    n_excluded_out_of_bounds: int
    n_excluded_not_converged: int
    n_excluded_above_max: int
    n_excluded_below_min: int
    n_excluded_low_r2: int
    mean_ms: float
    median_ms: float
    sd_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    max_t_ms: float
    min_r2: float
    reason: str = ""

    @property
    def n_excluded(self) -> int:
        return self.n_voxels - self.n_included

    def to_row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def summarize_discs(
    fit: RelaxationFit,
    labels,
    settings: SummarySettings = SummarySettings(),
    *,
    disc_levels: Sequence[str] = levels.DISCS,
    zone_function: Callable[..., np.ndarray] = marker_zones,
) -> list[RegionSummary]:
    """One whole-disc row plus ``n_zones`` zone rows per disc level, in level order.

    ``labels``: labelmap in the DiscAnalysis (SPINEPS) convention, as an array of the fit's shape or a
    SimpleITK image on the fit's grid (see :func:`~.series.resample_labels_to` for other grids).
    ``zone_function(disc_mask, spacing, direction, n_zones) -> zone array (0, 1..n_zones)`` defines the
    zones (default :func:`~.zones.marker_zones`, the regional markers' definition; :func:`~.zones.disc_zones`
    cuts the whole disc's 3D extent instead).
    """
    arr = sitk.GetArrayViewFromImage(labels) if isinstance(labels, sitk.Image) else np.asarray(labels)
    if tuple(arr.shape) != fit.shape:
        raise InputError(
            f"The labelmap has shape {tuple(arr.shape)} but the maps have {fit.shape}; resample it onto the series grid."
        )
    max_t = settings.max_for(fit.kind)
    rows: list[RegionSummary] = []
    for name in disc_levels:
        label = levels.label_of(name)
        disc = arr == label
        if not disc.any():
            rows.extend(_empty_rows(name, fit.kind, settings, max_t, "disc not in the labelmap"))
            continue
        zones = np.asarray(zone_function(disc, fit.spacing, fit.direction, settings.n_zones))
        rows.append(_summarise(name, 0, "disc", fit, disc, settings, max_t))
        for z in range(1, settings.n_zones + 1):
            rows.append(_summarise(name, z, _zone_name(z, settings.n_zones), fit, zones == z, settings, max_t))
    return rows


def _zone_name(z: int, n: int) -> str:
    return f"zone {z} ({ZONE_NAMES_5[z - 1]})" if n == 5 else f"zone {z} of {n}"


def _empty_rows(name, kind, settings, max_t, reason) -> list[RegionSummary]:
    regions = [(0, "disc")] + [(z, _zone_name(z, settings.n_zones)) for z in range(1, settings.n_zones + 1)]
    nan = float("nan")
    return [
        RegionSummary(name, z, region, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, nan, nan, nan, nan, nan, nan, max_t,
                      settings.min_r2, reason)
        for z, region in regions
    ]


def _summarise(name, zone, region, fit: RelaxationFit, sel: np.ndarray, settings, max_t) -> RegionSummary:
    status = fit.status[sel]
    t = fit.t_ms[sel].astype(np.float64)
    r2 = fit.r2[sel].astype(np.float64)
    counts = np.bincount(status, minlength=len(FitStatus))
    ok = status == FitStatus.FITTED
    above = ok & (t > max_t)
    below = ok & ~above & (t < settings.min_t_ms)
    low_r2 = ok & ~above & ~below & ~(r2 >= settings.min_r2)
    inc = ok & ~above & ~below & ~low_r2
    vals = t[inc]
    n_inc = int(vals.size)
    nan = float("nan")
    if n_inc:
        q1, med, q3 = (float(v) for v in np.percentile(vals, [25, 50, 75]))
        mean = float(vals.mean())
        sd = float(vals.std(ddof=1)) if n_inc > 1 else nan
        reason = "" if n_inc > 1 else "one included voxel: SD undefined"
    else:
        q1 = med = q3 = mean = sd = nan
        reason = "no voxel passed the fit-status, threshold and R2 criteria" if sel.any() else "zone empty"
    return RegionSummary(
        level=name,
        zone=zone,
        region=region,
        kind=fit.kind,
        n_voxels=int(sel.sum()),
        n_included=n_inc,
        n_excluded_masked=int(counts[FitStatus.MASKED]),
        n_excluded_too_few_points=int(counts[FitStatus.TOO_FEW_POINTS]),
        n_excluded_not_decaying=int(counts[FitStatus.NOT_DECAYING]),
        n_excluded_out_of_bounds=int(counts[FitStatus.OUT_OF_BOUNDS]),
        n_excluded_not_converged=int(counts[FitStatus.NOT_CONVERGED]),
        n_excluded_above_max=int(above.sum()),
        n_excluded_below_min=int(below.sum()),
        n_excluded_low_r2=int(low_r2.sum()),
        mean_ms=mean,
        median_ms=med,
        sd_ms=sd,
        q1_ms=q1,
        q3_ms=q3,
        iqr_ms=q3 - q1,
        max_t_ms=max_t,
        min_r2=settings.min_r2,
        reason=reason,
    )


def summaries_to_csv(rows: Sequence[RegionSummary]) -> str:
    """CSV text (header + one line per row); floats with 4 significant decimals, NaN as empty."""
    out = io.StringIO()
    names = [f.name for f in fields(RegionSummary)]
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        d = row.to_row()
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = "" if not np.isfinite(v) else f"{v:.4f}"
        writer.writerow(d)
    return out.getvalue()
