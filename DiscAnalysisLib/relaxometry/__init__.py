"""T2 and T1rho relaxometry: series loading, voxel-wise mono-exponential fits, per-disc summaries."""

from .fitting import (
    KINDS,
    STATUS_DESCRIPTIONS,
    FitSettings,
    FitStatus,
    RelaxationFit,
    crlb_t_ms,
    fit_relaxation,
    validate_times,
)

__all__ = [
    "KINDS",
    "STATUS_DESCRIPTIONS",
    "FitSettings",
    "FitStatus",
    "RelaxationFit",
    "crlb_t_ms",
    "fit_relaxation",
    "validate_times",
]
