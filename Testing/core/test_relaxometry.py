"""Relaxometry: fit engine, series loading, zones, summaries and the ``fit`` CLI, on data of known truth."""

from __future__ import annotations

import csv
import locale
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk

from DiscAnalysisLib import image_io
from DiscAnalysisLib.cli.main import main
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.relaxometry import (
    FitSettings,
    FitStatus,
    SummarySettings,
    crlb_t_ms,
    disc_zones,
    fit_relaxation,
    load_series,
    resample_labels_to,
    run_relaxometry,
    summarize_discs,
)

TE = np.array([10.0, 25.0, 40.0, 55.0, 70.0, 85.0])


def _series(s0, t, times, sigma=0.0, seed=0, offset=0.0):
    s0 = np.asarray(s0, float)
    t = np.asarray(t, float)
    clean = s0[None] * np.exp(-np.asarray(times)[(slice(None),) + (None,) * t.ndim] / t[None]) + offset
    if sigma == 0:
        return clean
    rng = np.random.default_rng(seed)
    return np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)


# ------------------------------------------------------------------------------------------------- fit
@pytest.mark.parametrize("times", [TE, np.array([1.0, 10.0, 30.0, 60.0])], ids=["uniform", "non-uniform"])
def test_noise_free_exact_recovery(times):
    rng = np.random.default_rng(1)
    t_true = rng.uniform(20, 150, (3, 20, 30))
    s0_true = rng.uniform(200, 2000, t_true.shape)
    fit = fit_relaxation(_series(s0_true, t_true, times), times)
    assert np.all(fit.status == FitStatus.FITTED)
    np.testing.assert_allclose(fit.t_ms, t_true, rtol=1e-5)
    np.testing.assert_allclose(fit.s0, s0_true, rtol=1e-5)
    assert np.all(fit.r2 > 0.999999)
    assert fit.t_ms.shape == t_true.shape and fit.map_name == "T2_ms"


def test_offset_model_recovers_s0_t_and_offset():
    rng = np.random.default_rng(2)
    t_true = rng.uniform(30, 120, 500)
    y = _series(1000.0 * np.ones(500), t_true, TE, offset=40.0)
    two = fit_relaxation(y, TE)
    three = fit_relaxation(y, TE, settings=FitSettings(offset=True))
    np.testing.assert_allclose(three.t_ms, t_true, rtol=1e-4)
    np.testing.assert_allclose(three.offset, 40.0, atol=0.05)
    # the two-parameter model absorbs the offset into a longer T
    assert np.median(two.t_ms - t_true) > 1.0


def test_agrees_with_curve_fit_on_noisy_data():
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(3)
    t_true = rng.uniform(20, 150, 2000)
    y = _series(np.full(2000, 1000.0), t_true, TE, sigma=20.0, seed=4)
    fit = fit_relaxation(y, TE)
    diffs = []
    for i in rng.choice(2000, 60, replace=False):
        p, _ = curve_fit(lambda t, a, b: a * np.exp(-t / b), TE, y[:, i], p0=(y[0, i], 50.0))
        diffs.append(abs(p[1] - fit.t_ms[i]))
    assert np.median(diffs) <= 0.01
    assert fit.failed_fraction() < 0.001


def test_rmse_near_crlb_and_small_bias():
    rng = np.random.default_rng(5)
    t_true = rng.uniform(20, 150, 20000)
    sigma = 1000.0 / 50
    y = _series(np.full(t_true.size, 1000.0), t_true, TE, sigma=sigma, seed=6)
    fit = fit_relaxation(y, TE)
    err = fit.t_ms - t_true
    crlb = np.sqrt(np.mean([crlb_t_ms(1000.0, t, TE, sigma) ** 2 for t in t_true[:2000]]))
    assert abs(err.mean()) < 0.6
    assert np.sqrt(np.mean(err**2)) < 1.08 * crlb


@pytest.mark.parametrize("engine", ["numpy", "compiled"])
def test_every_status_code_is_reachable(engine):
    if engine == "compiled":
        pytest.importorskip("numba")
    n = 6
    y = np.zeros((TE.size, n))
    y[:, 0] = 1000 * np.exp(-TE / 60)  # fitted
    y[:, 1] = 1000 * np.exp(-TE / 60)  # masked
    y[:, 2] = np.nan  # too few points
    y[0, 2] = 500
    y[:, 3] = 100 + TE  # not decaying (increasing)
    y[:, 4] = 1000 * np.exp(-TE / 1e5)  # T far beyond 10 x the last echo: out of bounds
    y[:, 5] = 1000 * np.exp(-TE / 60) * (1 + 0.3 * np.cos(TE))  # needs many iterations
    mask = np.array([1, 0, 1, 1, 1, 1])
    fit = fit_relaxation(y, TE, mask, FitSettings(max_iterations=3, tolerance=1e-8, engine=engine))
    assert fit.status[5] == FitStatus.NOT_CONVERGED and np.isfinite(fit.t_ms[5])  # last estimate kept
    fit = fit_relaxation(y, TE, mask, FitSettings(engine=engine))
    assert list(fit.status[:5]) == [FitStatus.FITTED, FitStatus.MASKED, FitStatus.TOO_FEW_POINTS,
                                    FitStatus.NOT_DECAYING, FitStatus.OUT_OF_BOUNDS]
    assert np.isnan(fit.t_ms[1]) and np.isnan(fit.t_ms[2])
    counts = fit.status_counts()
    assert counts["masked"] == 1 and sum(counts.values()) == n


@pytest.mark.parametrize("offset", [False, True], ids=["2-parameter", "offset"])
@pytest.mark.parametrize("times", [TE, np.array([1.0, 10.0, 30.0, 60.0, 100.0])], ids=["uniform", "non-uniform"])
def test_compiled_and_numpy_engines_give_the_same_maps(times, offset):
    """The numba kernel is the numpy LM step for step: same statuses, same maps to rounding, including
    voxels with missing points (weights), non-decaying, zero and hopeless voxels."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(11)
    n = 3000
    t_true = rng.uniform(15, 200, n)
    y = _series(rng.uniform(300, 3000, n), t_true, times, sigma=25.0, seed=12, offset=30.0 if offset else 0.0)
    y[rng.integers(0, times.size, 200), rng.integers(0, n, 200)] = np.nan  # missing points: weighted voxels
    y[:, 0] = 0.0
    y[:, 1] = 100 + times  # increasing
    y[:, 2] = 1000 * np.exp(-times / 60) * (1 + 0.4 * np.cos(times))
    fits = {e: fit_relaxation(y, times, settings=FitSettings(offset=offset, engine=e, tolerance=1e-8))
            for e in ("numpy", "compiled")}
    a, b = fits["numpy"], fits["compiled"]
    same = a.status == b.status
    # The start values differ in rounding (float32 logs in numpy, float64 in the kernel), so a voxel that
    # hovers at the convergence threshold may land on either side ("fitted" / "not converged"): rare for
    # the 2-parameter model, more common for the ill-conditioned 3-parameter one on 5 noisy points.
    assert same.mean() >= (0.99 if offset else 0.998)
    hovering = {FitStatus.FITTED, FitStatus.NOT_CONVERGED}
    assert all(int(x) in hovering and int(z) in hovering for x, z in zip(a.status[~same], b.status[~same], strict=True))
    both = same & (a.status == FitStatus.FITTED)
    for name in ("t_ms", "s0", "r2", "rmse") + (("offset",) if offset else ()):
        np.testing.assert_allclose(getattr(b, name)[both], getattr(a, name)[both], rtol=2e-4, atol=1e-4,
                                   err_msg=name)
        np.testing.assert_array_equal(np.isnan(getattr(b, name)), np.isnan(getattr(a, name)))
    assert len(set(a.status.tolist())) >= 3  # several statuses really compared


def test_engine_setting_is_checked():
    from DiscAnalysisLib.relaxometry.fitting import AUTO_COMPILED_MIN_VOXELS, uses_compiled

    with pytest.raises(InputError, match="engine"):
        FitSettings(engine="gpu")
    assert not uses_compiled(FitSettings(engine="numpy"), 10**7)
    assert not uses_compiled(FitSettings(), AUTO_COMPILED_MIN_VOXELS - 1)  # small fits: numba load not worth it
    try:
        import numba  # noqa: F401
    except ImportError:
        assert not uses_compiled(FitSettings(), 10**7)
    else:
        assert uses_compiled(FitSettings(), AUTO_COMPILED_MIN_VOXELS) and uses_compiled(FitSettings(engine="compiled"), 1)


def test_nan_negative_and_zero_signal_give_statuses_not_crashes():
    y = np.tile(1000 * np.exp(-TE / 80)[:, None], (1, 5))
    y[2, 0] = np.nan  # one missing point: still fitted from the other 5
    y[:, 1] = 0.0  # no signal
    y[:, 2] = -5.0  # negative
    y[3, 3] = -10.0  # one negative point among positive ones: it is used by LM, skipped by the start
    y[:, 4] = np.inf
    fit = fit_relaxation(y, TE)
    assert fit.status[0] == FitStatus.FITTED and abs(fit.t_ms[0] - 80) < 1e-3
    assert fit.status[1] == FitStatus.TOO_FEW_POINTS
    assert fit.status[2] == FitStatus.TOO_FEW_POINTS
    assert fit.status[3] == FitStatus.FITTED
    assert fit.status[4] == FitStatus.TOO_FEW_POINTS


@pytest.mark.parametrize(
    "times, n, match",
    [
        ([10.0], 1, "at least 2"),
        ([10.0, 10.0, 20.0], 3, "Duplicate"),
        ([10.0, 20.0], 3, "one echo"),
        ([10.0, float("nan")], 2, "finite"),
        ([-1.0, 10.0], 2, ">= 0"),
    ],
)
def test_bad_times_are_input_errors(times, n, match):
    with pytest.raises(InputError, match=match):
        fit_relaxation(np.ones((n, 4)), times)


def test_unsorted_times_are_sorted_with_the_volumes():
    t_true = np.full(10, 70.0)
    y = _series(np.full(10, 900.0), t_true, TE)
    order = np.array([3, 0, 5, 1, 4, 2])
    fit = fit_relaxation(y[order], TE[order])
    np.testing.assert_allclose(fit.t_ms, 70.0, rtol=1e-6)
    assert fit.times_ms == tuple(TE)


def test_images_on_different_grids_and_empty_mask_are_refused():
    a = sitk.GetImageFromArray(np.ones((2, 3, 4), np.float32))
    b = sitk.GetImageFromArray(np.ones((2, 3, 4), np.float32))
    b.SetSpacing((1.0, 1.0, 2.0))
    with pytest.raises(InputError, match="same grid"):
        fit_relaxation([a, b], [10, 20])
    with pytest.raises(InputError, match="empty"):
        fit_relaxation([a, a], [10, 20], mask=np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="shape"):
        fit_relaxation([a, a], [10, 20], mask=np.ones((2, 3, 5)))


def test_working_memory_is_bounded_by_chunking():
    shape = (8, 128, 256)  # 262k voxels x 6 echoes: unchunked float64 work arrays alone would be > 100 MB
    rng = np.random.default_rng(7)
    t_true = rng.uniform(20, 150, shape).astype(np.float32)
    images = [sitk.GetImageFromArray((1000 * np.exp(-te / t_true)).astype(np.float32)) for te in TE]
    tracemalloc.start()
    fit = fit_relaxation(images, TE, settings=FitSettings(memory_budget_mb=16))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    outputs = fit.t_ms.size * (4 * 4 + 1)
    assert (peak - outputs) / 1e6 < 40, f"working memory {(peak - outputs) / 1e6:.0f} MB"
    assert fit.failed_fraction() == 0.0


def test_progress_reports_and_geometry_is_kept():
    img = [sitk.GetImageFromArray(np.full((2, 3, 4), v, np.float32)) for v in (1000.0, 600.0, 360.0)]
    for im in img:
        im.SetSpacing((0.5, 0.7, 3.0))
        im.SetOrigin((1.0, -2.0, 3.0))
        im.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    seen = []
    fit = fit_relaxation(img, [10, 20, 30], progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0
    maps = fit.to_images()
    assert set(maps) == {"S0", "T2_ms", "R2", "RMSE", "status"}
    for im in maps.values():
        assert im.GetSpacing() == img[0].GetSpacing() and im.GetDirection() == img[0].GetDirection()
        assert im.GetOrigin() == img[0].GetOrigin()
    assert abs(float(sitk.GetArrayViewFromImage(maps["T2_ms"])[0, 0, 0]) - 10 / np.log(1000 / 600)) < 1e-3


# ----------------------------------------------------------------------------------------------- zones
def test_zones_run_ventral_to_dorsal_along_a_tilted_disc():
    # sagittal slab, array (k, j, i); i runs anterior -> posterior (direction as in the phantom)
    direction = (0, 0, -1, 1, 0, 0, 0, -1, 0)
    mask = np.zeros((3, 60, 60), bool)
    jj, ii = np.mgrid[0:60, 0:60]
    tilted = np.abs((jj - 30) - 0.3 * (ii - 30)) < 3  # a band tilted 17 degrees
    mask[:, tilted & (ii > 10) & (ii < 50)] = True
    zones = disc_zones(mask, (1.0, 1.0, 4.0), direction)
    assert set(np.unique(zones[mask])) == {1, 2, 3, 4, 5}
    assert np.all(zones[~mask] == 0)
    mean_i = [ii[zones[1] == z].mean() for z in range(1, 6)]
    assert np.all(np.diff(mean_i) > 0)  # zone 1 anterior (small i) ... zone 5 posterior
    # roughly equal lengths along the disc: each zone holds about a fifth of the voxels
    counts = np.bincount(zones[mask])[1:]
    assert counts.min() > 0.6 * counts.max()


# ------------------------------------------------------------------------------------------- summaries
def _labelled_fit():
    labels = np.zeros((1, 10, 50), np.uint8)
    labels[0, 2:8, 0:50] = 123  # L4-L5 only
    t = np.full(labels.shape, 100.0)
    t[0, 2, :5] = 200.0  # above the T2 threshold
    y = _series(np.full(labels.shape, 1000.0), t, TE)
    y[:, 0, 3, 0] = 100 + TE  # increasing signal: not decaying
    return fit_relaxation(y, TE, labels), labels


def test_summaries_count_exclusions_and_never_hide_a_nan():
    fit, labels = _labelled_fit()
    rows = summarize_discs(fit, labels, SummarySettings())
    assert len(rows) == 5 * 6
    disc = next(r for r in rows if r.level == "L4-L5" and r.zone == 0)
    assert disc.n_voxels == 300
    assert disc.n_excluded_above_max == 5
    assert disc.n_excluded_not_decaying == 1
    assert disc.n_included == 294
    assert abs(disc.median_ms - 100.0) < 1e-3 and disc.iqr_ms < 1e-3
    absent = [r for r in rows if r.level == "L1-L2"]
    assert all(r.n_voxels == 0 and np.isnan(r.mean_ms) and r.reason for r in absent)
    zone_rows = [r for r in rows if r.level == "L4-L5" and r.zone > 0]
    assert sum(r.n_voxels for r in zone_rows) == 300
    for r in rows:  # a NaN statistic always comes with a count and a reason
        if np.isnan(r.mean_ms):
            assert r.n_included == 0 and r.reason
    stricter = summarize_discs(fit, labels, SummarySettings(max_t_ms=90.0))
    assert next(r for r in stricter if r.level == "L4-L5" and r.zone == 0).n_included == 0


# ------------------------------------------------------------------------------------ loading and CLI
def _write_series(tmp_path, with_times=True):
    rng = np.random.default_rng(8)
    shape = (4, 20, 24)
    t_true = rng.uniform(40, 120, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 5:10, 4:20] = 122
    labels[1:3, 12:16, 4:20] = 123
    paths = []
    for n, te in enumerate(TE, start=1):
        im = sitk.GetImageFromArray((800 * np.exp(-te / t_true)).astype(np.float32))
        im.SetSpacing((0.8, 0.9, 4.0))
        im.SetOrigin((-5.0, 10.0, 2.5))
        im.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
        if with_times:
            im.SetMetaData(image_io.TIMES_KEY, f"{te:g}")
        paths.append(image_io.write_image(im, tmp_path / f"echo_{n:02d}.nrrd"))
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(sitk.ReadImage(str(paths[0])))
    lab_path = image_io.write_image(lab, tmp_path / "labels.nrrd")
    return paths, lab_path, t_true, labels


def test_load_series_times_from_headers_and_disagreement(tmp_path):
    paths, _, _, _ = _write_series(tmp_path)
    s = load_series(list(reversed(paths)))
    assert s.times_ms == tuple(TE) and s.times_source == "header"
    assert load_series(paths, list(TE)).times_source == "header and user (agree)"
    wrong = list(TE)
    wrong[2] = 41.0
    with pytest.raises(InputError, match=r"header of .*echo_03.* is 40 ms but --times-ms gives 41 ms"):
        load_series(paths, wrong)
    with pytest.raises(InputError, match="one per volume"):
        load_series(paths, list(TE[:-1]))
    with pytest.raises(InputError, match="single volume"):
        load_series(paths[:1])
    with pytest.raises(InputError, match="not found"):
        load_series([tmp_path / "missing.nrrd", paths[0]])


def test_load_series_without_header_times_needs_user_times(tmp_path):
    paths, _, _, _ = _write_series(tmp_path, with_times=False)
    with pytest.raises(InputError, match="--times-ms"):
        load_series(paths)
    assert load_series(paths, list(TE)).times_source == "user"


def test_load_4d_image_and_grid_mismatch(tmp_path):
    vols = [sitk.GetImageFromArray(np.full((3, 4, 5), v, np.float32)) for v in (900.0, 500.0, 300.0)]
    four_d = sitk.JoinSeries(vols)
    path = image_io.write_image(four_d, tmp_path / "series4d.nii.gz")
    s = load_series(path, [10, 30, 50])
    assert len(s.images) == 3 and s.images[0].GetDimension() == 3
    with pytest.raises(InputError, match="--times-ms"):
        load_series(path)
    other = sitk.GetImageFromArray(np.ones((3, 4, 6), np.float32))
    p1 = image_io.write_image(vols[0], tmp_path / "a.nrrd")
    p2 = image_io.write_image(other, tmp_path / "b.nrrd")
    with pytest.raises(InputError, match="same grid"):
        load_series([p1, p2], [10, 20])


def test_cli_fit_round_trip_keeps_geometry_and_writes_per_disc_csv(tmp_path, capsys):
    paths, lab_path, t_true, labels = _write_series(tmp_path)
    out = tmp_path / "out"
    rc = main(["--progress", "none", "fit", *map(str, paths), "--mask", str(lab_path), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    t2 = sitk.ReadImage(str(out / "T2_ms.nrrd"))
    ref = sitk.ReadImage(str(paths[0]))
    assert t2.GetSpacing() == ref.GetSpacing() and t2.GetOrigin() == ref.GetOrigin()
    assert t2.GetDirection() == ref.GetDirection()
    arr = sitk.GetArrayFromImage(t2)
    inside = labels > 0
    np.testing.assert_allclose(arr[inside], t_true[inside], rtol=1e-4)
    status = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "T2_status.nrrd")))
    assert np.all(status[~inside] == FitStatus.MASKED)
    rows = list(csv.DictReader((out / "T2_per_disc.csv").open()))
    assert len(rows) == 30
    l3 = next(r for r in rows if r["level"] == "L3-L4" and r["zone"] == "0")
    assert int(l3["n_included"]) == int((labels == 122).sum())
    assert abs(float(l3["median_ms"]) - float(np.median(t_true[labels == 122]))) < 0.01
    assert "L3-L4: median" in capsys.readouterr().out
    # bad input through the CLI: one line, exit code 2
    rc = main(["--progress", "none", "fit", str(paths[0]), "--out", str(out)])
    assert rc == 2


def test_labels_on_another_grid_are_resampled_and_disjoint_ones_refused(tmp_path):
    paths, lab_path, _, labels = _write_series(tmp_path)
    ref = sitk.ReadImage(str(paths[0]))
    lab = sitk.ReadImage(str(lab_path))
    fine = sitk.Resample(lab, [s * 2 for s in lab.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                         lab.GetOrigin(), [s / 2 for s in lab.GetSpacing()], lab.GetDirection(), 0, lab.GetPixelID())
    back = resample_labels_to(fine, ref)
    assert (sitk.GetArrayViewFromImage(back) == labels).mean() > 0.95
    far = sitk.Image(lab)
    far.SetOrigin((1000.0, 1000.0, 1000.0))
    with pytest.raises(InputError, match="overlap"):
        resample_labels_to(far, ref)


def test_run_relaxometry_on_phantom_matches_truth():
    from DiscAnalysisLib.phantom import PhantomSettings, make_phantom

    ph = make_phantom(PhantomSettings(size=(96, 160, 3), spacing_mm=(1.5, 1.5, 4.0), snr=float("inf")))
    result = run_relaxometry(list(ph.t2_series), ph.t2_echo_times_ms, ph.labels, kind="t2")
    truth = sitk.GetArrayFromImage(ph.t2_ms)
    lab = sitk.GetArrayFromImage(ph.labels)
    fit = result.fit
    inside = (lab >= 120) & (fit.status == FitStatus.FITTED)
    np.testing.assert_allclose(fit.t_ms[inside], truth[inside], rtol=1e-3)
    assert all(r.n_included > 0 for r in result.disc_rows())


def test_reduced_chi_square_flags_a_bi_exponential_voxel():
    from DiscAnalysisLib.relaxometry import noise_sigma_from_background, reduced_chi_square

    rng = np.random.default_rng(9)
    te = 10.0 * np.arange(1, 33)
    mono = 1000 * np.exp(-te / 80)
    bi = 300 * np.exp(-te / 15) + 700 * np.exp(-te / 90)
    sigma = 5.0
    y = np.stack([mono, bi], axis=1)[:, :, None] + rng.normal(0, sigma, (32, 2, 2000))
    fit = fit_relaxation(y, te)
    chi2 = reduced_chi_square(fit, sigma)
    assert 0.8 < np.median(chi2[0]) < 1.2
    assert np.median(chi2[1]) > 5 and np.all(fit.status[1] == FitStatus.FITTED)
    background = np.hypot(rng.normal(0, 3.0, 20000), rng.normal(0, 3.0, 20000))
    assert abs(noise_sigma_from_background(background) - 3.0) < 0.1


def _write_dicom_series(folder, echo_times_ms=None, n_echoes=2, n_slices=3):
    """One DICOM series with n_echoes x n_slices files (EchoNumbers always, EchoTime when given).

    GDCM's DICOM writer switches the process's C locale to "C" (ASCII); it is restored afterwards so
    that later tests' default text encoding stays UTF-8.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_files(folder, echo_times_ms, n_echoes, n_slices)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_files(folder, echo_times_ms, n_echoes, n_slices):
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for e in range(n_echoes):
        for z in range(n_slices):
            im = sitk.GetImageFromArray(np.full((1, 8, 8), 1000 * 0.6**e + z, np.int16))
            im.SetSpacing((1.0, 1.0, 2.0))
            tags = {"0008|0060": "MR", "0020|000e": "1.2.826.0.1.3680043.2.1125.9.1", "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
                    "0008|0018": f"1.2.826.0.1.3680043.2.1125.9.2.{e}.{z}", "0020|0032": f"0\\0\\{2.0 * z}",
                    "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0086": str(e + 1), "0020|0013": str(e * n_slices + z + 1),
                    "0028|0030": "1\\1"}
            if echo_times_ms is not None:
                tags["0018|0081"] = f"{echo_times_ms[e]:g}"
            for k, v in tags.items():
                im.SetMetaData(k, v)
            writer.SetFileName(str(folder / f"im{e}_{z}.dcm"))
            writer.Execute(im)


def test_dicom_multi_echo_by_echo_time_and_by_echo_numbers(tmp_path):
    by_time = tmp_path / "by_time"
    by_time.mkdir()
    _write_dicom_series(by_time, echo_times_ms=[12.5, 25.0])
    s = load_series(by_time)
    assert s.times_ms == (12.5, 25.0) and s.times_source == "header"
    assert s.images[0].GetSize() == (8, 8, 3)
    by_number = tmp_path / "by_number"
    by_number.mkdir()
    _write_dicom_series(by_number, echo_times_ms=None)
    with pytest.raises(InputError, match="--times-ms"):
        load_series(by_number)
    s = load_series(by_number, [10, 20])
    assert s.times_source == "user" and len(s.images) == 2
    fit = fit_relaxation(list(s.images), s.times_ms)
    assert np.allclose(fit.t_ms[0, 0, 0], 10 / np.log(1000 / 600), rtol=1e-3)


def test_summary_exclusion_reasons_are_counted_in_order():
    from DiscAnalysisLib.relaxometry import RelaxationFit

    n = 12
    labels = np.full((1, 1, n), 124, np.uint8)
    status = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0], np.uint8)
    t = np.array([50, 60, 70, 300, 5, 80, np.nan, np.nan, 10, 9000, 40, 90], np.float32)
    r2 = np.array([0.99, 0.98, 0.97, 0.99, 0.99, 0.2, np.nan, np.nan, 0.1, 0.9, 0.5, 0.95], np.float32)
    fit = RelaxationFit("T2", (10.0, 20.0), np.ones((1, 1, n), np.float32), t.reshape(1, 1, n),
                        r2.reshape(1, 1, n), np.zeros((1, 1, n), np.float32), status.reshape(1, 1, n))
    row = summarize_discs(fit, labels, SummarySettings(min_t_ms=10.0))[4 * 6]
    assert row.level == "L5-S1" and row.zone == 0 and row.n_voxels == n
    assert (row.n_excluded_masked, row.n_excluded_too_few_points, row.n_excluded_not_decaying,
            row.n_excluded_out_of_bounds, row.n_excluded_not_converged) == (1, 1, 1, 1, 1)
    assert (row.n_excluded_above_max, row.n_excluded_below_min, row.n_excluded_low_r2) == (1, 1, 1)
    assert row.n_included == 4 and row.n_included + row.n_excluded == n
    assert row.median_ms == pytest.approx(65.0) and row.mean_ms == pytest.approx(67.5)
    assert row.iqr_ms == pytest.approx(np.percentile([50, 60, 70, 90], 75) - np.percentile([50, 60, 70, 90], 25))


def test_t1rho_headers_with_one_readout_te_need_and_accept_user_times(tmp_path):
    paths = []
    for n, tsl in enumerate((1.0, 10.0, 30.0, 60.0), start=1):
        im = sitk.GetImageFromArray(np.full((2, 3, 4), 1000 * np.exp(-tsl / 45), np.float32))
        im.SetMetaData(image_io.TIMES_KEY, "12")  # the readout TE, the same for every volume
        paths.append(image_io.write_image(im, tmp_path / f"tsl_{n}.nrrd"))
    with pytest.raises(InputError, match="same or repeated"):
        load_series(paths, kind="t1rho")
    s = load_series(paths, [1, 10, 30, 60], kind="t1rho")
    assert s.times_source == "user"
    fit = run_relaxometry(s, kind="t1rho").fit
    assert fit.kind == "T1rho" and np.allclose(fit.t_ms, 45.0, rtol=1e-4)


def test_summaries_accept_another_zone_definition():
    fit, labels = _labelled_fit()
    calls = []

    def halves(mask, spacing, direction, n_zones):
        calls.append(n_zones)
        z = np.zeros(mask.shape, np.uint8)
        z[..., :25][mask[..., :25]] = 1
        z[..., 25:][mask[..., 25:]] = 2
        return z

    rows = summarize_discs(fit, labels, SummarySettings(n_zones=2), zone_function=halves)
    l45 = [r for r in rows if r.level == "L4-L5"]
    assert calls == [2] and [r.n_voxels for r in l45] == [300, 150, 150]
