"""Real-data validation of the relaxometry fit (issue 3): reproduces the numbers in docs/validation.md.

    python scripts/validate_relaxometry.py [--data ../shared/data/relaxometry] [--only prostate|brain|knee]

Sets (see ../shared/data/README.md):
* prostate_t2_10echo (patbolan/t2mapdemo): in-vivo 10-echo prostate slice vs that project's non-linear
  least-squares (FIT_NLLS) reference maps; synthetic slices with ground-truth S0 / T maps.
  That project stores times and T in units of the longest echo time (TE_max = 145.2 ms: the synthetic
  series decay as exp(-(2 + i) / 11 / T), i.e. TE_i / TE_max with TE_i = 26.4 + 13.2 i ms); we fit in ms
  and convert their T with x 145.2 ms.
* brain_mese_32echo (qMRLab MWF demo): 32-echo brain, multi-exponential tissue.
* knee_t2_8echo_dicom: multi-echo DICOM (times from the headers).
* knee_t1rho_4tsl_dicom: one DICOM folder per spin-lock time (times from EchoTime).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DiscAnalysisLib.relaxometry import (  # noqa: E402
    FitSettings,
    FitStatus,
    crlb_t_ms,
    fit_relaxation,
    load_series,
    noise_sigma_from_background,
    reduced_chi_square,
)

TE_PROSTATE_MS = 26.4 + 13.2 * np.arange(10)
TE_MAX_MS = float(TE_PROSTATE_MS[-1])


def _arr(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _stats(x: np.ndarray) -> str:
    x = x[np.isfinite(x)]
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return f"median {med:.1f} (IQR {q1:.1f}-{q3:.1f}), mean {x.mean():.1f} +/- {x.std():.1f} ms, n = {x.size}"


def _timed_fit(series, times, mask=None, **kw):
    t0 = time.perf_counter()
    fit = fit_relaxation(series, times, mask, **kw)
    return fit, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- prostate
def prostate(root: Path) -> None:
    print("## Prostate in vivo (invivo2D_set1/000198) vs FIT_NLLS reference")
    img = _arr(root / "datasets/invivo2D_set1/images/invivo_000198.nii.gz")[:, 0]  # (10, 128, 128)
    ref = _arr(root / "predictions/INVIVO2D_SET1/FIT_NLLS/preds_000198.nii.gz")[:, 0]
    ref_t = ref[1].astype(np.float64) * TE_MAX_MS
    # The data set ships no prostate mask: we use the tissue mask "first echo > 10 % of its maximum".
    mask = img[0] > 0.1 * img[0].max()
    for offset in (False, True):
        fit, secs = _timed_fit(img, TE_PROSTATE_MS, mask, settings=FitSettings(offset=offset))
        ok = mask & (fit.status == FitStatus.FITTED) & np.isfinite(ref_t)
        d = np.abs(fit.t_ms[ok] - ref_t[ok])
        plaus = ok & (ref_t < 500) & (fit.t_ms < 500)
        dp = np.abs(fit.t_ms[plaus] - ref_t[plaus])
        signed = np.median(fit.t_ms[plaus] - ref_t[plaus])
        print(f"- model {'S0 e^(-t/T) + C' if offset else 'S0 e^(-t/T)'}: mask {mask.sum()} voxels, fitted {ok.sum()} "
              f"({secs * 1e3:.0f} ms); |dT2| median {np.median(d):.2e} ms, 95th pct {np.percentile(d, 95):.2e} ms, "
              f"max {d.max():.2e} ms; where both T2 < 500 ms ({plaus.sum()} voxels): median {np.median(dp):.2e} ms, "
              f"95th pct {np.percentile(dp, 95):.2e} ms, median signed (ours - ref) {signed:+.3f} ms; "
              f"status counts {fit.status_counts()}")
        if not offset:
            rel = np.median(fit.t_ms[plaus] / ref_t[plaus])
            print(f"  median ratio ours/ref {rel:.5f} (checks the TE_max unit conversion); our T2 in mask: "
                  f"{_stats(fit.t_ms[ok & (fit.t_ms < 500)])}")
            worst = ok & (np.abs(fit.t_ms - ref_t) > 1.0)
            if worst.any():
                print(f"  voxels with |dT2| > 1 ms: {worst.sum()}; their reference T2 median {np.median(ref_t[worst]):.0f} ms, "
                      f"first-echo signal median {np.median(img[0][worst]):.0f} vs {np.median(img[0][ok]):.0f} in the mask")

    print("\n## Prostate synthetic sets with ground truth (T in ms = label x 145.2)")
    cases = [
        ("synth_imagenet_1k_test", "synth_000001", "IMAGENET_TEST_1k", "preds_000001"),
        ("synth_imagenet_1k_train", "synth_000066", None, None),
        ("synth_urand_1k_train", "synth_000066", None, None),
    ]
    for ds, case, pred_ds, pred in cases:
        y = _arr(root / f"datasets/{ds}/images/{case}.nii.gz")[:, 0]
        lab = _arr(root / f"datasets/{ds}/labels/{case}.nii.gz")[:, 0]
        s0_true, t_true = lab[0], lab[1] * TE_MAX_MS
        fit, secs = _timed_fit(y, TE_PROSTATE_MS)
        ok = fit.status == FitStatus.FITTED
        # noise sigma from the residuals of the best voxels is not needed: report by S0 strata
        n_t = TE_PROSTATE_MS.size
        sigma = float(np.sqrt(np.sum(fit.rmse[ok].astype(np.float64) ** 2 * n_t) / (ok.sum() * (n_t - 2))))
        strata = (("all voxels", np.ones_like(ok)), ("S0 >= 0.5 (higher SNR)", s0_true >= 0.5),
                  ("S0 >= 0.5 and true T2 20-150 ms", (s0_true >= 0.5) & (t_true >= 20) & (t_true <= 150)))
        for name, sel in strata:
            s = sel & ok
            e = fit.t_ms[s] - t_true[s]
            line = (f"- {ds}/{case}, {name}: fitted {s.sum()}/{sel.sum()} ({secs * 1e3:.0f} ms for {y[0].size} voxels), "
                    f"bias {e.mean():+.2f} ms, median error {np.median(e):+.2f} ms, RMSE {np.sqrt(np.mean(e**2)):.2f} ms, "
                    f"median |error| {np.median(np.abs(e)):.2f} ms")
            if pred_ds:
                r = _arr(root / f"predictions/{pred_ds}/FIT_NLLS/{pred}.nii.gz")[:, 0][1] * TE_MAX_MS
                er = r[s] - t_true[s]
                dd = np.abs(fit.t_ms[s] - r[s])
                line += (f"; their FIT_NLLS: bias {er.mean():+.2f} ms, RMSE {np.sqrt(np.mean(er**2)):.2f} ms; "
                         f"ours vs theirs median |d| {np.median(dd):.2e} ms")
            if "20-150" in name:
                crlb = np.sqrt(np.mean([crlb_t_ms(a, b, TE_PROSTATE_MS, sigma) ** 2
                                        for a, b in zip(s0_true[s], t_true[s], strict=True)]))
                line += f"; CRLB {crlb:.2f} ms (sigma {sigma:.4f} from the pooled residuals), RMSE/CRLB {np.sqrt(np.mean(e**2)) / crlb:.2f}"
            print(line)
        print(f"  failed fits {100 * fit.failed_fraction():.2f} % ({fit.status_counts()})")


# ------------------------------------------------------------------------------------------------- brain
def brain(root: Path) -> None:
    import scipy.io as sio

    print("\n## Brain 32-echo MESE (qMRLab MWF demo): multi-exponential voxels and the fit-quality outputs")
    data = sio.loadmat(root / "MET2data.mat")["MET2data"][:, :, 0, :].astype(np.float64)  # (64, 64, 32)
    mask = sio.loadmat(root / "Mask.mat")["Mask"].astype(bool)
    te = 10.0 * np.arange(1, 33)
    series = np.moveaxis(data, -1, 0)  # (32, 64, 64)
    # Noise sigma from the background (magnitude data: Rayleigh, mean = sigma sqrt(pi/2)), far from the head.
    bg = ~mask
    bg_vals = series[-1][bg]
    bg_vals = bg_vals[bg_vals < np.percentile(bg_vals, 50)]
    sigma = noise_sigma_from_background(bg_vals)
    for first in (0, 1):
        fit, secs = _timed_fit(series[first:], te[first:], mask)
        ok = mask & (fit.status == FitStatus.FITTED)
        chi2 = reduced_chi_square(fit, sigma)
        # An independent multi-exponential signature: T2 from the early echoes (<= 80 ms) vs late (>= 160 ms).
        early, _ = _timed_fit(series[first:8], te[first:8], mask)
        late, _ = _timed_fit(series[15:], te[15:], mask)
        both = ok & (early.status == FitStatus.FITTED) & (late.status == FitStatus.FITTED)
        ratio = late.t_ms[both] / early.t_ms[both]
        from scipy.stats import mannwhitneyu, spearmanr

        rho = spearmanr(chi2[both], ratio).statistic
        c = chi2[both]
        one_minus_r2 = 1.0 - fit.r2[both]
        mono, multi = ratio < 1.1, ratio > 1.5
        auc_chi2 = mannwhitneyu(c[multi], c[mono]).statistic / (multi.sum() * mono.sum())
        auc_r2 = mannwhitneyu(one_minus_r2[multi], one_minus_r2[mono]).statistic / (multi.sum() * mono.sum())
        thr = np.percentile(c[mono], 95)
        print(f"- echoes {first + 1}..32 ({secs * 1e3:.0f} ms, {mask.sum()} mask voxels): T2 {_stats(fit.t_ms[ok])}; "
              f"status {fit.status_counts()}; R2 median {np.median(fit.r2[ok]):.4f} (min {np.min(fit.r2[ok]):.4f}); "
              f"noise sigma {sigma:.1f} (background, Rayleigh); reduced chi-square = SSE / ((n - 2) sigma^2): median "
              f"{np.median(chi2[ok]):.1f} (1 for a mono-exponential voxel with Gaussian noise)")
        print(f"  multi-exponential signature, late (>= 160 ms) / early (<= 80 ms) T2 ratio: median {np.median(ratio):.2f}; "
              f"{mono.sum()} voxels < 1.1 (mono-like), {multi.sum()} > 1.5 (multi-exponential); Spearman(chi2, ratio) "
              f"= {rho:.2f}; AUC separating the two groups: chi2 {auc_chi2:.3f}, 1 - R2 {auc_r2:.3f}; a chi2 threshold at "
              f"the 95th percentile of the mono-like voxels ({thr:.1f}) flags {100 * np.mean(c[multi] > thr):.1f} % of "
              f"the multi-exponential voxels; chi2 median mono-like {np.median(c[mono]):.1f} vs multi "
              f"{np.median(c[multi]):.1f}")
        if first == 0:
            odd_even = np.median(series[0][mask] / series[1][mask])
            print(f"  echo1/echo2 signal ratio median {odd_even:.3f} (stimulated-echo pattern of MESE: not mono-exponential "
                  "in the first echoes)")


# -------------------------------------------------------------------------------------------------- knee
def knee(root: Path) -> None:
    print("\n## Knee T2, 8-echo DICOM")
    t0 = time.perf_counter()
    s = load_series(root / "knee_t2_8echo_dicom")
    load_s = time.perf_counter() - t0
    fit, secs = _timed_fit(list(s.images), s.times_ms)
    ok = fit.status == FitStatus.FITTED
    s0 = fit.s0
    fg = ok & (s0 > np.percentile(s0[ok], 50))
    print(f"- times {', '.join(f'{t:g}' for t in s.times_ms)} ms from {s.times_source}; {fit.t_ms.size} voxels "
          f"(load {load_s:.1f} s, fit {secs:.2f} s = {fit.t_ms.size / secs / 1e6:.2f} Mvoxel/s); status {fit.status_counts()}")
    print(f"- T2 in the brighter half of fitted voxels (S0 above median), T2 <= 150 ms: "
          f"{_stats(fit.t_ms[fg & (fit.t_ms <= 150)])}")

    print("\n## Knee T1rho, 4 spin-lock times (one DICOM folder each)")
    folders = sorted((root / "knee_t1rho_4tsl_dicom").iterdir())
    s = load_series(folders, kind="t1rho")
    fit, secs = _timed_fit(list(s.images), s.times_ms, kind="t1rho")
    ok = fit.status == FitStatus.FITTED
    print(f"- times {', '.join(f'{t:g}' for t in s.times_ms)} ms from {s.times_source}; {fit.t_ms.size} voxels, fit "
          f"{secs:.2f} s ({fit.t_ms.size / secs / 1e6:.2f} Mvoxel/s); status {fit.status_counts()}")
    first = sitk.GetArrayFromImage(s.images[0]).astype(np.float64)
    fg = first > np.percentile(first, 60)  # tissue (the field of view is mostly background)
    lo, hi = np.percentile(first[fg], [70, 98])
    bright = ok & fg & (first >= lo) & (first <= hi) & (fit.r2 >= 0.5) & (fit.t_ms <= 250)
    print(f"- bright tissue (TSL 1 ms signal between the 70th and 98th percentile of the foreground, fitted, R2 >= 0.5, "
          f"T1rho <= 250 ms): {_stats(fit.t_ms[bright])}; 10th-90th percentile "
          f"{np.percentile(fit.t_ms[bright], 10):.1f}-{np.percentile(fit.t_ms[bright], 90):.1f} ms. "
          "Reference (pyKNEEr, femoral cartilage of this knee): about 52 +/- 28 ms.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("DISCANALYSIS_DATA", Path(__file__).resolve().parents[1].parent / "shared/data"))
    ap.add_argument("--data", type=Path, default=default / "relaxometry",
                    help="the relaxometry data folder (default $DISCANALYSIS_DATA/relaxometry or ../shared/data/relaxometry)")
    ap.add_argument("--only", choices=("prostate", "brain", "knee"), action="append")
    args = ap.parse_args()
    if not args.data.exists():
        print(f"data folder {args.data} not found (pass --data)", file=sys.stderr)
        return 2
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    only = set(args.only or ("prostate", "brain", "knee"))
    if "prostate" in only:
        prostate(args.data / "prostate_t2_10echo")
    if "brain" in only:
        brain(args.data / "brain_mese_32echo")
    if "knee" in only:
        knee(args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
