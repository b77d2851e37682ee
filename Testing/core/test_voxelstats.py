"""Voxel-wise statistics: agreement with scipy/statsmodels, missing data, planted effects, FWER of maxT."""

import numpy as np
import pytest
from scipy import stats

from DiscAnalysisLib import voxelstats as vs
from DiscAnalysisLib.errors import InputError

TOL = 1e-10


@pytest.fixture
def data():
    rng = np.random.default_rng(42)
    n, v = 23, 40
    return dict(
        y=rng.normal(50, 10, (n, v)),
        y2=rng.normal(50, 10, (n, v)),
        x=rng.normal(size=n),
        cov=np.column_stack([rng.normal(40, 10, n), rng.integers(0, 2, n), rng.normal(25, 3, n)]),
        g=np.arange(n) % 3 == 0,
    )


def test_pearson_matches_scipy(data):
    r, t, p, df = vs.pearson(data["y"], data["x"])
    ref = [stats.pearsonr(data["x"], col) for col in data["y"].T]
    np.testing.assert_allclose(r, [a.statistic for a in ref], atol=TOL, rtol=0)
    np.testing.assert_allclose(p, [a.pvalue for a in ref], atol=TOL, rtol=0)
    assert df == data["y"].shape[0] - 2


def test_partial_correlation_matches_statsmodels_ols(data):
    import statsmodels.api as sm

    y, x, cov = data["y"], data["x"], data["cov"]
    r, t, p, df = vs.partial_correlation(y, x, cov)
    design = sm.add_constant(np.column_stack([cov, x]))
    for j in range(y.shape[1]):
        fit = sm.OLS(y[:, j], design).fit()
        assert fit.df_resid == df == y.shape[0] - 2 - cov.shape[1]
        assert abs(t[j] - fit.tvalues[-1]) < 1e-8 * max(1.0, abs(fit.tvalues[-1]))
        assert abs(p[j] - fit.pvalues[-1]) < TOL
        # pingouin's partial_corr: r = t / sqrt(t^2 + df); also the correlation of the two residual vectors
        assert abs(r[j] - fit.tvalues[-1] / np.sqrt(fit.tvalues[-1] ** 2 + df)) < TOL
        ry = sm.OLS(y[:, j], sm.add_constant(cov)).fit().resid
        rx = sm.OLS(x, sm.add_constant(cov)).fit().resid
        assert abs(r[j] - np.corrcoef(ry, rx)[0, 1]) < TOL


@pytest.mark.parametrize("equal_var", [True, False])
def test_two_sample_t_matches_scipy(data, equal_var):
    t, p, df, eff = vs.two_sample_t(data["y"], data["g"], equal_var=equal_var)
    ref = stats.ttest_ind(data["y"][data["g"]], data["y"][~data["g"]], equal_var=equal_var)
    np.testing.assert_allclose(t, ref.statistic, atol=TOL, rtol=0)
    np.testing.assert_allclose(p, ref.pvalue, atol=TOL, rtol=0)
    np.testing.assert_allclose(eff, data["y"][data["g"]].mean(0) - data["y"][~data["g"]].mean(0), atol=TOL)


def test_paired_t_matches_scipy(data):
    t, p, df, eff = vs.paired_t(data["y"], data["y2"])
    ref = stats.ttest_rel(data["y2"], data["y"])
    np.testing.assert_allclose(t, ref.statistic, atol=TOL, rtol=0)
    np.testing.assert_allclose(p, ref.pvalue, atol=TOL, rtol=0)


def test_map_correlation_matches_scipy(data):
    r, t, p, df = vs.map_correlation(data["y"], data["y2"])
    ref = [stats.pearsonr(a, b) for a, b in zip(data["y"].T, data["y2"].T, strict=True)]
    np.testing.assert_allclose(r, [a.statistic for a in ref], atol=TOL, rtol=0)
    np.testing.assert_allclose(p, [a.pvalue for a in ref], atol=TOL, rtol=0)


@pytest.mark.parametrize("method, sm_name", [("fdr", "fdr_bh"), ("bonferroni", "bonferroni")])
def test_corrections_match_statsmodels(method, sm_name):
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(1).uniform(size=500) ** 3
    p[::50] = np.nan
    q = vs.correct(p, method)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], multipletests(p[ok], method=sm_name)[1], atol=TOL)
    assert np.isnan(q[~ok]).all()


def test_voxel_test_with_missing_values_equals_subset_analysis(data):
    y = data["y"].copy()
    y[:4, :10] = np.nan  # first 10 voxels: 4 subjects missing
    y[:, 10] = np.nan  # voxel 10: nobody
    y[5:, 11] = np.nan  # voxel 11: 5 subjects only
    res = vs.voxel_test(y, vs.StatsSettings(test="partial", correction="none", min_subjects=8),
                        x=data["x"], covariates=data["cov"])
    r_sub, t_sub, p_sub, _ = vs.partial_correlation(data["y"][4:, :10], data["x"][4:], data["cov"][4:])
    np.testing.assert_allclose(res.t[:10], t_sub, atol=TOL)
    np.testing.assert_allclose(res.p[:10], p_sub, atol=TOL)
    assert np.all(res.df[:10] == 23 - 4 - 2 - 3)
    r_all, t_all, p_all, _ = vs.partial_correlation(data["y"][:, 12:], data["x"], data["cov"])
    np.testing.assert_allclose(res.t[12:], t_all, atol=TOL)
    assert not res.mask[10] and not res.mask[11] and np.isnan(res.t[10:12]).all()
    assert res.n[10] == 0 and res.n[11] == 5 and res.n[0] == 19
    assert res.to_row()["n_voxels_too_few_subjects"] == 2


def test_group_test_masks_voxels_with_one_subject_in_a_group(data):
    y = data["y"].copy()
    g = data["g"]
    y[np.flatnonzero(g)[1:], 0] = np.nan  # voxel 0: one subject left in group 1
    res = vs.voxel_test(y, vs.StatsSettings(test="welch", correction="fdr"), group=g)
    assert not res.mask[0] and res.mask[1:].all()


def test_apply_range_excludes_implausible_values():
    y = np.array([[np.nan, -1.0, 0.0, 50.0, 149.9, 150.0, 400.0, np.inf]])
    out = vs.apply_range(y, 0.0, 150.0)
    assert np.isfinite(out).tolist() == [[False, False, False, True, True, False, False, False]]


def test_settings_reject_unknown_names():
    with pytest.raises(InputError, match="Unknown test"):
        vs.StatsSettings(test="anova")
    with pytest.raises(InputError, match="Unknown correction"):
        vs.StatsSettings(correction="holm-ish")


def _planted(seed, n=30, v=400, effect_voxels=60, effect=1.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rng.normal(size=(n, v))
    y[:, :effect_voxels] += effect * x[:, None]
    return y, x


@pytest.mark.parametrize("correction", ["fdr", "bonferroni", "maxt"])
def test_planted_effect_region_is_recovered(correction):
    y, x = _planted(3)
    res = vs.voxel_test(y, vs.StatsSettings(test="pearson", correction=correction, permutations=500), x=x)
    sig = res.significant
    sensitivity = sig[:60].mean()
    false_outside = sig[60:].sum()
    assert sensitivity > 0.9
    if correction == "fdr":
        # false discovery proportion stays near the 5 % target
        assert false_outside / max(sig.sum(), 1) <= 0.10
    else:
        assert false_outside <= 1


def test_planted_group_and_paired_effects_are_recovered():
    rng = np.random.default_rng(5)
    n, v = 30, 300
    g = np.arange(n) % 2 == 0
    y = rng.normal(size=(n, v))
    y[g, :50] += 2.5
    for test in ("welch", "student"):
        res = vs.voxel_test(y, vs.StatsSettings(test=test, correction="maxt", permutations=300), group=g)
        assert res.significant[:50].mean() > 0.8 and res.significant[50:].sum() <= 1
        assert np.all(res.effect[:50] > 0)
    y2 = y + rng.normal(0, 0.5, (n, v))
    y2[:, :50] += 0.9
    res = vs.voxel_test(y, vs.StatsSettings(test="paired", correction="maxt", permutations=300), y2=y2)
    assert res.significant[:50].mean() > 0.8 and res.significant[50:].sum() <= 1


def _fwer(test, sims=200, n=12, v=25, permutations=99):
    """Fraction of null simulations in which maxT declares any voxel significant."""
    hits = 0
    for s in range(sims):
        rng = np.random.default_rng(1000 + s)
        # spatially correlated null voxels (as smoothed maps are): shared subject factor + noise
        y = rng.normal(size=(n, v)) + 0.7 * rng.normal(size=(n, 1))
        kw = {}
        if test in ("pearson", "partial"):
            kw["x"] = rng.normal(size=n)
        if test == "partial":
            kw["covariates"] = rng.normal(size=(n, 2))
        if test in ("welch", "student"):
            kw["group"] = np.arange(n) % 2 == 0
        if test in ("paired", "map-corr"):
            kw["y2"] = rng.normal(size=(n, v)) + (y if test == "paired" else 0)
        res = vs.voxel_test(y, vs.StatsSettings(test=test, correction="maxt", permutations=permutations, seed=s), **kw)
        hits += bool(res.significant.any())
    return hits / sims


@pytest.mark.parametrize("test", ["pearson", "partial", "welch", "paired", "map-corr"])
def test_maxt_controls_family_wise_error_on_null_cohorts(test):
    sims = 200
    fwer = _fwer(test, sims=sims)
    bound = 0.05 + 2 * np.sqrt(0.05 * 0.95 / sims)
    assert fwer <= bound, f"{test}: FWER {fwer:.3f} > {bound:.3f}"


def test_uncorrected_tests_do_exceed_the_family_wise_error():
    """The FWER check can fail: without correction, null cohorts give many false positives."""
    hits = 0
    for s in range(50):
        rng = np.random.default_rng(s)
        res = vs.voxel_test(rng.normal(size=(12, 25)), vs.StatsSettings(correction="none"), x=rng.normal(size=12))
        hits += bool(res.significant.any())
    assert hits / 50 > 0.3


def test_maxt_with_missing_patterns_runs_and_is_reproducible(data):
    y = data["y"].copy()
    y[:3, :15] = np.nan
    s = vs.StatsSettings(test="partial", correction="maxt", permutations=200, seed=7, min_subjects=6)
    a = vs.voxel_test(y, s, x=data["x"], covariates=data["cov"])
    b = vs.voxel_test(y, s, x=data["x"], covariates=data["cov"])
    assert a.n_patterns == 2
    np.testing.assert_array_equal(a.max_null, b.max_null)
    assert np.all((a.q[a.mask] >= 1 / 201) & (a.q[a.mask] <= 1))
    # maxT p-values are monotone in |t| within the test
    order = np.argsort(-np.abs(a.t[a.mask]))
    assert np.all(np.diff(a.q[a.mask][order]) >= -1e-12)


def test_missing_subject_variable_is_refused(data):
    x = data["x"].copy()
    x[0] = np.nan
    with pytest.raises(InputError, match="finite value per subject"):
        vs.voxel_test(data["y"], vs.StatsSettings(test="pearson"), x=x)


@pytest.mark.parametrize("test", ["pearson", "partial", "welch", "student", "paired", "map-corr"])
def test_permutation_statistic_equals_the_direct_statistic_of_the_permuted_data(data, test):
    """The vectorised null (float32 products, s1/q1 shortcuts) against the plain tests on permuted inputs."""
    rng = np.random.default_rng(3)
    n, v = data["y"].shape
    perms = np.vstack([np.arange(n), rng.permutation(n), rng.permutation(n)])
    signs = np.where(rng.random((3, n)) < 0.5, -1.0, 1.0)
    signs[0] = 1.0
    an = vs._Analysis(vs.StatsSettings(test=test, correction="maxt"), data["y"], data["x"], data["cov"],
                      data["g"], data["y2"])
    null = an.null_max(np.ones(n, bool), slice(0, v), perms, signs)
    y, y2, x, cov, g = data["y"], data["y2"], data["x"], data["cov"], data["g"]
    for b, p in enumerate(perms):
        if test == "pearson":
            t = vs.pearson(y, x[p])[1]
        elif test == "partial":
            # Smith scheme: the covariate-orthogonalised variable, permuted
            ex = vs._residualise(vs._design(cov, n), x)
            t = vs.partial_correlation(y, ex[p], cov)[1]
        elif test in ("welch", "student"):
            t = vs.two_sample_t(y, g[p], equal_var=test == "student")[0]
        elif test == "paired":
            t = vs.paired_t(np.zeros_like(y), signs[b][:, None] * (y2 - y))[0]
        else:
            t = vs.map_correlation(y, y2[p])[1]
        assert null[b] == pytest.approx(np.abs(t).max(), rel=1e-5)
