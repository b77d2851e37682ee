"""Unit and definition of every column of the markers table (CSV header sidecar, JSON, MRML table node).

:func:`column_docs` returns ``{column: (unit, definition)}`` for the columns of a set of rows; the CLI
writes it next to the CSV (``<name>.columns.csv``) and into the JSON, and the Slicer table node shows the
units and definitions (``mrml.table_node_from_rows(..., units=..., descriptions=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_MID = "on the disc's mid-sagittal slice"

#: Fixed columns: name -> (unit, definition).
COLUMNS: dict[str, tuple[str, str]] = {
    "level": ("", "disc level (L1-L2 ... L5-S1)"),
    "status": ("", "ok: all markers computed; partial: some markers unavailable (see reason); missing: disc not "
                   "measurable (see reason)"),
    "reason": ("", "why the level or individual markers are unavailable, as 'marker: reason' entries separated by '; '"),
    "mid_slice": ("index", "index of the disc's mid-sagittal slice along the image's sagittal (left-right) axis, "
                           "0-based; 0 for a 2D image"),
    "n_central_slices": ("count", "number of central sagittal slices (at most 5, centred on mid_slice) that hold "
                                  "the disc and were used for the regional markers"),
    "orientation_source": ("", "how ventral and dorsal were told apart: image direction (LPS), the CSF side "
                               "(2D images with label 61), or the 2D display convention (columns anterior->posterior)"),
    "ap_tilt_deg": ("deg", "angle of the disc's AP axis (principal axis of its mid-sagittal mask) to the image's "
                           "anterior->posterior direction, positive when the dorsal end is cranial"),
    "ap_diameter_mm": ("mm", f"disc AP diameter: length of the disc along its AP axis through its centroid, {_MID}"),
    "dh_mm": ("mm", "average disc height: area of the disc within the central 80 % of its AP diameter (band "
                    "perpendicular to the AP axis) divided by the band's width (0.8 x ap_diameter_mm), "
                    f"{_MID}. BianqueNet and radiospineomics report 0.8 x this value (central area / full diameter)"),
    "center_height_mm": ("mm", "disc height at its centre: mean height over the central 10 % of the AP diameter (same band "
                               f"rule as dh_mm), {_MID}"),
    "hdr": ("ratio", "height-to-diameter ratio dh_mm / ap_diameter_mm (BianqueNet's HDR/DWR is 0.8 x this)"),
    "upper_vb_height_mm": ("mm", "height of the vertebral body above the disc: its area divided by its width along "
                                 f"the disc's AP axis through the body's centroid, {_MID}"),
    "lower_vb_height_mm": ("mm", "same for the vertebral body below the disc (L5-S1: S1, measured but not used in dhi)"),
    "dhi": ("ratio", "disc height index: dh_mm / mean(upper_vb_height_mm, lower_vb_height_mm); for L5-S1 "
                     "dh_mm / upper_vb_height_mm (L5), as BianqueNet (S1 is not a comparable body). BianqueNet's "
                     "DHI is 0.8 x this"),
    "area_mm2": ("mm^2", f"disc area (pixel count x pixel area) {_MID}"),
    "volume_mm3": ("mm^3", "disc volume (voxel count x voxel volume) over the whole stack; empty for a single slice"),
    "delta_si": ("a.u. (CSF = 255)", "BianqueNet signal intensity difference: absolute difference of the first and second "
                                     "histogram peaks of the "
                                     f"disc's pixel values {_MID}, x 255 / most frequent CSF value (reference tissue "
                                     "CSF, label 61); see markers.signal"),
    "delta_si_quantisation": ("", "grey levels of the ΔSI histogram: the image's own 8-bit levels, or levels with "
                                  "the CSF median = 255 for other pixel types"),
    "signal_grade": ("grade 1-5", "signal-based modified Pfirrmann grade from delta_si: the grade whose BianqueNet "
                                  "ΔSI distribution (mean, SD per grade) is nearest in SDs; 5 stands for modified "
                                  "grades 5-8; above the grade-1 mean -> 1, below the grade-5 mean -> 5"),
    "si_mean": ("image units", "mean signal of the disc over its central sagittal slices (regional marker 1)"),
    "si_sd": ("image units", "standard deviation (N-1) of the disc's signal over its central slices (marker 2)"),
    "reference_group": ("", "BianqueNet population cells used for the percentiles (dhi/hdr and delta_si): level, "
                            "sex (F, M or both sexes), age band (or all ages) and size n"),
}

_POP_VALUE = {"dhi": "0.8 x dhi (BianqueNet's DHI convention)", "hdr": "0.8 x hdr (BianqueNet's HDR convention)",
              "delta_si": "delta_si"}


def _pop_doc(marker: str, kind: str) -> tuple[str, str]:
    value = _POP_VALUE[marker]
    if kind == "percentile":
        return "%", (f"percentile rank of {value} in the reference group (reference_group), interpolated between "
                     "the shipped percentiles 2.5, 5, 10, 25, 50, 75, 90, 95, 97.5 and clipped to 2.5..97.5")
    if kind == "z":
        return "SD", f"({value} - reference group mean) / reference group SD"
    return "", (f"low / normal / high: {value} below the 2.5th, within, or above the 97.5th percentile of the "
                "reference group")


_ZONE_RE = re.compile(r"^si_z(\d+)_(mean|sd)$")
_POP_RE = re.compile(r"^(dhi|hdr|delta_si)_(percentile|z|flag)$")


def column_doc(name: str, map_names: Iterable[str] = ()) -> tuple[str, str]:
    """(unit, definition) of one column; KeyError for a column this module does not know."""
    if name in COLUMNS:
        return COLUMNS[name]
    m = _ZONE_RE.match(name)
    if m:
        k, stat = int(m.group(1)), m.group(2)
        what = "mean signal" if stat == "mean" else "standard deviation (N-1) of the signal"
        return ("image units", f"{what} in ventral-dorsal zone {k} (1 = most ventral) of the disc over its central "
                               "sagittal slices (zones: markers.geometry.ventral_dorsal_zones)")
    m = _POP_RE.match(name)
    if m:
        return _pop_doc(m.group(1), m.group(2))
    for map_name in sorted(map_names, key=len, reverse=True):
        if name.startswith(map_name + "_"):
            rest = name[len(map_name) + 1:]
            unit = map_name.rsplit("_", 1)[-1] if "_" in map_name else "map units"
            if rest == "mean":
                return unit, f"mean of the finite values of map '{map_name}' in the disc over its central sagittal slices"
            zm = re.fullmatch(r"z(\d+)_mean", rest)
            if zm:
                return unit, (f"mean of the finite values of map '{map_name}' in ventral-dorsal zone {zm.group(1)} "
                              "(1 = most ventral) over the disc's central sagittal slices")
    raise KeyError(name)


def column_docs(rows: Iterable[Mapping[str, object]], map_names: Iterable[str] = ()) -> dict[str, tuple[str, str]]:
    """{column: (unit, definition)} for every column of ``rows``, in first-seen order."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    map_names = tuple(map_names)
    return {n: column_doc(n, map_names) for n in names}
