"""One call from a series (+ optional labelmap) to maps and per-disc summaries, and writing them.

This is what the CLI (``discanalysis fit``), batch scripts and the Slicer logic call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import image_io, levels
from ..errors import InputError
from ..progress import Progress, ProgressCallback
from .fitting import STATUS_DESCRIPTIONS, FitSettings, RelaxationFit, fit_relaxation
from .series import RelaxationSeries, resample_labels_to
from .summary import RegionSummary, SummarySettings, summaries_to_csv, summarize_discs

#: Suggested display window (ms) of the maps: 0 to the summary threshold of the kind.
DISPLAY_RANGE_MS: dict[str, tuple[float, float]] = {"T2": (0.0, 150.0), "T1rho": (0.0, 250.0)}


@dataclass(frozen=True, eq=False)
class RelaxometryResult:
    """Maps, the labelmap on the series grid (if one was given) and the per-disc/zone summaries."""

    fit: RelaxationFit
    summaries: tuple[RegionSummary, ...]
    labels: sitk.Image | None = None
    times_source: str = ""

    def summary_csv(self) -> str:
        return summaries_to_csv(self.summaries)

    def disc_rows(self) -> list[RegionSummary]:
        """The whole-disc rows only."""
        return [r for r in self.summaries if r.zone == 0]

    def rows(self) -> list[dict]:
        """Every summary row as a dict (the columns of the per-disc CSV), e.g. for an MRML table node."""
        return [r.to_row() for r in self.summaries]


def run_relaxometry(
    series: RelaxationSeries | Sequence[sitk.Image],
    times_ms: Sequence[float] | None = None,
    labels: sitk.Image | None = None,
    *,
    kind: str = "t2",
    fit_settings: FitSettings | None = None,
    summary_settings: SummarySettings | None = None,
    label_convention: str = "spineps",
    fit_inside_labels_only: bool = True,
    progress: Progress | ProgressCallback | None = None,
) -> RelaxometryResult:
    """Fit the series and, when ``labels`` is given, summarise per disc level and zone.

    ``series``: a :class:`RelaxationSeries` (times included) or a list of images plus ``times_ms``.
    ``labels``: labelmap (any grid overlapping the series; resampled by nearest neighbour), values in
    ``label_convention`` (see :func:`DiscAnalysisLib.levels.convert_labels`). With
    ``fit_inside_labels_only`` only labelled voxels are fitted (much faster; the rest is MASKED).
    """
    fit_settings = fit_settings or FitSettings()
    summary_settings = summary_settings or SummarySettings()
    prog = Progress.wrap(progress)
    if isinstance(series, RelaxationSeries):
        images, times, source = list(series.images), series.times_ms, series.times_source
        if times_ms is not None and not np.allclose(sorted(times_ms), times, atol=0.01):
            raise InputError(f"times_ms {list(times_ms)} disagree with the series' times {list(times)}.")
    else:
        images, source = list(series), "user"
        if times_ms is None:
            raise InputError("Give the echo / spin-lock times (ms) of the volumes.")
        times = times_ms
    if not images:
        raise InputError("The series is empty.")
    labels_on_grid = None
    mask = None
    if labels is not None:
        labels_on_grid = resample_labels_to(labels, images[0])
        arr = sitk.GetArrayFromImage(labels_on_grid)
        if label_convention != "spineps" or not set(np.unique(arr).tolist()) <= set(levels.LABEL_TO_NAME) | {0}:
            arr = levels.convert_labels(arr, label_convention)
            converted = sitk.GetImageFromArray(arr)
            converted.CopyInformation(labels_on_grid)
            labels_on_grid = converted
        if fit_inside_labels_only:
            mask = arr != 0
            if not mask.any():
                raise InputError("The labelmap is empty on the series grid: nothing to fit.")
    fit = fit_relaxation(images, times, mask, fit_settings, kind=kind, progress=prog.sub(0.0, 0.95))
    summaries: tuple[RegionSummary, ...] = ()
    if labels_on_grid is not None:
        summaries = tuple(summarize_discs(fit, labels_on_grid, summary_settings))
    prog.report(1.0, "done")
    return RelaxometryResult(fit=fit, summaries=summaries, labels=labels_on_grid, times_source=source)


def write_outputs(result: RelaxometryResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the maps (NRRD, series geometry), the per-disc CSV (with labels) and a JSON fit report.

    File names start with the kind (``T2_ms.nrrd``, ``T2_S0.nrrd``, ``T2_R2.nrrd``, ``T2_RMSE.nrrd``,
    ``T2_status.nrrd``, ``T2_per_disc.csv``, ``T2_fit.json``) so T2 and T1rho fits can share a folder.
    Every file is written atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fit = result.fit
    written: dict[str, Path] = {}
    for name, image in fit.to_images().items():
        fname = f"{name}.nrrd" if name == fit.map_name else f"{fit.kind}_{name}.nrrd"
        written[name] = image_io.write_image(image, out / fname)
    if result.summaries:
        written["per_disc"] = image_io.write_text(result.summary_csv(), out / f"{fit.kind}_per_disc.csv")
    report = {
        "kind": fit.kind,
        "times_ms": list(fit.times_ms),
        "times_source": result.times_source,
        "model": "S0*exp(-t/T)+C" if fit.settings.offset else "S0*exp(-t/T)",
        "status_counts": fit.status_counts(),
        "status_codes": {int(k): v for k, v in STATUS_DESCRIPTIONS.items()},
        "failed_fraction_of_fitted_voxels": fit.failed_fraction(),
        "t_bounds_ms": list(fit.settings.bounds_for(fit.times_ms)),
    }
    written["report"] = image_io.write_text(json.dumps(report, indent=2), out / f"{fit.kind}_fit.json")
    return written


def demo_step(ctx, progress: Progress) -> list[str]:
    """Demo: fit the phantom's T2 and T1rho series from the written files and compare with the truth.

    The truth per disc is the median of the truth map over the same included voxels, so the comparison
    isolates the fit (the phantom's discs mix nucleus and annulus values).
    """
    from .. import image_io as io

    labels = io.read_image(ctx.paths["labels"])
    lines: list[str] = []
    for n, (kind, folder, truth_key) in enumerate(
        (("t2", "t2_series/", "truth_t2_ms"), ("t1rho", "t1rho_series/", "truth_t1rho_ms"))
    ):
        files = sorted(str(p) for key, p in ctx.paths.items() if key.startswith(folder))
        series = load_series_files(files, kind)
        result = run_relaxometry(series, labels=labels, kind=kind, progress=progress.sub(n / 2, (n + 1) / 2))
        write_outputs(result, ctx.out_dir / "relaxometry")
        truth = sitk.GetArrayFromImage(io.read_image(ctx.paths[truth_key]))  # a copy: the image is temporary
        fit = result.fit
        lab = sitk.GetArrayViewFromImage(result.labels)
        max_t = SummarySettings().max_for(fit.kind)
        lines.append(
            f"{fit.kind} fit ({', '.join(f'{t:g}' for t in fit.times_ms)} ms, times from {series.times_source}): "
            f"{fit.status_counts()['fitted']} voxels fitted, failed {100 * fit.failed_fraction():.2f} % -> "
            f"{ctx.out_dir / 'relaxometry'}"
        )
        for row in result.disc_rows():
            if not row.n_included:
                lines.append(f"  {row.level}: {row.reason}")
                continue
            inc = ((lab == levels.label_of(row.level)) & (fit.status == 0) & (fit.t_ms <= max_t)
                   & (fit.r2 >= row.min_r2))
            zones = [z for z in result.summaries if z.level == row.level and z.zone > 0]
            zone_text = "/".join("-" if not z.n_included else f"{z.median_ms:.0f}" for z in zones)
            lines.append(
                f"  {row.level}: median {fit.kind} {row.median_ms:6.1f} ms (truth {float(np.median(truth[inc])):6.1f}), "
                f"IQR {row.iqr_ms:5.1f} ms, {row.n_included}/{row.n_voxels} voxels included; "
                f"zones ventral->dorsal {zone_text} ms"
            )
    return lines


def load_series_files(files: Sequence[str], kind: str) -> RelaxationSeries:
    from .series import load_series

    return load_series(files, kind=kind)
