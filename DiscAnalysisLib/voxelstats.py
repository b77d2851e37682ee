"""Voxel-wise statistics on atlas-space maps (arrays subjects x voxels).

The four analyses of Iriondo et al. (voxel-based T1rho/T2 relaxometry, MRM; section 2.3):

* voxel-by-variable: Pearson correlation of each voxel with a subject variable (``pearson``), or partial
  correlation adjusted for covariates such as age, sex and BMI (``partial``);
* voxel-by-group: unpaired t-test between two groups, Welch (``welch``, unequal variances) or Student
  (``student``, pooled variance);
* voxel-by-voxel: correlation, at each voxel and across subjects, of two maps (``map-corr``: T1rho vs T2);
* voxel-by-time: paired difference of two timepoints (``paired``: follow-up minus baseline, paired t).

Every test gives a t statistic with its degrees of freedom and a two-sided p-value from Student's t
distribution (``scipy.stats.t``); correlations also give r. Multiple comparisons over the tested voxels
are corrected by Benjamini-Hochberg FDR or Bonferroni (``statsmodels.stats.multitest.multipletests``) or by
a permutation max-statistic (Westfall & Young single-step maxT) that controls the family-wise error rate.

Permutation schemes (all vectorised: one matrix product per batch of permutations and chunk of voxels):

* pearson: the variable is permuted across subjects;
* partial: the variable, orthogonalised with respect to the covariates (and intercept), is permuted and
  re-orthogonalised ("Smith" scheme in Winkler et al., Permutation inference for the general linear
  model, NeuroImage 2014;92:381-397, table 2). It keeps the statistic one matrix product per permutation
  (Freedman-Lane would need a per-voxel re-residualisation) and performed as well as Freedman-Lane in
  that paper's simulations; the FWER test in Testing/core/test_voxelstats.py checks it on null cohorts;
* welch / student: group labels are permuted;
* paired: the signs of the within-subject differences are flipped (exchangeable under a symmetric null);
* map-corr: the subjects of the second map are permuted relative to the first (per-voxel data on both
  sides, so this one costs n x V per permutation instead of a matrix product; it is slower).

Missing data: a voxel value that is NaN (or outside the inclusion range, see :func:`apply_range`) leaves
that subject out at that voxel. Voxels are grouped by their pattern of available subjects; each pattern is
analysed with its own subjects (and its own degrees of freedom), and a permutation of all subjects induces
a uniform permutation of each pattern's subjects (the order in which they appear in it). Voxels with fewer
than ``min_subjects`` subjects (or fewer than 2 per group, or no degrees of freedom left) are not tested:
their outputs are NaN and ``mask`` is False. maxT takes the maximum |t| over all tested voxels; when
patterns have different degrees of freedom |t| is not perfectly balanced across them (this affects power,
not validity).

Arrays: ``y`` is (n_subjects, n_voxels) float; a variable is (n_subjects,); covariates are
(n_subjects, k). Voxels are in any order (flattened atlas volumes in (k, j, i) order, as
``SimpleITK.GetArrayFromImage`` gives).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

TESTS = ("pearson", "partial", "welch", "student", "paired", "map-corr")
CORRECTIONS = ("fdr", "bonferroni", "maxt", "none")
CORRELATION_TESTS = ("pearson", "partial", "map-corr")

#: Target memory (bytes) of one permutations x voxels block.
_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class StatsSettings:
    """Settings of a voxel-wise test.

    test - one of :data:`TESTS`; correction - one of :data:`CORRECTIONS`; alpha - the significance level of
    the corrected p (q) map; permutations - number of random permutations for maxT; seed - their random
    seed; min_subjects - voxels with fewer subjects are not tested; chunk_voxels - voxels per chunk.
    """

    test: str = "pearson"
    correction: str = "fdr"
    alpha: float = 0.05
    permutations: int = 1000
    seed: int = 0
    min_subjects: int = 5
    chunk_voxels: int = 131072

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise InputError(f"Unknown test '{self.test}'. Choose one of: {', '.join(TESTS)}.")
        if self.correction not in CORRECTIONS:
            raise InputError(f"Unknown correction '{self.correction}'. Choose one of: {', '.join(CORRECTIONS)}.")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be between 0 and 1, got {self.alpha}.")
        if self.correction == "maxt" and self.permutations < 1:
            raise InputError("maxT correction needs at least 1 permutation (1000 or more recommended).")
        if self.min_subjects < 3:
            raise InputError(f"min_subjects must be at least 3, got {self.min_subjects}.")

    def to_row(self) -> dict:
        return {
            "test": self.test,
            "correction": self.correction,
            "alpha": self.alpha,
            "permutations": self.permutations if self.correction == "maxt" else 0,
            "seed": self.seed,
            "min_subjects": self.min_subjects,
        }


@dataclass(frozen=True)
class VoxelStatsResult:
    """Per-voxel outputs (1D arrays over voxels; NaN where not tested) and bookkeeping.

    t - t statistic; r - correlation (correlation tests) else None; p - uncorrected two-sided p; q - p
    corrected by ``settings.correction`` (equals p for "none"); df - degrees of freedom; n - subjects
    available at each voxel; mask - tested voxels; effect - mean difference (group 1 - group 0, or
    follow-up - baseline) for t-tests, else None; max_null - maxT null distribution (permutations,) or None.
    """

    settings: StatsSettings
    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    df: np.ndarray
    n: np.ndarray
    mask: np.ndarray
    r: np.ndarray | None = None
    effect: np.ndarray | None = None
    max_null: np.ndarray | None = None
    n_subjects: int = 0
    n_patterns: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def significant(self) -> np.ndarray:
        return self.mask & (np.nan_to_num(self.q, nan=1.0) < self.settings.alpha)

    def to_row(self) -> dict:
        """Summary numbers (no geometry; see cohortstats for peak locations)."""
        tested = int(self.mask.sum())
        sig = self.significant
        row = {
            **self.settings.to_row(),
            "n_subjects": self.n_subjects,
            "n_voxels": int(self.mask.size),
            "n_voxels_tested": tested,
            "n_voxels_too_few_subjects": int(self.mask.size - tested),
            "n_significant": int(sig.sum()),
            "fraction_significant": float(sig.sum() / tested) if tested else float("nan"),
        }
        if tested:
            i = int(np.nanargmax(np.where(self.mask, np.abs(self.t), -np.inf)))
            row.update(peak_voxel=i, peak_t=float(self.t[i]), peak_p=float(self.p[i]), peak_q=float(self.q[i]))
            if self.r is not None:
                row["peak_r"] = float(self.r[i])
        return row


# ------------------------------------------------------------------------------------------- helpers
def apply_range(y: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Copy of ``y`` with values outside the open interval (low, high) and non-finite values set to NaN.

    Iriondo et al. include only voxels with plausible relaxation times (e.g. T1rho < 250 ms, T2 < 150 ms).
    """
    out = np.array(y, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    if low is not None:
        bad |= out <= low
    if high is not None:
        bad |= out >= high
    out[bad] = np.nan
    return out


def t_from_r(r: np.ndarray, df) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return r * np.sqrt(df / np.maximum(1.0 - r * r, 0.0))


def two_sided_p(t: np.ndarray, df) -> np.ndarray:
    """Two-sided p-value of a t statistic with ``df`` degrees of freedom (scipy.stats.t)."""
    from scipy import stats

    with np.errstate(invalid="ignore"):
        return 2.0 * stats.t.sf(np.abs(t), df)


def _design(covariates: np.ndarray | None, n: int) -> np.ndarray:
    """Intercept plus covariates, (n, 1 + k)."""
    z = np.ones((n, 1))
    if covariates is not None and np.size(covariates):
        c = np.asarray(covariates, dtype=float).reshape(n, -1)
        z = np.column_stack([z, c])
    return z


def _residual_maker(z: np.ndarray) -> np.ndarray:
    """R = I - Z Z^+ (projects onto the orthogonal complement of the columns of Z)."""
    q, _ = np.linalg.qr(z)
    rank = np.linalg.matrix_rank(z)
    q = q[:, :rank]
    return np.eye(z.shape[0]) - q @ q.T


def _residualise(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residuals of ``y`` (n,) or (n, V) after least squares on the columns of ``z`` (n, p):
    y - Q (Q^T y) with Q an orthonormal basis of z (p matrix products instead of n)."""
    if z.shape[1] == 1 and np.allclose(z, z[0, 0]):
        return y - y.mean(axis=0)
    q, _ = np.linalg.qr(z)
    q = q[:, : np.linalg.matrix_rank(z)]
    return y - q @ (q.T @ y)


def correct(p: np.ndarray, method: str, alpha: float = 0.05) -> np.ndarray:
    """Corrected p (q) for the finite entries of ``p``: 'fdr' (Benjamini-Hochberg) or 'bonferroni' via
    statsmodels.stats.multitest.multipletests; 'none' returns p. NaN stays NaN."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return q
    if method == "none":
        q[ok] = p[ok]
        return q
    from statsmodels.stats.multitest import multipletests

    sm = {"fdr": "fdr_bh", "bonferroni": "bonferroni"}[method]
    q[ok] = multipletests(p[ok], alpha=alpha, method=sm)[1]
    return q


# ------------------------------------------------------------------------------- complete-data tests
# These take data without NaN (subjects x voxels) and are what the tests compare with scipy/statsmodels.
def pearson(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pearson r of each column of ``y`` with ``x``: (r, t, p, df) with df = n - 2."""
    return partial_correlation(y, x, None)


def partial_correlation(
    y: np.ndarray, x: np.ndarray, covariates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Partial correlation of each column of ``y`` with ``x`` given ``covariates`` (n, k).

    Both ``y`` and ``x`` are residualised on [intercept, covariates]; r is the correlation of the residuals
    and t = r sqrt(df / (1 - r^2)) with df = n - 2 - k, which equals the OLS t of x in y ~ 1 + covariates + x.
    Returns (r, t, p, df).
    """
    y = np.asarray(y, dtype=float)
    n = y.shape[0]
    z = _design(covariates, n)
    k = z.shape[1] - 1
    df = n - 2 - k
    if df < 1:
        raise InputError(f"{n} subjects leave no degrees of freedom for a correlation with {k} covariate(s).")
    ex = _residualise(z, np.asarray(x, dtype=float))
    ey = _residualise(z, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ex @ ey) / (np.sqrt(ex @ ex) * np.sqrt(np.einsum("ij,ij->j", ey, ey)))
    r = np.clip(r, -1.0, 1.0)
    t = t_from_r(r, df)
    return r, t, two_sided_p(t, df), df


def two_sample_t(
    y: np.ndarray, group: np.ndarray, *, equal_var: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """t-test of group 1 vs group 0 (``group`` boolean) for each column: (t, p, df, mean1 - mean0).

    ``equal_var`` True: Student (pooled variance, df = n - 2); False: Welch (Welch-Satterthwaite df).
    """
    y = np.asarray(y, dtype=float)
    g = np.asarray(group, dtype=bool)
    a, b = y[g], y[~g]
    n1, n0 = a.shape[0], b.shape[0]
    if n1 < 2 or n0 < 2:
        raise InputError(f"A two-group t-test needs at least 2 subjects per group (got {n1} and {n0}).")
    m1, m0 = a.mean(0), b.mean(0)
    v1, v0 = a.var(0, ddof=1), b.var(0, ddof=1)
    t, df = _t_from_moments(m1 - m0, v1, v0, n1, n0, equal_var)
    return t, two_sided_p(t, df), df, m1 - m0


def _t_from_moments(diff, v1, v0, n1, n0, equal_var: bool):
    with np.errstate(divide="ignore", invalid="ignore"):
        if equal_var:
            df = n1 + n0 - 2
            sp = ((n1 - 1) * v1 + (n0 - 1) * v0) / df
            t = diff / np.sqrt(sp * (1.0 / n1 + 1.0 / n0))
            df = np.full(np.shape(diff), float(df))
        else:
            s1, s0 = v1 / n1, v0 / n0
            t = diff / np.sqrt(s1 + s0)
            df = (s1 + s0) ** 2 / (s1 * s1 / (n1 - 1) + s0 * s0 / (n0 - 1))
    return t, df


def paired_t(y_before: np.ndarray, y_after: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Paired t of (after - before) for each column: (t, p, df = n - 1, mean difference)."""
    d = np.asarray(y_after, dtype=float) - np.asarray(y_before, dtype=float)
    n = d.shape[0]
    m = d.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = m / (d.std(0, ddof=1) / np.sqrt(n))
    return t, two_sided_p(t, n - 1), n - 1, m


def map_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Voxel-by-voxel Pearson r across subjects between two maps (n, V) each: (r, t, p, df = n - 2)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac * bc).sum(0) / np.sqrt((ac * ac).sum(0) * (bc * bc).sum(0))
    r = np.clip(r, -1.0, 1.0)
    df = a.shape[0] - 2
    t = t_from_r(r, df)
    return r, t, two_sided_p(t, df), df


# ------------------------------------------------------------------------------------ the engine
def _patterns(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique columns of the (n, V) boolean ``valid``: (patterns (P, n) bool, inverse (V,) index)."""
    n, v = valid.shape
    if valid.all():
        return np.ones((1, n), dtype=bool), np.zeros(v, dtype=np.intp)
    packed = np.packbits(valid, axis=0).T  # (V, ceil(n/8))
    packed = np.ascontiguousarray(packed)
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return valid[:, first].T.copy(), inverse.ravel()


def _restricted(perms: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For each permutation of all n subjects, the induced permutation of the subjects in ``members``
    (boolean (n,)): positions within the member list, in the order the members appear in the permutation."""
    pos = np.full(members.size, -1)
    idx = np.flatnonzero(members)
    pos[idx] = np.arange(idx.size)
    keep = members[perms]  # (B, n) True where the permuted subject is a member
    order = perms[keep].reshape(perms.shape[0], idx.size)
    return pos[order]


class _Analysis:
    """Per-pattern statistic and its permutation null, for one test type."""

    def __init__(self, settings: StatsSettings, y, x=None, covariates=None, group=None, y2=None):
        self.s = settings
        self.y, self.x, self.cov, self.group, self.y2 = y, x, covariates, group, y2
        self.k = 0 if covariates is None else np.asarray(covariates).reshape(y.shape[0], -1).shape[1]

    def min_n(self) -> int:
        if self.s.test == "partial":
            return max(self.s.min_subjects, self.k + 3)
        return self.s.min_subjects

    def pattern_ok(self, members: np.ndarray) -> bool:
        if members.sum() < self.min_n():
            return False
        if self.s.test in ("welch", "student"):
            g = self.group[members]
            return g.sum() >= 2 and (~g).sum() >= 2
        return True

    def take(self, a, members, cols):
        """a[members][:, cols] without copying when possible (all members, contiguous columns)."""
        if isinstance(cols, slice):
            return a[:, cols] if members.all() else a[members, cols]
        return a[np.ix_(members, cols)]

    # observed statistics for the voxels ``cols`` of a pattern
    def observed(self, members, cols):
        t = self.s.test
        y = self.take(self.y, members, cols)
        if t in ("pearson", "partial"):
            r, tt, p, df = partial_correlation(y, self.x[members], self.cov[members] if t == "partial" else None)
            return dict(r=r, t=tt, p=p, df=np.full(_count(cols), float(df)))
        if t in ("welch", "student"):
            tt, p, df, eff = two_sample_t(y, self.group[members], equal_var=(t == "student"))
            return dict(t=tt, p=p, df=df, effect=eff)
        y2 = self.take(self.y2, members, cols)
        if t == "paired":
            tt, p, df, eff = paired_t(y, y2)
            return dict(t=tt, p=p, df=np.full(_count(cols), float(df)), effect=eff)
        r, tt, p, df = map_correlation(y, y2)
        return dict(r=r, t=tt, p=p, df=np.full(_count(cols), float(df)))

    # max |t| over the voxels ``cols`` of a pattern, for each permutation (B,)
    def null_max(self, members, cols, perms, signs, progress=None) -> np.ndarray:
        test = self.s.test
        nb = perms.shape[0]
        m = int(members.sum())
        y = self.take(self.y, members, cols)
        out = np.zeros(nb)
        if test == "paired":
            d = self.take(self.y2, members, cols) - y
            ss = (d * d).sum(0)
            for sl in _batches(nb, _count(cols)):
                mean = (signs[sl][:, members] @ d) / m
                with np.errstate(divide="ignore", invalid="ignore"):
                    var = (ss - m * mean * mean) / (m - 1)
                    tt = mean / np.sqrt(np.maximum(var, 0.0) / m)
                out[sl] = np.nanmax(np.abs(tt), axis=1, initial=0.0)
            return out
        order = _restricted(perms, members)  # (B, m) positions within the members
        if test in ("pearson", "partial"):
            z = _design(self.cov[members] if test == "partial" else None, m)
            rz = _residual_maker(z)
            ex = rz @ self.x[members]
            ey = _residualise(z, y)
            with np.errstate(divide="ignore", invalid="ignore"):
                ey = ey / np.sqrt(np.einsum("ij,ij->j", ey, ey))
            ey = np.nan_to_num(ey)
            xp = ex[order]  # (B, m): the orthogonalised variable, permuted
            if test == "partial":
                xp = xp @ rz  # re-orthogonalise (Smith scheme); rz is symmetric
            xp = xp / np.linalg.norm(xp, axis=1, keepdims=True)
            df = m - 2 - (self.k if test == "partial" else 0)
            ey32, xp32 = ey.astype(np.float32), xp.astype(np.float32)
            for sl in _batches(nb, _count(cols)):
                rr = xp32[sl] @ ey32
                rmax = np.maximum(rr.max(axis=1), -rr.min(axis=1))
                out[sl] = t_from_r(np.minimum(rmax.astype(float), 1.0), df)
            return out
        if test in ("welch", "student"):
            # With y centred per voxel, the group-0 sum is minus the group-1 sum s1, so every statistic is a
            # function of s1 = g' y and q1 = g' y^2 (one or two matrix products per batch of permutations).
            g = self.group[members]
            n1, n0 = int(g.sum()), int((~g).sum())
            c = 1.0 / n1 + 1.0 / n0
            yc = y - y.mean(0)
            tot2 = np.einsum("ij,ij->j", yc, yc)
            gp = g[order].astype(np.float32)  # (B, m) permuted group indicator
            if test == "student":
                # pooled: t = u sqrt(c (m - 2) / (1 - c u^2)) with u = s1 / sqrt(tot2): monotone in |u|
                with np.errstate(divide="ignore", invalid="ignore"):
                    yn = np.nan_to_num(yc / np.sqrt(tot2)).astype(np.float32)
                for sl in _batches(nb, _count(cols)):
                    uu = gp[sl] @ yn
                    u = np.maximum(uu.max(axis=1), -uu.min(axis=1)).astype(float)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        out[sl] = u * np.sqrt(c * (m - 2) / np.maximum(1.0 - c * u * u, 1e-300))
                return out
            # Welch: t^2 = c^2 a / (beta tot2 + (alpha - beta) q1 - gamma a), a = s1^2, alpha = 1/((n1-1) n1),
            # beta = 1/((n0-1) n0), gamma = alpha/n1 + beta/n0, evaluated in place (the elementwise passes,
            # not the products, dominate here). Large blocks: small products lose more to BLAS threading.
            alpha, beta = 1.0 / ((n1 - 1) * n1), 1.0 / ((n0 - 1) * n0)
            gamma = alpha / n1 + beta / n0
            # fold the constants into the products: s = sqrt(gamma) g'y, d = (alpha - beta) g'y^2
            yc32 = (yc * np.sqrt(gamma)).astype(np.float32)
            yc2 = (yc * yc * (alpha - beta)).astype(np.float32)
            base = (beta * tot2 + 1e-30).astype(np.float32)
            for sl in _batches(nb, _count(cols)):
                s1 = gp[sl] @ yc32
                den = gp[sl] @ yc2
                s1 *= s1  # gamma a
                den += base
                den -= s1
                s1 /= den
                out[sl] = s1.max(axis=1) * (c * c / gamma)
            return np.sqrt(out)
        # map-corr: permute the subjects of the second map relative to the first
        a = y - y.mean(0)
        b = self.take(self.y2, members, cols)
        b = b - b.mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.nan_to_num(a / np.linalg.norm(a, axis=0))
            b = np.nan_to_num(b / np.linalg.norm(b, axis=0))
        df = m - 2
        for i in range(nb):
            rr = np.einsum("ij,ij->j", a, b[order[i]])
            out[i] = t_from_r(min(float(np.abs(rr).max(initial=0.0)), 1.0), df)
        return out


def _batches(n_perm: int, n_cols: int):
    step = max(1, int(_BLOCK_BYTES // (8 * max(n_cols, 1))))
    for start in range(0, n_perm, step):
        yield slice(start, min(n_perm, start + step))


def voxel_test(
    y: np.ndarray,
    settings: StatsSettings = StatsSettings(),
    *,
    x: np.ndarray | None = None,
    covariates: np.ndarray | None = None,
    group: np.ndarray | None = None,
    y2: np.ndarray | None = None,
    progress: ProgressCallback | Progress | None = None,
) -> VoxelStatsResult:
    """Run ``settings.test`` on ``y`` (n_subjects, n_voxels) with NaN marking excluded values.

    pearson: ``x`` (n,); partial: ``x`` and ``covariates`` (n, k); welch/student: ``group`` (n,) boolean
    (True = group 1; effect = mean1 - mean0); paired: ``y`` = baseline and ``y2`` = follow-up (same subject
    order; effect = y2 - y); map-corr: ``y`` and ``y2`` are the two maps. Subject-level inputs must be
    complete (drop subjects with a missing variable before calling). See the module docstring for
    missing voxel data, permutations and corrections.
    """
    s = settings
    prog = Progress.wrap(progress)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise InputError(f"Voxel data must be a (subjects, voxels) array, got shape {y.shape}.")
    n, v = y.shape
    need = {"pearson": ("x",), "partial": ("x", "covariates"), "welch": ("group",), "student": ("group",),
            "paired": ("y2",), "map-corr": ("y2",)}[s.test]
    given = {"x": x, "covariates": covariates, "group": group, "y2": y2}
    for name in need:
        if given[name] is None:
            raise InputError(f"The {s.test} test needs '{name}'.")
    if x is not None:
        x = np.asarray(x, dtype=float).ravel()
        if x.size != n or not np.all(np.isfinite(x)):
            raise InputError(f"The variable must have one finite value per subject ({n}); drop subjects with missing values.")
    if covariates is not None:
        covariates = np.asarray(covariates, dtype=float).reshape(n, -1)
        if not np.all(np.isfinite(covariates)):
            raise InputError("Covariates must be finite for every subject; drop subjects with missing covariates.")
    if group is not None:
        group = np.asarray(group).ravel()
        if group.size != n:
            raise InputError(f"The group vector must have one entry per subject ({n}).")
        group = group.astype(bool)
    valid = np.isfinite(y)
    if y2 is not None:
        y2 = np.asarray(y2, dtype=np.float64)
        if y2.shape != y.shape:
            raise InputError(f"The two maps must have the same shape (got {y.shape} and {y2.shape}).")
        valid &= np.isfinite(y2)

    an = _Analysis(s, y, x, covariates, group, y2)
    patterns, inverse = _patterns(valid)
    counts = valid.sum(0)
    out = {k: np.full(v, np.nan) for k in ("t", "p", "df")}
    r = np.full(v, np.nan) if s.test in CORRELATION_TESTS else None
    effect = np.full(v, np.nan) if s.test in ("welch", "student", "paired") else None
    mask = np.zeros(v, dtype=bool)
    cols_of = _columns_by_pattern(inverse, len(patterns))
    usable = [i for i in range(len(patterns)) if cols_of[i].size and an.pattern_ok(patterns[i])]
    chunk = max(1, int(s.chunk_voxels))

    obs_prog = prog.sub(0.0, 0.3 if s.correction == "maxt" else 0.9)
    total = sum(cols_of[i].size for i in usable) or 1
    done = 0
    for i in usable:
        members = patterns[i]
        cols_all = cols_of[i]
        for start in range(0, cols_all.size, chunk):
            cols = _as_slice(cols_all[start:start + chunk])
            res = an.observed(members, cols)
            for key in ("t", "p", "df"):
                out[key][cols] = res[key]
            if r is not None:
                r[cols] = res["r"]
            if effect is not None:
                effect[cols] = res["effect"]
            done += _count(cols)
            obs_prog.report(done / total, "voxel statistics")
    # constant voxels give NaN statistics: they are not tested
    mask = np.isfinite(out["t"])
    for key in ("t", "p", "df"):
        out[key][~mask] = np.nan
    if r is not None:
        r[~mask] = np.nan

    notes = []
    max_null = None
    if s.correction == "maxt":
        max_null = _max_null(an, patterns, cols_of, usable, mask, n, s, prog.sub(0.3, 0.95))
        q = np.full(v, np.nan)
        obs = np.abs(out["t"][mask])
        # p_FWE = (1 + #{null max >= |t|}) / (B + 1): the observed labelling counts as one permutation.
        sorted_null = np.sort(max_null)
        ge = sorted_null.size - np.searchsorted(sorted_null, obs * (1 - 1e-9), side="left")
        q[mask] = (1.0 + ge) / (sorted_null.size + 1.0)
        notes.append(f"maxT: {s.permutations} permutations, seed {s.seed}; smallest attainable p = {1 / (s.permutations + 1):.2g}")
    else:
        q = correct(out["p"], s.correction, s.alpha)
    prog.report(1.0, "voxel statistics")
    return VoxelStatsResult(
        settings=s, t=out["t"], p=out["p"], q=q, df=out["df"], n=counts.astype(np.int32), mask=mask,
        r=r, effect=effect, max_null=max_null, n_subjects=n, n_patterns=len(usable), notes=tuple(notes),
    )


def _as_slice(cols: np.ndarray):
    """A slice for a contiguous increasing run of indices (views instead of copies), else the indices."""
    if cols.size and cols[-1] - cols[0] == cols.size - 1 and (cols.size < 3 or np.all(np.diff(cols) == 1)):
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


def _count(cols) -> int:
    return cols.stop - cols.start if isinstance(cols, slice) else int(cols.size)


def _columns_by_pattern(inverse: np.ndarray, n_patterns: int) -> list[np.ndarray]:
    if n_patterns == 1:
        return [np.arange(inverse.size)]
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(n_patterns + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_patterns)]


def _max_null(an: _Analysis, patterns, cols_of, usable, mask, n, s: StatsSettings, prog: Progress) -> np.ndarray:
    rng = np.random.default_rng(s.seed)
    perms = rng.permuted(np.tile(np.arange(n), (s.permutations, 1)), axis=1)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(s.permutations, n)) if s.test == "paired" else None
    max_null = np.zeros(s.permutations)
    total = sum(int(mask[cols_of[i]].sum()) for i in usable) or 1
    done = 0
    chunk = max(1, int(s.chunk_voxels))
    for i in usable:
        cols_all = cols_of[i][mask[cols_of[i]]]
        for start in range(0, cols_all.size, chunk):
            cols = _as_slice(cols_all[start:start + chunk])
            max_null = np.maximum(max_null, an.null_max(patterns[i], cols, perms, signs))
            done += _count(cols)
            prog.report(done / total, f"{s.permutations} permutations")
    return max_null
