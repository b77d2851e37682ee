"""Classifiers on regional disc markers: train, evaluate with repeated group-aware splits, predict.

Follows the fissure/pain paper (Eur Spine J 2022;31:1992-1999, "Fissure and pain modelling"): a random
forest with 100 trees, trained on 75 % of the discs and tested on the remaining 25 %, repeated 10 times with
the metrics averaged; accuracy, precision, recall and F1 per class; relative feature importances with the
largest set to 1.0; ROC curves; learning curves. Two additions:

* group-aware splits: all discs of one patient fall on the same side of every split (a patient's discs
  share scanner, coil and biology; mixing them inflates test scores). Each repeat takes one fold of a
  shuffled ``StratifiedGroupKFold`` with round(1 / test_fraction) folds (75/25 by patients, stratified by
  class as far as groups allow); without a group column, ``StratifiedShuffleSplit``;
* other models on the same splits for an honest comparison: gradient boosting and logistic regression
  (standardised features, L2), besides the random forest.

Models are stored with skops (``skops.io.dump``/``load``; never pickle). Loading lists the file's types that
skops does not trust by default and refuses any that are not in :data:`_ALLOWED_EXTRA_TYPES`. Next to the
model, a JSON file holds the feature names, classes, library versions, the SHA-256 of the training data and
of the model file; prediction refuses a table whose features do not match.

Input tables are CSV files with one row per disc: feature columns (numbers), a label column, optionally a
group column (patient) and identifier columns (subject, level).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

MODELS = ("random_forest", "gradient_boosting", "logistic_regression")
#: The 12 regional markers (Eur Spine J 2022, table 1) under the column names of DiscAnalysisLib.markers:
#: mean and SD of the whole disc and of ventral-dorsal zones 1..5. The default features.
REGIONAL_MARKERS = ("si_mean", "si_sd", *(f"si_z{k}_{s}" for k in range(1, 6) for s in ("mean", "sd")))
#: Columns never used as features when features are chosen automatically.
ID_COLUMNS = ("subject", "patient", "patient_id", "level", "timepoint", "image", "reason", "status")

# Types outside skops' default trust list that our own estimators contain (checked on load).
_ALLOWED_EXTRA_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
})


# ------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ClassifierSettings:
    """model - one of :data:`MODELS`; n_estimators - trees (random forest / boosting; paper: 100);
    test_fraction - share of patients held out per repeat (paper: 0.25); repeats - number of repeated
    splits (paper: 10); seed - random seed of splits and models."""

    model: str = "random_forest"
    n_estimators: int = 100
    test_fraction: float = 0.25
    repeats: int = 10
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"Unknown model '{self.model}'. Choose one of: {', '.join(MODELS)}.")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise InputError(f"test_fraction must be between 0.05 and 0.5, got {self.test_fraction}.")
        if self.repeats < 1 or self.n_estimators < 1:
            raise InputError("repeats and n_estimators must be at least 1.")


@dataclass(frozen=True)
class MarkerTable:
    """Features (n, p), labels (n,), optional groups (n,), with names; rows with a missing feature or
    label are left out and counted in ``n_dropped``."""

    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    groups: np.ndarray | None
    ids: tuple[str, ...]
    label_column: str
    group_column: str | None
    n_dropped: int = 0
    source: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.labels.tolist()), key=_label_key))


def _label_key(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _num(v: str) -> float:
    v = (v or "").strip()
    if v.lower() in ("", "nan", "na", "n/a", "none"):
        return math.nan
    return float(v)


def read_csv_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Table not found: {p}.")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    if not header or not rows:
        raise InputError(f"{p} has no header or no rows.")
    return header, rows


def numeric_columns(header: Sequence[str], rows: Sequence[dict[str, str]], exclude: Sequence[str] = ()) -> list[str]:
    """Columns whose non-empty values are all numbers (candidates for features)."""
    out = []
    skip = {c.lower() for c in exclude} | set(ID_COLUMNS)
    for h in header:
        if h.lower() in skip:
            continue
        try:
            vals = [_num(r.get(h, "")) for r in rows]
        except ValueError:
            continue
        if any(np.isfinite(vals)):
            out.append(h)
    return out


def load_marker_table(
    path: str | Path,
    label_column: str | None,
    *,
    features: Sequence[str] | None = None,
    group_column: str | None = None,
    id_columns: Sequence[str] = ("subject", "level"),
) -> MarkerTable:
    """Read a markers CSV. ``features`` None: every numeric column except the label, group and identifier
    columns. ``label_column`` None (prediction): labels are empty strings."""
    header, rows = read_csv_rows(path)
    name = Path(path).name
    for col, what in ((label_column, "label"), (group_column, "group")):
        if col and col not in header:
            raise InputError(f"{name} has no {what} column '{col}' (columns: {', '.join(header)}).")
    if features is None:
        if all(m in header for m in REGIONAL_MARKERS):
            feats = list(REGIONAL_MARKERS)
        else:
            # Never guess features from "all numeric columns": a grade or outcome column would leak the label.
            exclude = [c for c in (label_column, group_column) if c] + list(id_columns)
            candidates = numeric_columns(header, rows, exclude)
            raise InputError(
                f"{name} does not hold the 12 regional marker columns ({', '.join(REGIONAL_MARKERS)}); name the "
                f"feature columns explicitly (--features). Numeric columns: {', '.join(candidates) or '(none)'}."
            )
    else:
        feats = list(features)
        absent = [f for f in feats if f not in header]
        if absent:
            raise InputError(
                f"{name} lacks the feature column(s): {', '.join(absent)} (missing features). Columns: {', '.join(header)}."
            )
    x = np.full((len(rows), len(feats)), np.nan)
    for i, r in enumerate(rows):
        for j, f in enumerate(feats):
            try:
                x[i, j] = _num(r.get(f, ""))
            except ValueError:
                raise InputError(f"{name} line {i + 2}: feature '{f}' is not a number ('{r.get(f)}').") from None
    labels = np.array([(r.get(label_column, "") or "").strip() if label_column else "" for r in rows], dtype=object)
    keep = np.all(np.isfinite(x), axis=1)
    if label_column:
        keep &= np.array([bool(v) for v in labels])
    groups = None
    if group_column:
        groups = np.array([(r.get(group_column, "") or "").strip() for r in rows], dtype=object)
        keep &= np.array([bool(g) for g in groups])
    id_cols = [c for c in (group_column, *id_columns) if c and c in header]
    id_cols = list(dict.fromkeys(id_cols))
    ids = tuple(" ".join((r.get(c, "") or "").strip() for c in id_cols) or f"row {i + 2}" for i, r in enumerate(rows))
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise InputError(f"{name}: no row has all features{' and a label' if label_column else ''}.")
    return MarkerTable(
        features=x[idx], labels=labels[idx].astype(str), feature_names=tuple(feats),
        groups=None if groups is None else groups[idx].astype(str), ids=tuple(ids[i] for i in idx),
        label_column=label_column or "", group_column=group_column, n_dropped=int(len(rows) - idx.size), source=str(path),
    )


def data_sha256(table: MarkerTable) -> str:
    """SHA-256 of the training data: feature names, feature values (float64, C order), labels and groups."""
    h = hashlib.sha256()
    h.update("\x1f".join(table.feature_names).encode())
    h.update(np.ascontiguousarray(table.features, dtype="<f8").tobytes())
    h.update("\x1f".join(table.labels.tolist()).encode())
    if table.groups is not None:
        h.update("\x1f".join(table.groups.tolist()).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- models
def make_model(settings: ClassifierSettings, seed: int | None = None):
    """A fresh scikit-learn classifier for ``settings.model``."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rs = settings.seed if seed is None else seed
    if settings.model == "random_forest":
        return RandomForestClassifier(n_estimators=settings.n_estimators, random_state=rs, n_jobs=settings.n_jobs)
    if settings.model == "gradient_boosting":
        return GradientBoostingClassifier(n_estimators=settings.n_estimators, random_state=rs)
    return Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=2000))])


def importances(model, n_features: int) -> np.ndarray:
    """Relative feature importances, largest = 1.0: impurity importances of trees, |coefficients| of the
    standardised logistic regression (mean over classes)."""
    est = model.steps[-1][1] if hasattr(model, "steps") else model
    if hasattr(est, "feature_importances_"):
        imp = np.asarray(est.feature_importances_, dtype=float)
    elif hasattr(est, "coef_"):
        imp = np.abs(np.asarray(est.coef_, dtype=float)).mean(axis=0)
    else:  # pragma: no cover - all our models have one of them
        imp = np.zeros(n_features)
    top = imp.max() if imp.size else 0.0
    return imp / top if top > 0 else imp


def repeated_splits(table: MarkerTable, settings: ClassifierSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """``settings.repeats`` (train, test) index pairs. With groups: one fold of a shuffled
    StratifiedGroupKFold per repeat (no group on both sides); without: StratifiedShuffleSplit."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    y = table.labels
    _check_classes(table)
    x = np.zeros((y.size, 1))
    if table.groups is None:
        sss = StratifiedShuffleSplit(n_splits=settings.repeats, test_size=settings.test_fraction, random_state=settings.seed)
        return [(tr, te) for tr, te in sss.split(x, y)]
    n_folds = max(2, round(1.0 / settings.test_fraction))
    n_groups = len(set(table.groups.tolist()))
    if n_groups < n_folds:
        raise InputError(f"Only {n_groups} patients: group-aware {n_folds}-fold splits need at least {n_folds}.")
    out = []
    for r in range(settings.repeats):
        sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=settings.seed + r)
        out.append(next(iter(sgkf.split(x, y, table.groups))))
    return out


def _check_classes(table: MarkerTable) -> None:
    classes, counts = np.unique(table.labels, return_counts=True)
    if classes.size < 2:
        raise InputError(f"The label column '{table.label_column}' holds one class only ({classes[0]}); need two or more.")
    if counts.min() < 4:
        raise InputError(
            f"Class '{classes[np.argmin(counts)]}' has {counts.min()} sample(s); repeated 75/25 splits need at least 4 "
            "per class."
        )


# ---------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Evaluation:
    """Repeated-split test metrics (one dict per repeat) and their means/SDs, importances, ROC curves."""

    settings: ClassifierSettings
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    per_repeat: tuple[dict, ...]
    importances: np.ndarray  # mean over repeats, largest = 1
    roc_curves: tuple[tuple[np.ndarray, np.ndarray], ...] = field(default_factory=tuple)  # binary only
    n_samples: int = 0
    n_groups: int = 0

    def summary(self) -> dict:
        keys = [k for k in self.per_repeat[0] if isinstance(self.per_repeat[0][k], float)]
        out = {"model": self.settings.model, "repeats": len(self.per_repeat), "n_samples": self.n_samples,
               "n_patients": self.n_groups}
        for k in keys:
            vals = np.array([r[k] for r in self.per_repeat], dtype=float)
            out[f"{k}_mean"] = float(np.nanmean(vals))
            out[f"{k}_sd"] = float(np.nanstd(vals, ddof=1)) if vals.size > 1 else 0.0
        return out

    def importance_rows(self) -> list[dict]:
        order = np.argsort(-self.importances)
        return [{"feature": self.feature_names[i], "relative_importance": float(self.importances[i])} for i in order]


def _metrics(y_true, y_pred, proba, classes) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(classes), zero_division=0)
    out = {"accuracy": float(accuracy_score(y_true, y_pred)),
           "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred))}
    for i, c in enumerate(classes):
        out[f"precision_{c}"] = float(p[i])
        out[f"recall_{c}"] = float(r[i])
        out[f"f1_{c}"] = float(f[i])
    try:
        if len(classes) == 2:
            out["roc_auc"] = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
        else:
            out["roc_auc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=list(classes)))
    except ValueError:
        out["roc_auc"] = float("nan")  # a test split with one class
    return out


def evaluate(
    table: MarkerTable,
    settings: ClassifierSettings = ClassifierSettings(),
    *,
    progress: ProgressCallback | Progress | None = None,
) -> Evaluation:
    """Train on each repeated split's training part and score on its test part (never on training data)."""
    from sklearn.metrics import roc_curve

    prog = Progress.wrap(progress)
    classes = table.classes
    splits = repeated_splits(table, settings)
    rows, imps, rocs = [], [], []
    for i, (tr, te) in enumerate(prog.iterate(splits, f"evaluating {settings.model}")):
        if table.groups is not None and set(table.groups[tr]) & set(table.groups[te]):  # pragma: no cover
            raise AssertionError("a patient is on both sides of a split")
        model = make_model(settings, settings.seed + i)
        model.fit(table.features[tr], table.labels[tr])
        proba = _aligned_proba(model, table.features[te], classes)
        pred = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)].astype(str)
        m = _metrics(table.labels[te], pred, proba, classes)
        m.update(repeat=i, n_train=int(tr.size), n_test=int(te.size))
        rows.append(m)
        imps.append(importances(model, len(table.feature_names)))
        if len(classes) == 2 and len(set(table.labels[te])) == 2:
            fpr, tpr, _ = roc_curve(table.labels[te] == classes[1], proba[:, 1])
            rocs.append((fpr, tpr))
    imp = np.mean(imps, axis=0)
    imp = imp / imp.max() if imp.max() > 0 else imp
    n_groups = len(set(table.groups.tolist())) if table.groups is not None else table.labels.size
    return Evaluation(settings, classes, table.feature_names, tuple(rows), imp, tuple(rocs), table.labels.size, n_groups)


def _aligned_proba(model, x, classes) -> np.ndarray:
    """predict_proba with columns in the order of ``classes`` (a training split may miss a class)."""
    proba = model.predict_proba(x)
    out = np.zeros((x.shape[0], len(classes)))
    for j, c in enumerate(model.classes_):
        out[:, classes.index(str(c))] = proba[:, j]
    return out


def learning_curve_data(table: MarkerTable, settings: ClassifierSettings, sizes=(0.2, 0.4, 0.6, 0.8, 1.0)) -> dict:
    """Train and test scores (ROC AUC for two classes, else accuracy) against training-set size, on the
    same group-aware splits as :func:`evaluate` (test parts never used for training)."""
    from sklearn.model_selection import learning_curve

    splits = repeated_splits(table, settings)
    scoring = "roc_auc" if len(table.classes) == 2 else "accuracy"
    y = table.labels if len(table.classes) > 2 else (table.labels == table.classes[1]).astype(int)
    n_abs, train, test = learning_curve(
        make_model(settings), table.features, y, cv=splits, train_sizes=list(sizes), scoring=scoring,
        shuffle=True, random_state=settings.seed,
    )
    return {"train_sizes": n_abs.tolist(), "train_scores": train.tolist(), "test_scores": test.tolist(), "scoring": scoring}


# ------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from .image_io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _plt().close(fig)
    return path


def plot_roc(evaluation: Evaluation, path: str | Path, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for fpr, tpr in evaluation.roc_curves:
        ax.plot(fpr, tpr, color="tab:blue", alpha=0.35, lw=1)
    s = evaluation.summary()
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title or evaluation.settings.model}\nROC of {len(evaluation.roc_curves)} test splits, "
                 f"AUC {s.get('roc_auc_mean', float('nan')):.3f} +/- {s.get('roc_auc_sd', float('nan')):.3f}", fontsize=9)
    return _save(fig, Path(path))


def plot_learning_curve(data: dict, path: str | Path, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    n = np.asarray(data["train_sizes"])
    for key, colour in (("train_scores", "tab:orange"), ("test_scores", "tab:blue")):
        s = np.asarray(data[key])
        ax.plot(n, s.mean(1), "o-", color=colour, label=key.split("_")[0])
        ax.fill_between(n, s.mean(1) - s.std(1), s.mean(1) + s.std(1), color=colour, alpha=0.2)
    ax.set_xlabel("training discs")
    ax.set_ylabel(data["scoring"])
    ax.legend()
    ax.set_title(title or "learning curve (group-aware repeated splits)", fontsize=9)
    return _save(fig, Path(path))


def plot_importances(evaluation: Evaluation, path: str | Path) -> Path:
    plt = _plt()
    rows = evaluation.importance_rows()[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(rows) + 1.2))
    ax.barh([r["feature"] for r in rows], [r["relative_importance"] for r in rows], color="tab:green")
    ax.set_xlabel("relative importance (largest = 1.0)")
    fig.tight_layout()
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------------- train / save
@dataclass(frozen=True)
class TrainedModel:
    model: object
    metadata: dict


def _versions() -> dict:
    import sklearn
    import skops

    from . import __version__

    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "skops": skops.__version__, "discanalysis": __version__}


def train(table: MarkerTable, settings: ClassifierSettings = ClassifierSettings(), evaluation: Evaluation | None = None) -> TrainedModel:
    """Fit ``settings.model`` on the whole table (report the repeated-split evaluation, not training scores)."""
    _check_classes(table)
    model = make_model(settings)
    model.fit(table.features, table.labels)
    classes, counts = np.unique(table.labels, return_counts=True)
    meta = {
        "format": "discanalysis-classifier-1",
        "model": settings.model,
        "settings": asdict(settings),
        "feature_names": list(table.feature_names),
        "label_column": table.label_column,
        "group_column": table.group_column,
        "classes": [str(c) for c in model.classes_],
        "class_counts": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        "n_samples": int(table.labels.size),
        "training_data": table.source,
        "training_data_sha256": data_sha256(table),
        "versions": _versions(),
        "importances": dict(zip(table.feature_names, importances(model, len(table.feature_names)).tolist(), strict=True)),
    }
    if evaluation is not None:
        meta["evaluation"] = evaluation.summary()
    return TrainedModel(model, meta)


def metadata_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".skops") + ".json")


def save_model(trained: TrainedModel, path: str | Path) -> tuple[Path, Path]:
    """Write ``<name>.skops`` (skops format) and ``<name>.json`` (metadata incl. the model file's SHA-256)."""
    import skops.io as sio

    from .image_io import atomic_path, write_text
    from .resources import sha256_of

    p = Path(path)
    if p.suffix != ".skops":
        raise InputError(f"Model files end in .skops (got {p.name}).")
    with atomic_path(p) as tmp:
        sio.dump(trained.model, tmp)
    meta = {**trained.metadata, "model_file_sha256": sha256_of(p)}
    mp = write_text(json.dumps(meta, indent=2), metadata_path(p))
    return p, mp


def load_model(path: str | Path) -> TrainedModel:
    """Load a model saved by :func:`save_model`, checking its metadata, hash and the types it contains."""
    import skops.io as sio

    from .resources import sha256_of

    p = Path(path)
    mp = metadata_path(p)
    if not p.is_file():
        raise InputError(f"Model file not found: {p}.")
    if not mp.is_file():
        raise InputError(f"The metadata file {mp.name} of model {p.name} is missing; keep the .json next to the .skops.")
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{mp} is not valid JSON ({exc}).") from None
    if meta.get("format") != "discanalysis-classifier-1":
        raise InputError(f"{mp.name} is not DiscAnalysis classifier metadata.")
    if meta.get("model_file_sha256") != sha256_of(p):
        raise InputError(f"{p.name} does not match the SHA-256 recorded in {mp.name}: the model file was changed or swapped.")
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as exc:  # noqa: BLE001 - any parse failure means not a valid skops file
        raise InputError(f"{p} is not a readable skops model ({exc}).") from None
    refused = sorted(set(untrusted) - _ALLOWED_EXTRA_TYPES)
    if refused:
        raise InputError(f"{p.name} contains types DiscAnalysis does not trust: {', '.join(refused)}. Refusing to load it.")
    model = sio.load(p, trusted=list(untrusted))
    return TrainedModel(model, meta)


def check_features(model_features: Sequence[str], table_features: Sequence[str]) -> None:
    """Raise InputError listing missing / extra features when the table's features differ from the model's."""
    missing = [f for f in model_features if f not in table_features]
    extra = [f for f in table_features if f not in model_features]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if extra:
            parts.append(f"extra: {', '.join(extra)}")
        raise InputError(
            f"The table's features do not match the model's ({'; '.join(parts)}). The model was trained on: "
            f"{', '.join(model_features)}. Compute the same markers, or give --features to pick the model's columns."
        )


def predict(trained: TrainedModel, table: MarkerTable) -> list[dict]:
    """One row per disc: identifier, predicted class and class probabilities."""
    feats = trained.metadata["feature_names"]
    check_features(feats, table.feature_names)
    order = [table.feature_names.index(f) for f in feats]
    x = table.features[:, order]
    proba = trained.model.predict_proba(x)
    classes = [str(c) for c in trained.model.classes_]
    rows = []
    for i in range(x.shape[0]):
        row = {"id": table.ids[i], "predicted": classes[int(np.argmax(proba[i]))]}
        row.update({f"probability_{c}": float(proba[i, j]) for j, c in enumerate(classes)})
        rows.append(row)
    return rows


def write_rows_csv(rows: Sequence[dict], path: str | Path) -> Path:
    from .image_io import write_csv

    return write_csv(rows, path)
