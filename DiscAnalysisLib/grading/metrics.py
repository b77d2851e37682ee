"""Agreement metrics for ordinal grades (numpy only), with patient-level bootstrap intervals.

Grades are integers 1..5. Definitions:

* balanced accuracy: mean over the grades present in the truth of the per-grade recall;
* Cohen's kappa, unweighted or with linear/quadratic weights ``w_ij = (|i-j| / (K-1)) ** p``;
* Lin's concordance correlation coefficient
  ``CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y) ** 2)`` (population moments);
* macro-F1 over the grades present in the truth or the prediction;
* one-vs-rest ROC AUC (Mann-Whitney statistic, ties counted one half).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

GRADES = (1, 2, 3, 4, 5)
#: Three-group mapping used by the U-Net/CNN paper: mild (I-II), moderate (III), severe (IV-V).
GROUPS = {1: "mild", 2: "mild", 3: "moderate", 4: "severe", 5: "severe"}
GROUP_NAMES = ("mild", "moderate", "severe")


def group_of(grade: int) -> str:
    return GROUPS[int(grade)]


def confusion(y_true, y_pred, labels: Sequence[int] = GRADES) -> np.ndarray:
    """Counts with rows = truth, columns = prediction."""
    idx = {g: i for i, g in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(np.asarray(y_true).tolist(), np.asarray(y_pred).tolist(), strict=True):
        m[idx[t], idx[p]] += 1
    return m


def balanced_accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [np.mean(y_pred[y_true == g] == g) for g in np.unique(y_true)]
    return float(np.mean(recalls))


def cohen_kappa(y_true, y_pred, weights: str | None = None, labels: Sequence[int] = GRADES) -> float:
    m = confusion(y_true, y_pred, labels).astype(float)
    n = m.sum()
    k = len(labels)
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / (k - 1)
    elif weights == "quadratic":
        w = ((i - j) / (k - 1)) ** 2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    expected = np.outer(m.sum(1), m.sum(0)) / n
    denom = (w * expected).sum()
    if denom == 0:
        return 1.0 if (w * m).sum() == 0 else 0.0
    return float(1.0 - (w * m).sum() / denom)


def lins_ccc(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else 1.0


def precision_recall_f1(y_true, y_pred, labels: Sequence[int] = GRADES) -> dict[int, tuple[float, float, float, int]]:
    """Per grade: (precision, recall, F1, support); NaN where undefined (no predictions / no truth)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for g in labels:
        tp = int(np.sum((y_true == g) & (y_pred == g)))
        n_pred, n_true = int(np.sum(y_pred == g)), int(np.sum(y_true == g))
        p = tp / n_pred if n_pred else float("nan")
        r = tp / n_true if n_true else float("nan")
        f = 2 * p * r / (p + r) if n_pred and n_true and (p + r) > 0 else (0.0 if (n_pred or n_true) else float("nan"))
        out[g] = (p, r, f, n_true)
    return out


def macro_f1(y_true, y_pred) -> float:
    f = [v[2] for v in precision_recall_f1(y_true, y_pred).values() if not np.isnan(v[2])]
    return float(np.mean(f))


def roc_auc(labels_binary, scores) -> float:
    y = np.asarray(labels_binary, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def group_probabilities(probs: np.ndarray) -> np.ndarray:
    """(N, 5) grade probabilities -> (N, 3) mild/moderate/severe probabilities."""
    probs = np.asarray(probs)
    return np.stack([probs[:, 0] + probs[:, 1], probs[:, 2], probs[:, 3] + probs[:, 4]], axis=1)


def group_auc(y_true, probs) -> dict[str, float]:
    """One-vs-rest AUC of each 3-group class from the summed grade probabilities."""
    y_true = np.asarray(y_true)
    gp = group_probabilities(probs)
    truth = np.array([GROUP_NAMES.index(group_of(g)) for g in y_true])
    return {name: roc_auc(truth == i, gp[:, i]) for i, name in enumerate(GROUP_NAMES)}


def all_metrics(y_true, y_pred, probs) -> dict[str, float]:
    """The scalar metrics reported in docs/validation.md."""
    y_true, y_pred, probs = np.asarray(y_true), np.asarray(y_pred), np.asarray(probs)
    expected = probs @ np.arange(1, 6)
    g_true = np.array([group_of(g) for g in y_true])
    g_pred = np.array([group_of(g) for g in y_pred])
    out = {
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "accuracy": float(np.mean(y_true == y_pred)),
        "kappa": cohen_kappa(y_true, y_pred),
        "kappa_quadratic": cohen_kappa(y_true, y_pred, weights="quadratic"),
        "lins_ccc": lins_ccc(y_true, y_pred),
        "lins_ccc_expected_grade": lins_ccc(y_true, expected),
        "macro_f1": macro_f1(y_true, y_pred),
        "group_accuracy": float(np.mean(g_true == g_pred)),
        "group_balanced_accuracy": balanced_accuracy(g_true, g_pred),
    }
    for k, v in group_auc(y_true, probs).items():
        out[f"auc_{k}"] = v
    return out


def bootstrap_ci(
    groups: Sequence, fn: Callable[[np.ndarray], dict[str, float]], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of ``fn(indices)`` over resamples of whole groups (patients) with replacement.

    ``groups[i]`` is the group (patient) of item i; ``fn`` receives the item indices of one resample and
    returns named scalars. Resamples in which a metric is undefined (NaN) are left out for that metric.
    """
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.choice(uniq, size=len(uniq), replace=True)
        idx = np.concatenate([members[g] for g in pick])
        for k, v in fn(idx).items():
            values.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: tuple(np.nanpercentile(np.array(v, dtype=float), [lo, hi]).tolist()) for k, v in values.items()}


def mean_per_disc(keys, probs, grades) -> tuple[list, np.ndarray, np.ndarray]:
    """One prediction per disc: the probabilities of a disc's images (same key, e.g. (patient, level)) averaged.

    Returns the sorted distinct keys, their reference grades and their mean probabilities.
    """
    acc: dict = {}
    truth: dict = {}
    for k, p, g in zip(keys, probs, grades, strict=True):
        acc.setdefault(k, []).append(p)
        truth[k] = g
    ks = sorted(acc)
    return ks, np.array([truth[k] for k in ks]), np.array([np.mean(acc[k], axis=0) for k in ks])
