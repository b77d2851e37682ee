"""``discanalysis classify train|evaluate|predict``: classifiers on regional disc markers (CSV)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _common(p, label_required: bool) -> None:
    p.add_argument("table", metavar="MARKERS.csv", help="one row per disc: feature columns, label, patient")
    if label_required:
        p.add_argument("--label", required=True, help="label column (e.g. fissure, pain, degenerated)")
    p.add_argument("--group", default=None, help="patient column: discs of one patient are never on both sides "
                   "of a split (strongly recommended)")
    p.add_argument("--features", default="", help="comma-separated feature columns (default: the 12 regional "
                   "markers si_mean, si_sd, si_z1_mean ... si_z5_sd; for predict: the model's features)")


def _training_options(p) -> None:
    p.add_argument("--model", default="random_forest", choices=("random_forest", "gradient_boosting", "logistic_regression"))
    p.add_argument("--trees", type=int, default=100, help="trees of the random forest / boosting stages (default 100)")
    p.add_argument("--repeats", type=int, default=10, help="repeated 75/25 splits (default 10)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share held out per repeat (default 0.25)")
    p.add_argument("--seed", type=int, default=0)


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="train / evaluate / predict classifiers on regional disc markers")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ev = s.add_parser("evaluate", help="repeated group-aware 75/25 splits: metrics, importances, ROC, learning curve")
    _common(ev, True)
    _training_options(ev)
    ev.add_argument("--compare", action="store_true", help="also evaluate the other models on the same splits")
    ev.add_argument("--out", required=True, metavar="DIR")
    ev.set_defaults(handler=run_evaluate)
    tr = s.add_parser("train", help="fit on all rows and save MODEL.skops + MODEL.json (metadata, data hash)")
    _common(tr, True)
    _training_options(tr)
    tr.add_argument("--model-out", required=True, metavar="MODEL.skops")
    tr.add_argument("--no-evaluate", action="store_true", help="skip the repeated-split evaluation stored in the metadata")
    tr.set_defaults(handler=run_train)
    pr = s.add_parser("predict", help="predict with a saved model; refuses tables whose features differ")
    _common(pr, False)
    pr.add_argument("--model", required=True, metavar="MODEL.skops")
    pr.add_argument("--out", required=True, metavar="PREDICTIONS.csv")
    pr.set_defaults(handler=run_predict)


def _features(args):
    return tuple(f.strip() for f in args.features.split(",") if f.strip()) or None


def _settings(args, model=None):
    from ..classify import ClassifierSettings

    return ClassifierSettings(model=model or args.model, n_estimators=args.trees, repeats=args.repeats,
                              test_fraction=args.test_fraction, seed=args.seed)


def run_evaluate(args: argparse.Namespace) -> int:
    from .. import classify as C
    from .main import progress_callback

    table = C.load_marker_table(args.table, args.label, features=_features(args), group_column=args.group)
    out = Path(args.out)
    models = [args.model] + ([m for m in C.MODELS if m != args.model] if args.compare else [])
    summaries = []
    print(f"{table.labels.size} discs ({table.n_dropped} rows with missing values left out), classes "
          f"{', '.join(f'{c}: {int((table.labels == c).sum())}' for c in table.classes)}; features: {', '.join(table.feature_names)}")
    if args.group is None:
        print("warning: no --group column: discs of one patient may fall on both sides of a split (optimistic scores)")
    for m in models:
        settings = _settings(args, m)
        with progress_callback(args, f"evaluate {m}") as cb:
            ev = C.evaluate(table, settings, progress=cb)
        s = ev.summary()
        summaries.append(s)
        C.write_rows_csv(list(ev.per_repeat), out / f"{m}_per_repeat.csv")
        C.write_rows_csv(ev.importance_rows(), out / f"{m}_importances.csv")
        C.plot_importances(ev, out / f"{m}_importances.png")
        if ev.roc_curves:
            C.plot_roc(ev, out / f"{m}_roc.png")
        if m == args.model:
            lc = C.learning_curve_data(table, settings)
            C.plot_learning_curve(lc, out / f"{m}_learning_curve.png")
        print(f"{m}: accuracy {s['accuracy_mean']:.3f} ± {s['accuracy_sd']:.3f}, balanced accuracy "
              f"{s['balanced_accuracy_mean']:.3f}, ROC AUC {s.get('roc_auc_mean', float('nan')):.3f} "
              f"({s['repeats']} test splits)")
    C.write_rows_csv(summaries, out / "summary.csv")
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    print(f"metrics, importances and plots written to {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .. import classify as C
    from .main import progress_callback

    table = C.load_marker_table(args.table, args.label, features=_features(args), group_column=args.group)
    settings = _settings(args)
    print(f"{table.labels.size} discs; features: {', '.join(table.feature_names)}")
    if args.group is None:
        print("warning: no --group column: the evaluation may put discs of one patient on both sides of a split")
    ev = None
    if not args.no_evaluate:
        with progress_callback(args, "evaluate") as cb:
            ev = C.evaluate(table, settings, progress=cb)
    trained = C.train(table, settings, ev)
    model_path, meta_path = C.save_model(trained, args.model_out)
    print(f"model written to {model_path} (metadata {meta_path.name}; training data SHA-256 "
          f"{trained.metadata['training_data_sha256'][:16]}...)")
    if ev is not None:
        s = ev.summary()
        print(f"repeated-split test accuracy {s['accuracy_mean']:.3f} ± {s['accuracy_sd']:.3f}, ROC AUC "
              f"{s.get('roc_auc_mean', float('nan')):.3f}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from .. import classify as C

    trained = C.load_model(args.model)
    feats = _features(args)
    if feats is not None:  # an explicit feature list must be the model's (names and set)
        C.check_features(trained.metadata["feature_names"], feats)
    else:
        feats = tuple(trained.metadata["feature_names"])
    table = C.load_marker_table(args.table, None, features=feats, group_column=args.group)
    rows = C.predict(trained, table)
    C.write_rows_csv(rows, args.out)
    print(f"{len(rows)} predictions written to {args.out} ({table.n_dropped} rows with missing features skipped)")
    return 0
