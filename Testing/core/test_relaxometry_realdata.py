"""Relaxometry on the real series in ../shared/data/relaxometry (skipped when the data are absent)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_data
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.relaxometry import FitStatus, fit_relaxation, load_series

pytestmark = pytest.mark.realdata

TE_PROSTATE_MS = 26.4 + 13.2 * np.arange(10)


def test_prostate_in_vivo_matches_the_reference_nonlinear_fit():
    root = shared_data("relaxometry", "prostate_t2_10echo")
    series = load_series(root / "datasets/invivo2D_set1/images/invivo_000198.nii.gz", list(TE_PROSTATE_MS))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "predictions/INVIVO2D_SET1/FIT_NLLS/preds_000198.nii.gz")))
    ref_t2_ms = ref[1, 0] * TE_PROSTATE_MS[-1]  # the reference stores T in units of the longest TE
    first = sitk.GetArrayFromImage(series.images[0])[0]
    mask = first > 0.1 * first.max()
    fit = fit_relaxation(list(series.images), series.times_ms, mask[None])
    ok = mask & (fit.status[0] == FitStatus.FITTED)
    d = np.abs(fit.t_ms[0][ok] - ref_t2_ms[ok])
    assert ok.sum() > 0.99 * mask.sum()
    assert np.median(d) < 0.01 and np.percentile(d, 95) < 0.05


def test_knee_t1rho_spin_lock_times_come_from_echo_time_and_are_checked():
    root = shared_data("relaxometry", "knee_t1rho_4tsl_dicom")
    folders = sorted(root.iterdir())
    series = load_series(folders, kind="t1rho")
    assert series.times_ms == (1.0, 10.0, 30.0, 60.0) and series.times_source == "header"
    with pytest.raises(InputError, match="header of .* is 60 ms but --times-ms gives 50 ms"):
        load_series(folders, [1, 10, 30, 50], kind="t1rho")
