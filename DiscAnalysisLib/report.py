"""One self-contained HTML report per patient.

The report holds everything inline (CSS and base64 PNG figures, no external resources), so it can be
mailed, archived or printed as one file: the mid-sagittal image with level contours and names, a per-level
table (with units), relaxation maps, QC flags and notes. Figures are drawn with matplotlib's Agg backend.

Display convention: sagittal images are shown as radiologists read them, anterior to the left and superior
at the top, with the physical aspect ratio from the pixel spacing. 3D images are reoriented to that view
using their direction matrix (:func:`sagittal_view`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import __version__, levels
from .image_io import spacing_known, write_text

#: Orientation code (see image_io.orientation_code) in which array [k][j][i] reads as a sagittal view:
#: i (columns) anterior->posterior, j (rows) superior->inferior, k across slices.
VIEW_ORIENTATION = "PIR"


@dataclass(frozen=True)
class Column:
    """A column of the per-level table: the row key, its header and unit ("" when unitless)."""

    key: str
    header: str
    unit: str = ""
    digits: int = 2


@dataclass(frozen=True)
class MapPanel:
    """A parametric map to show (e.g. T2 in ms) with its display range."""

    title: str
    image: sitk.Image
    vmin: float
    vmax: float
    unit: str = ""


@dataclass(frozen=True)
class PatientReport:
    """What a report shows. ``rows`` are per-level dicts (one per level, keyed by ``level``)."""

    patient_id: str
    image: sitk.Image
    labels: sitk.Image | None = None
    rows: tuple[dict, ...] = ()
    columns: tuple[Column, ...] = ()
    maps: tuple[MapPanel, ...] = ()
    qc: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    details: tuple[tuple[str, str], ...] = ()
    synthetic: bool = False
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


# ------------------------------------------------------------------------------------------------ views
def sagittal_view(image: sitk.Image, *, slice_index: int | None = None, nearest: bool = False) -> tuple[np.ndarray, float]:
    """The mid-sagittal (or given) slice as a 2D array (rows superior->inferior, columns anterior->posterior)
    and its display aspect (row spacing / column spacing)."""
    if image.GetDimension() == 2:
        arr = sitk.GetArrayFromImage(image)
        sx, sy = image.GetSpacing()
        return arr, (sy / sx) if spacing_known(image) else 1.0
    oriented = sitk.DICOMOrient(image, VIEW_ORIENTATION)
    arr = sitk.GetArrayFromImage(oriented)  # (k, j, i)
    k = arr.shape[0] // 2 if slice_index is None else int(slice_index)
    sx, sy, _ = oriented.GetSpacing()
    return arr[k], sy / sx


def best_slice(labels: sitk.Image) -> int | None:
    """Index (in the sagittal view's k) of the slice with the most disc voxels; None for 2D or no discs."""
    if labels.GetDimension() == 2:
        return None
    arr = sitk.GetArrayFromImage(sitk.DICOMOrient(labels, VIEW_ORIENTATION))
    disc = np.isin(arr, list(levels.DISC_LABELS.values()))
    counts = disc.reshape(disc.shape[0], -1).sum(1)
    return int(np.argmax(counts)) if counts.max() > 0 else None


def _window(arr: np.ndarray) -> tuple[float, float]:
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def overlay_figure(image: sitk.Image, labels: sitk.Image | None) -> str:
    """Base64 PNG of the sagittal image with each level's contour and name."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = best_slice(labels) if labels is not None else None
    arr, aspect = sagittal_view(image, slice_index=k)
    h, w = arr.shape
    fig, ax = plt.subplots(figsize=(5.0, 5.0 * h * aspect / w if w else 5.0))
    lo, hi = _window(arr)
    ax.imshow(arr, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
    if labels is not None:
        lab, _ = sagittal_view(labels, slice_index=k)
        for value in sorted(set(np.unique(lab).tolist()) - {0}):
            name = levels.LABEL_TO_NAME.get(int(value))
            if name is None:
                continue
            mask = (lab == value).astype(float)
            colour = levels.LEVEL_COLORS.get(name, (1.0, 1.0, 0.0))
            ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.2)
            rows, cols = np.nonzero(mask)
            anchor_col = cols.max() + 2 if levels.is_disc(value) else cols.min() - 2
            ax.text(
                anchor_col, rows.mean(), name, color=colour, fontsize=7, va="center",
                ha="left" if levels.is_disc(value) else "right",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("anterior \u2190   mid-sagittal   \u2192 posterior", fontsize=8)
    return _png(fig)


def map_figure(panel: MapPanel, labels: sitk.Image | None) -> str:
    """Base64 PNG of a parametric map (sagittal view, disc contours in white) with a colour bar."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = best_slice(labels) if labels is not None else None
    arr, aspect = sagittal_view(panel.image, slice_index=k)
    h, w = arr.shape
    fig, ax = plt.subplots(figsize=(4.0, 4.0 * h * aspect / w if w else 4.0))
    im = ax.imshow(np.ma.masked_invalid(arr), cmap="viridis", vmin=panel.vmin, vmax=panel.vmax, aspect=aspect)
    if labels is not None:
        lab, _ = sagittal_view(labels, slice_index=k)
        disc = np.isin(lab, list(levels.DISC_LABELS.values())).astype(float)
        if disc.any():
            ax.contour(disc, levels=[0.5], colors="white", linewidths=0.8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=panel.unit)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(panel.title, fontsize=9)
    return _png(fig)


# ------------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;margin:24px;color:#1b1b1b;max-width:1100px}
h1{font-size:1.4em;margin:0 0 4px} h2{font-size:1.1em;border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:22px}
.meta{color:#555;font-size:.9em} .banner{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;margin:10px 0;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin-top:6px} th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eef1f5;vertical-align:bottom} td.level,th.level{text-align:left;font-weight:600}
td.flag{color:#a00000;text-align:left} td.text{text-align:left} td.na{color:#888;text-align:center}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start} figure{margin:0} figcaption{font-size:.8em;color:#555}
ul.qc li{color:#a00000} .foot{color:#777;font-size:.8em;margin-top:26px}
@media print{body{margin:8mm} .figs{page-break-inside:avoid} table{page-break-inside:auto} tr{page-break-inside:avoid}}
"""


def _fmt(value, digits: int) -> tuple[str, str]:
    """Cell text and CSS class."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2014", "na"
    if isinstance(value, bool):
        return ("yes" if value else "no"), "text"
    if isinstance(value, (int, np.integer)):
        return str(int(value)), ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}", ""
    return html.escape(str(value)), "text"


def _columns_for(rows: Sequence[dict], columns: Sequence[Column]) -> list[Column]:
    if columns:
        return list(columns)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return [Column(k, k) for k in keys]


def render_html(report: PatientReport) -> str:
    """The report as one HTML string (no external resources)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>DiscAnalysis report - {e(report.patient_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Lumbar disc report: {e(report.patient_id)}</h1>",
        f"<div class='meta'>DiscAnalysis {e(__version__)} &middot; {e(report.created)}"
        + "".join(f" &middot; {e(k)}: {e(v)}" for k, v in report.details)
        + "</div>",
        "<div class='banner'>Research software, not a medical device: results support but do not replace a "
        "reader's assessment.</div>",
    ]
    if report.synthetic:
        parts.append("<div class='banner'>Synthetic phantom data (demo): the numbers show the software working, "
                     "not clinical accuracy.</div>")
    figs = [f"<figure><img alt='mid-sagittal image with level contours' src='data:image/png;base64,"
            f"{overlay_figure(report.image, report.labels)}'><figcaption>Mid-sagittal image with segmented "
            "levels</figcaption></figure>"]
    for panel in report.maps:
        figs.append(f"<figure><img alt='{e(panel.title)}' src='data:image/png;base64,{map_figure(panel, report.labels)}'>"
                    f"<figcaption>{e(panel.title)}</figcaption></figure>")
    parts += ["<h2>Images</h2><div class='figs'>", *figs, "</div>"]

    cols = _columns_for(report.rows, report.columns)
    parts.append("<h2>Per-level results</h2>")
    if report.rows:
        head = "".join(
            f"<th class='{'level' if c.key == 'level' else ''}'>{e(c.header)}"
            + (f"<br><small>({e(c.unit)})</small>" if c.unit else "") + "</th>"
            for c in cols
        )
        parts.append(f"<table id='levels'><thead><tr>{head}</tr></thead><tbody>")
        for r in report.rows:
            cells = []
            for c in cols:
                text, cls = _fmt(r.get(c.key), c.digits)
                if c.key == "level":
                    cls = "level"
                elif c.key in ("qc", "qc_flags", "reason") and text not in ("\u2014", ""):
                    cls = "flag"
                cells.append(f"<td class='{cls}'>{text}</td>")
            parts.append(f"<tr data-level='{e(str(r.get('level', '')))}'>{''.join(cells)}</tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p>No per-level results.</p>")
    if report.qc:
        parts.append("<h2>Quality control</h2><ul class='qc'>" + "".join(f"<li>{e(q)}</li>" for q in report.qc) + "</ul>")
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("<div class='foot'>Label convention: SPINEPS/TPTBox (discs 120-124, vertebrae 20-26). "
                 "Lengths in mm from the image spacing; \u2014 marks a value that could not be computed (see QC).</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: PatientReport, path: str | Path) -> Path:
    """Render and write the report atomically."""
    return write_text(render_html(report), path)
