"""Signal markers: BianqueNet's histogram ΔSI and the regional (zone) statistics.

ΔSI (signal intensity difference), after BianqueNet
---------------------------------------------------
Zheng et al. (Nat Commun 2022; preprint doi:10.21203/rs.3.rs-864336/v1, "Parameters Calculation based on
Pfirrmann Grading System") quantify the blurring of the nucleus/annulus boundary from the histogram of the
disc's pixels on the mid-sagittal T2w slice; the paper's text defers details to its supplement, which the
authors' code (``function/calcu_signal_strength.py`` of github.com/no-saint-no-angel/BianqueNet) spells out:

1. histogram of the disc's pixel values with one bin per grey level;
2. first peak ``p1`` = the most frequent value (the mode);
3. second peak ``p2`` = the value ``k`` maximising ``|k - 0.95 * p1| * h[k]`` (counts weighted by their
   distance from just below the first peak, which picks the other population: the nucleus if ``p1`` is
   the annulus, or vice versa);
4. ``ΔSI = |p1 - p2| * 255 / m_CSF`` with ``m_CSF`` the most frequent value in the cerebrospinal fluid
   (reference tissue), i.e. ΔSI on a scale where CSF is 255.

Their images are 8-bit exports (grey levels 0..255). For 8-bit unsigned images we use the grey levels as
they are; any other image is first quantised to the grid ``round(255 * I / median_CSF)`` (CSF median = 255)
so that one bin is 1/255 of the CSF signal, as close to an 8-bit export as a scanner-scale image allows.
ΔSI is a ratio, so the scale of the image does not matter; a non-zero image offset would.

Regional markers, after the fissure paper
------------------------------------------
Lagerstrand et al. (Eur Spine J 2022;31:1992-9, "Extraction of MRI markers"): mean signal and its standard
deviation in the whole disc and in 5 equally large ventral-dorsal sub-regions, over the 5 most central
sagittal slices of the disc (12 markers). SD uses the N-1 denominator (MATLAB's ``std``, their tool's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Weight of the first peak in BianqueNet's second-peak search (calcu_signal_strength.py).
SECOND_PEAK_FACTOR = 0.95
#: ΔSI scale: CSF's most frequent grey level maps to this value.
DELTA_SI_SCALE = 255.0

QUANT_8BIT = "8-bit grey levels"
QUANT_CSF = "grey levels with CSF median = 255"


@dataclass(frozen=True)
class DeltaSI:
    """ΔSI and the histogram values it came from (in the quantised grey levels ``quantisation``)."""

    delta_si: float
    first_peak: int
    second_peak: int
    csf_peak: int
    quantisation: str


def _mode(values: np.ndarray) -> int:
    """Most frequent integer value; ties go to the lowest value (as np.argmax over a histogram)."""
    v = values.astype(np.int64)
    lo = int(v.min())
    hist = np.bincount(v - lo)
    return int(np.argmax(hist)) + lo


def _second_peak(values: np.ndarray, first: int) -> int:
    v = values.astype(np.int64)
    lo = min(int(v.min()), 0)
    hist = np.bincount(v - lo).astype(float)
    k = np.arange(hist.size) + lo
    score = np.abs(k - SECOND_PEAK_FACTOR * first) * hist
    return int(k[int(np.argmax(score))])


def quantise(values: np.ndarray, csf_values: np.ndarray, is_uint8: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Integer grey levels for the histogram: native for 8-bit images, else CSF median = 255."""
    if is_uint8:
        return values.astype(np.int64), csf_values.astype(np.int64), QUANT_8BIT
    ref = float(np.median(csf_values))
    if not ref > 0:
        raise ValueError("CSF median is not positive")
    scale = DELTA_SI_SCALE / ref
    q = lambda x: np.floor(np.asarray(x, dtype=float) * scale + 0.5).astype(np.int64)  # noqa: E731
    return q(values), q(csf_values), QUANT_CSF


def delta_si(disc_values: np.ndarray, csf_values: np.ndarray, *, is_uint8: bool) -> DeltaSI:
    """BianqueNet's ΔSI of one disc (see the module docstring). Raises ValueError on unusable input."""
    if disc_values.size < 2 or csf_values.size < 1:
        raise ValueError("too few pixels")
    d, c, how = quantise(disc_values, csf_values, is_uint8)
    if d.min() < 0 or c.min() < 0:
        raise ValueError("negative grey levels")
    m_csf = _mode(c)
    if m_csf <= 0:
        raise ValueError("CSF peak is zero")
    p1 = _mode(d)
    p2 = _second_peak(d, p1)
    return DeltaSI(abs(p1 - p2) * DELTA_SI_SCALE / m_csf, p1, p2, m_csf, how)


def mean_sd(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and sample SD (N-1) of the finite values; None where undefined."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)
