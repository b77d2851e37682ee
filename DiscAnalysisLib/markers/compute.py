"""Per-disc quantitative markers from an image and a level labelmap.

:func:`compute_markers` is the single entry point used by the CLI (``discanalysis markers``), the Slicer
logic and batch scripts; every column it produces is documented in :mod:`.columns`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .. import levels
from ..errors import InputError
from ..progress import Progress, ProgressCallback
from . import geometry as geo
from . import normal_ranges as nr
from .columns import column_docs
from .signal import delta_si, mean_sd

log = logging.getLogger(__name__)

#: The disc's centre height is its mean height over this central fraction of the AP diameter (a single
#: chord would be pixel-limited: +/- 1 pixel).
CENTRE_FRACTION = 0.1


@dataclass(frozen=True)
class MarkerSettings:
    """Patient data for the population comparison and the marker definitions' few knobs.

    ``age_years`` and ``sex`` ("F"/"M") choose the reference group; ``band_fraction`` is the central part
    of the AP diameter over which the average height is taken (BianqueNet: 0.8); ``n_zones`` and
    ``n_central_slices`` define the regional markers (fissure paper: 5 and 5); ``supersampling`` is the
    number of sub-pixel samples per pixel side used to measure band areas.
    """

    age_years: float | None = None
    sex: str | None = None
    band_fraction: float = 0.8
    n_zones: int = 5
    n_central_slices: int = 5
    supersampling: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "sex", nr.normalise_sex(self.sex))
        if self.age_years is not None and not (0 <= float(self.age_years) <= 130):
            raise InputError(f"Age must be between 0 and 130 years; got {self.age_years!r}.")
        if not (0 < self.band_fraction <= 1):
            raise InputError(f"band_fraction must be in (0, 1]; got {self.band_fraction!r}.")
        if self.n_zones < 1 or self.n_central_slices < 1 or self.supersampling < 1:
            raise InputError("n_zones, n_central_slices and supersampling must be at least 1.")


@dataclass(frozen=True)
class PopulationMarker:
    percentile: float | None = None
    z: float | None = None
    flag: str | None = None


@dataclass(frozen=True)
class DiscMarkers:
    """Markers of one disc level; None where a marker is unavailable (``reason`` says why)."""

    level: str
    status: str = "missing"
    reason: str = ""
    mid_slice: int | None = None
    n_central_slices: int | None = None
    orientation_source: str | None = None
    ap_tilt_deg: float | None = None
    ap_diameter_mm: float | None = None
    dh_mm: float | None = None
    center_height_mm: float | None = None
    hdr: float | None = None
    upper_vb_height_mm: float | None = None
    lower_vb_height_mm: float | None = None
    dhi: float | None = None
    area_mm2: float | None = None
    volume_mm3: float | None = None
    delta_si: float | None = None
    delta_si_quantisation: str | None = None
    signal_grade: int | None = None
    si_mean: float | None = None
    si_sd: float | None = None
    si_zone_mean: tuple[float | None, ...] = ()
    si_zone_sd: tuple[float | None, ...] = ()
    map_means: tuple[tuple[str, float | None, tuple[float | None, ...]], ...] = ()
    dhi_population: PopulationMarker = field(default_factory=PopulationMarker)
    hdr_population: PopulationMarker = field(default_factory=PopulationMarker)
    delta_si_population: PopulationMarker = field(default_factory=PopulationMarker)
    reference_group: str | None = None

    def to_row(self, n_zones: int = 5, map_names: tuple[str, ...] | None = None) -> dict:
        """One flat row (column -> value, None for empty); columns are documented in :mod:`.columns`.

        ``map_names`` lists the relaxation maps of the run, so that a level without values (a missing
        disc) still has their columns.
        """
        row = {k: getattr(self, k) for k in (
            "level", "status", "reason", "mid_slice", "n_central_slices", "orientation_source", "ap_tilt_deg",
            "ap_diameter_mm", "dh_mm", "center_height_mm", "hdr", "upper_vb_height_mm", "lower_vb_height_mm",
            "dhi", "area_mm2", "volume_mm3", "delta_si", "delta_si_quantisation", "signal_grade", "si_mean",
            "si_sd")}
        row["reason"] = self.reason or None  # empty cell, not "", in every output format
        for k in range(n_zones):
            row[f"si_z{k + 1}_mean"] = self.si_zone_mean[k] if k < len(self.si_zone_mean) else None
            row[f"si_z{k + 1}_sd"] = self.si_zone_sd[k] if k < len(self.si_zone_sd) else None
        have = {name: (whole, zones) for name, whole, zones in self.map_means}
        for name in (tuple(have) if map_names is None else map_names):
            whole, zones = have.get(name, (None, ()))
            row[f"{name}_mean"] = whole
            for k in range(n_zones):
                row[f"{name}_z{k + 1}_mean"] = zones[k] if k < len(zones) else None
        for marker in ("dhi", "hdr", "delta_si"):
            pop: PopulationMarker = getattr(self, f"{marker}_population")
            row[f"{marker}_percentile"] = pop.percentile
            row[f"{marker}_z"] = pop.z
            row[f"{marker}_flag"] = pop.flag
        row["reference_group"] = self.reference_group
        return row


@dataclass(frozen=True)
class MarkerReport:
    """Markers of every lumbar disc level (always 5 rows, L1-L2 first) and how they were computed."""

    levels: tuple[DiscMarkers, ...]
    settings: MarkerSettings
    map_names: tuple[str, ...] = ()
    spacing_known: bool = True

    def rows(self) -> list[dict]:
        return [m.to_row(self.settings.n_zones, self.map_names) for m in self.levels]

    def column_docs(self) -> dict[str, tuple[str, str]]:
        """{column: (unit, definition)} for :meth:`rows`."""
        return column_docs(self.rows(), self.map_names)

    def units(self) -> dict[str, str]:
        return {k: u for k, (u, _d) in self.column_docs().items()}

    def descriptions(self) -> dict[str, str]:
        return {k: d for k, (_u, d) in self.column_docs().items()}

    def __getitem__(self, level: str) -> DiscMarkers:
        name = levels.normalise_name(level)
        for m in self.levels:
            if m.level == name:
                return m
        raise KeyError(level)


# ------------------------------------------------------------------------------------------ helpers
def _as_label_array(labels: sitk.Image) -> np.ndarray:
    if labels.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("The labelmap has several components per voxel; expected one integer label per voxel.")
    arr = sitk.GetArrayFromImage(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError("The labelmap holds non-integer values; pass a label image (integers), not a probability map.")
        arr = arr.astype(np.int64)
    return arr


def _vb_height(lab_slice: np.ndarray, label: int, frame: geo.SagittalFrame, axes: geo.Axes2D) -> float | None:
    """Vertebral body height (mm): area / width along the disc's AP axis through the body's centroid."""
    mask = geo.largest_component(lab_slice == label)
    if mask.sum() < 3:
        return None
    pts = geo.slice_points(mask, frame.spacing_rc_mm)
    c = geo.chord(mask, frame.spacing_rc_mm, pts.mean(axis=0), axes.ap)
    if c is None or c[1] <= c[0]:
        return None
    return float(mask.sum() * frame.pixel_area / (c[1] - c[0]))


def _population(value: float | None, marker: str, level: str, settings: MarkerSettings, factor: float = 1.0
                ) -> tuple[PopulationMarker, nr.RangeRow | None]:
    if value is None:
        return PopulationMarker(), None
    group = nr.reference_group(marker, level, settings.sex, settings.age_years)
    if group is None:
        return PopulationMarker(), None
    c = nr.compare(value * factor, group)
    return PopulationMarker(c.percentile, c.z, c.flag), group


# ------------------------------------------------------------------------------------------ the step
def compute_markers(
    image: sitk.Image,
    labels: sitk.Image,
    settings: MarkerSettings = MarkerSettings(),
    *,
    maps: Mapping[str, sitk.Image] | None = None,
    progress: ProgressCallback | Progress | None = None,
) -> MarkerReport:
    """Quantitative markers of every lumbar disc.

    ``image``: the T2-weighted image (2D mid-sagittal slice or 3D sagittal stack, LPS geometry).
    ``labels``: labelmap on the same grid in the DiscAnalysis convention (discs 120-124, vertebrae 20-24
    and 26, CSF 61; other values are ignored). ``maps``: optional relaxation-time maps on the same grid,
    keyed by a name with its unit (e.g. ``{"t2_ms": t2_map}``), summarised per ventral-dorsal zone.
    Returns one :class:`DiscMarkers` per level (L1-L2 ... L5-S1); a level that cannot be measured is a
    row with ``status="missing"`` and a reason.
    """
    prog = Progress.wrap(progress)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("The image has several components per pixel (colour?); markers need a grey-scale image.")
    geo.check_same_grid(image, labels)
    maps = dict(maps or {})
    for name, m in maps.items():
        geo.check_same_grid(image, m, what=f"map '{name}'")
    frame = geo.sagittal_frame(image)
    img = sitk.GetArrayFromImage(image).astype(np.float64)
    lab = _as_label_array(labels)
    map_arrays = {name: sitk.GetArrayFromImage(m).astype(np.float64) for name, m in maps.items()}
    is_uint8 = image.GetPixelID() == sitk.sitkUInt8
    csf_all = lab == levels.CSF_LABEL

    results = []
    for level in prog.iterate(levels.DISCS, "disc markers"):
        results.append(_one_level(level, img, lab, csf_all, map_arrays, frame, settings, is_uint8))
    return MarkerReport(tuple(results), settings, tuple(maps), frame.spacing_known)


def _disc_heights(d2: np.ndarray, frame: geo.SagittalFrame, axes: geo.Axes2D, settings: MarkerSettings
                  ) -> tuple[float, float, float]:
    """AP diameter, mean height over the central ``band_fraction`` and over the central 10 % (mm or px)."""
    sp = frame.spacing_rc_mm
    c0, c1 = geo.chord(d2, sp, axes.centroid, axes.ap)
    diameter = c1 - c0
    t_mid = 0.5 * (c0 + c1)
    t = (geo.supersampled_points(d2, sp, settings.supersampling) - axes.centroid) @ axes.ap
    sample_area = frame.pixel_area / settings.supersampling**2

    def band_height(fraction: float) -> float:
        inside = np.abs(t - t_mid) <= 0.5 * fraction * diameter
        return np.count_nonzero(inside) * sample_area / (fraction * diameter)

    return float(diameter), float(band_height(settings.band_fraction)), float(band_height(CENTRE_FRACTION))


def _disc_height_index(level: str, dh: float, lab: np.ndarray, lab2: np.ndarray, frame: geo.SagittalFrame,
                       axes: geo.Axes2D, reasons: list[str]) -> tuple[float | None, dict[str, float | None]]:
    """DHI and the adjacent body heights; L5-S1 uses L5 only (BianqueNet)."""
    upper, lower = levels.disc_neighbours(level)
    hv = {v: _vb_height(lab2, levels.label_of(v), frame, axes) for v in (upper, lower)}
    needed = (upper,) if level == "L5-S1" else (upper, lower)
    missing = [v for v in needed if hv[v] is None]
    if not missing:
        return dh / float(np.mean([hv[v] for v in needed])), hv
    where = []
    for v in missing:
        lv = levels.label_of(v)
        place = "not on the disc's mid-sagittal slice" if (lab == lv).any() else "not in the labelmap"
        where.append(f"vertebral body {v} (label {lv}) {place}")
    reasons.append("dhi: " + ", ".join(where))
    return None, hv


def _signal_difference(disc_values: np.ndarray, csf_values: np.ndarray, is_uint8: bool, reasons: list[str]):
    """(ΔSI, quantisation, signal grade) or Nones with a reason."""
    if csf_values.size == 0:
        reasons.append(f"delta_si: no CSF (label {levels.CSF_LABEL}) as reference tissue")
        return None, None, None
    try:
        res = delta_si(disc_values, csf_values, is_uint8=is_uint8)
    except ValueError as exc:
        reasons.append(f"delta_si: {exc}")
        return None, None, None
    return res.delta_si, res.quantisation, nr.signal_grade(res.delta_si)


def _regional(disc, img, map_arrays, frame: geo.SagittalFrame, axes: geo.Axes2D, slices: list[int], n_zones: int):
    """Whole-disc and per-zone (mean, SD) of the image, and per-zone means of each map, over ``slices``."""
    whole, zone = [], [[] for _ in range(n_zones)]
    m_whole = {n: [] for n in map_arrays}
    m_zone = {n: [[] for _ in range(n_zones)] for n in map_arrays}
    for i in slices:
        m = frame.slice(disc, i)
        zones = geo.zones_in_slice(m, frame.spacing_rc_mm, axes.ap, n_zones)
        for values, w, z in [(frame.slice(img, i), whole, zone)] + [
                (frame.slice(a, i), m_whole[n], m_zone[n]) for n, a in map_arrays.items()]:
            w.append(values[m])
            for k in range(n_zones):
                z[k].append(values[zones == k + 1])
    si = mean_sd(np.concatenate(whole))
    zstats = [mean_sd(np.concatenate(v)) for v in zone]
    maps = tuple((n, mean_sd(np.concatenate(m_whole[n]))[0], tuple(mean_sd(np.concatenate(z))[0] for z in m_zone[n]))
                 for n in map_arrays)
    return si, zstats, maps


def _one_level(level, img, lab, csf_all, map_arrays, frame: geo.SagittalFrame, settings: MarkerSettings,
               is_uint8: bool) -> DiscMarkers:
    label = levels.label_of(level)
    disc = lab == label
    if not disc.any():
        return DiscMarkers(level, "missing", f"disc label {label} ({level}) is not in the labelmap")
    mid = geo.mid_sagittal_index(disc, frame)
    d2_all = frame.slice(disc, mid)
    d2 = geo.largest_component(d2_all)
    if d2.sum() < 3:
        return DiscMarkers(level, "missing", f"disc {level} has fewer than 3 pixels on its mid-sagittal slice")
    reasons: list[str] = []
    lab2 = frame.slice(lab, mid)
    csf2 = lab2 == levels.CSF_LABEL

    # The disc's own axes; a 2D slice takes its dorsal side from the CSF when there is some.
    orientation, hint = frame.orientation_source, None
    if frame.slice_axis is None and csf2.any():
        hint = geo.slice_points(csf2, frame.spacing_rc_mm).mean(axis=0)
        orientation = geo.ORIENT_CSF
    axes = geo.principal_axes(geo.slice_points(d2, frame.spacing_rc_mm), frame, hint)

    # Geometry on the mid-sagittal slice (mm; pixels when the spacing is unknown, then only ratios are kept).
    diameter, dh, center_height = _disc_heights(d2, frame, axes, settings)
    dhi, hv = _disc_height_index(level, dh, lab, lab2, frame, axes, reasons)
    upper, lower = levels.disc_neighbours(level)
    volume = None
    if frame.slice_axis is not None and frame.n_slices > 1:
        volume = float(disc.sum() * frame.pixel_area * frame.slice_thickness_mm)
    else:
        reasons.append("volume_mm3: single slice")

    # ΔSI on the mid-sagittal slice against the CSF of that slice (else of the whole image).
    mid_img = frame.slice(img, mid)
    csf_values = mid_img[csf2] if csf2.any() else img[csf_all]
    dsi, dsi_quant, grade = _signal_difference(mid_img[d2_all], csf_values, is_uint8, reasons)

    # Regional markers over the central slices.
    slices = geo.central_slice_indices(disc, frame, mid, settings.n_central_slices)
    (si_mean, si_sd), zstats, map_means = _regional(disc, img, map_arrays, frame, axes, slices, settings.n_zones)

    lengths_known = frame.spacing_known
    if not lengths_known:
        reasons.append("lengths, area, volume: pixel spacing unknown (give --pixel-spacing-mm); ratios only")

    def length(x):
        return float(x) if (x is not None and lengths_known) else None

    # Population comparison in BianqueNet's conventions (see normal_ranges).
    f = nr.BIANQUENET_HEIGHT_FACTOR
    dhi_pop, g1 = _population(dhi, "dhi_bianquenet", level, settings, f)
    hdr_pop, g2 = _population(dh / diameter, "hdr_bianquenet", level, settings, f)
    dsi_pop, g3 = _population(dsi, "delta_si", level, settings)
    groups = [f"{name}: {g.label}" for name, g in (("dhi/hdr", g1 or g2), ("delta_si", g3)) if g is not None]
    status = "ok" if all(r.startswith("volume_mm3: single") for r in reasons) else "partial"

    return DiscMarkers(
        level=level,
        status=status,
        reason="; ".join(reasons),
        mid_slice=int(mid),
        n_central_slices=len(slices),
        orientation_source=orientation,
        ap_tilt_deg=axes.tilt_deg(frame),
        ap_diameter_mm=length(diameter),
        dh_mm=length(dh),
        center_height_mm=length(center_height),
        hdr=float(dh / diameter),
        upper_vb_height_mm=length(hv[upper]),
        lower_vb_height_mm=length(hv[lower]),
        dhi=None if dhi is None else float(dhi),
        area_mm2=length(d2_all.sum() * frame.pixel_area),
        volume_mm3=length(volume),
        delta_si=dsi,
        delta_si_quantisation=dsi_quant,
        signal_grade=grade,
        si_mean=si_mean,
        si_sd=si_sd,
        si_zone_mean=tuple(z[0] for z in zstats),
        si_zone_sd=tuple(z[1] for z in zstats),
        map_means=map_means,
        dhi_population=dhi_pop,
        hdr_population=hdr_pop,
        delta_si_population=dsi_pop,
        reference_group="; ".join(groups) or None,
    )
