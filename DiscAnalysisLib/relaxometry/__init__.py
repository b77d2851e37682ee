"""T2 and T1rho relaxometry: series loading, voxel-wise mono-exponential fits, per-disc summaries.

Typical use::

    from DiscAnalysisLib.relaxometry import load_series, run_relaxometry, write_outputs
    series = load_series("knee_t2_dicom/")                       # times from the DICOM headers
    result = run_relaxometry(series, labels=labelmap, kind="t2")  # maps + per-disc/zone summaries
    write_outputs(result, "out/")
"""

from .fitting import (
    KINDS,
    STATUS_DESCRIPTIONS,
    FitSettings,
    FitStatus,
    RelaxationFit,
    crlb_t_ms,
    fit_relaxation,
    noise_sigma_from_background,
    reduced_chi_square,
    validate_times,
)
from .pipeline import DISPLAY_RANGE_MS, RelaxometryResult, run_relaxometry, write_outputs
from .series import RelaxationSeries, load_series, resample_labels_to, split_4d
from .summary import DEFAULT_MAX_T_MS, RegionSummary, SummarySettings, summaries_to_csv, summarize_discs
from .zones import disc_ap_axis, disc_zones

__all__ = [
    "DEFAULT_MAX_T_MS",
    "DISPLAY_RANGE_MS",
    "KINDS",
    "STATUS_DESCRIPTIONS",
    "FitSettings",
    "FitStatus",
    "RegionSummary",
    "RelaxationFit",
    "RelaxationSeries",
    "RelaxometryResult",
    "SummarySettings",
    "crlb_t_ms",
    "disc_ap_axis",
    "disc_zones",
    "fit_relaxation",
    "load_series",
    "noise_sigma_from_background",
    "reduced_chi_square",
    "resample_labels_to",
    "run_relaxometry",
    "split_4d",
    "summaries_to_csv",
    "summarize_discs",
    "validate_times",
    "write_outputs",
]
