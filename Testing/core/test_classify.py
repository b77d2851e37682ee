"""Classifiers on regional markers: group-aware splits, metrics, skops round trip, feature checks."""

import json

import numpy as np
import pytest

from DiscAnalysisLib import classify as C
from DiscAnalysisLib.cli.main import main
from DiscAnalysisLib.errors import InputError


def _markers_csv(path, n_patients=40, signal=1.5, seed=0, extra=None):
    """Synthetic markers: 3 discs per patient; zone-3 mean lower in 'deg' discs; a patient-level offset
    makes discs of one patient alike (what group-aware splitting protects against)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        offset = rng.normal(0, 0.5)
        for level in ("L3-L4", "L4-L5", "L5-S1"):
            deg = rng.random() < 0.45
            row = {"patient": f"P{p:03d}", "level": level}
            for m in C.REGIONAL_MARKERS:
                row[m] = float(rng.normal(offset, 1.0))
            row["si_z3_mean"] -= signal * deg
            row["si_mean"] -= 0.5 * signal * deg
            row["label"] = "deg" if deg else "ok"
            row.update(extra or {})
            rows.append(row)
    return C.write_rows_csv(rows, path)


@pytest.fixture
def table(tmp_path):
    return C.load_marker_table(_markers_csv(tmp_path / "m.csv"), "label", group_column="patient")


def test_default_features_are_the_12_regional_markers(table):
    assert table.feature_names == C.REGIONAL_MARKERS and len(table.feature_names) == 12
    assert table.features.shape == (120, 12) and table.classes == ("deg", "ok")


def test_group_aware_splits_never_put_a_patient_on_both_sides(table):
    splits = C.repeated_splits(table, C.ClassifierSettings(repeats=12))
    assert len(splits) == 12
    for tr, te in splits:
        assert not set(table.groups[tr]) & set(table.groups[te])
        assert len(tr) + len(te) == table.labels.size
        assert 0.15 < len(te) / table.labels.size < 0.35
    assert len({tuple(te) for _, te in splits}) > 10  # the repeats differ


def test_evaluation_metrics_and_importances(table):
    ev = C.evaluate(table, C.ClassifierSettings(repeats=4))
    s = ev.summary()
    assert s["repeats"] == 4 and s["n_patients"] == 40
    assert s["roc_auc_mean"] > 0.75 and s["accuracy_mean"] > 0.65
    for key in ("precision_deg_mean", "recall_ok_mean", "f1_deg_mean", "f1_ok_mean", "balanced_accuracy_mean"):
        assert 0 <= s[key] <= 1
    assert ev.importances.max() == pytest.approx(1.0)
    assert ev.importance_rows()[0]["feature"] == "si_z3_mean"
    assert len(ev.roc_curves) == 4


def test_null_labels_score_at_chance(tmp_path):
    table = C.load_marker_table(_markers_csv(tmp_path / "m.csv", signal=0.0, n_patients=60), "label", group_column="patient")
    s = C.evaluate(table, C.ClassifierSettings(repeats=5, n_estimators=50)).summary()
    assert 0.3 < s["roc_auc_mean"] < 0.7


@pytest.mark.parametrize("model", C.MODELS)
def test_save_load_round_trip(table, tmp_path, model):
    trained = C.train(table, C.ClassifierSettings(model=model, n_estimators=20))
    model_path, meta_path = C.save_model(trained, tmp_path / "model.skops")
    meta = json.loads(meta_path.read_text())
    assert meta["feature_names"] == list(C.REGIONAL_MARKERS)
    assert meta["training_data_sha256"] == C.data_sha256(table) and len(meta["training_data_sha256"]) == 64
    assert {"scikit-learn", "numpy", "skops", "python"} <= set(meta["versions"])
    assert model_path.read_bytes()[:2] == b"PK"  # a skops zip, not a pickle
    loaded = C.load_model(model_path)
    np.testing.assert_allclose(loaded.model.predict_proba(table.features), trained.model.predict_proba(table.features))


def test_data_hash_changes_with_the_data(table):
    other = C.MarkerTable(table.features + 1e-9, table.labels, table.feature_names, table.groups, table.ids,
                          table.label_column, table.group_column)
    assert C.data_sha256(other) != C.data_sha256(table)


def test_tampered_model_file_is_refused(table, tmp_path):
    model_path, _ = C.save_model(C.train(table, C.ClassifierSettings(n_estimators=5)), tmp_path / "m.skops")
    with open(model_path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InputError, match="SHA-256"):
        C.load_model(model_path)


def test_untrusted_types_are_refused(tmp_path):
    import skops.io as sio

    from DiscAnalysisLib.resources import sha256_of

    class Sneaky:  # a type skops does not trust
        pass

    path = tmp_path / "bad.skops"
    sio.dump({"payload": Sneaky()}, path)
    meta = {"format": "discanalysis-classifier-1", "feature_names": ["a"], "model_file_sha256": sha256_of(path)}
    C.metadata_path(path).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="does not trust"):
        C.load_model(path)


def test_prediction_refuses_mismatched_features(table, tmp_path):
    trained = C.train(table, C.ClassifierSettings(n_estimators=5))
    fewer = C.load_marker_table(_markers_csv(tmp_path / "p.csv"), None, features=C.REGIONAL_MARKERS[:10])
    with pytest.raises(InputError, match=r"missing: si_z5_mean, si_z5_sd"):
        C.predict(trained, fewer)
    with pytest.raises(InputError, match=r"extra: height_mm"):
        C.check_features(C.REGIONAL_MARKERS, (*C.REGIONAL_MARKERS, "height_mm"))
    rows = C.predict(trained, C.load_marker_table(tmp_path / "p.csv", None, group_column="patient"))
    assert len(rows) == 120 and rows[0]["id"] == "P000 L3-L4"
    assert abs(rows[0]["probability_deg"] + rows[0]["probability_ok"] - 1) < 1e-9


def test_features_are_never_guessed(tmp_path):
    import csv

    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "a", "grade", "label"])
        w.writerows([[f"P{i}", i, i % 5, "x" if i % 2 else "y"] for i in range(20)])
    with pytest.raises(InputError, match="name the feature columns explicitly.*a, grade"):
        C.load_marker_table(path, "label", group_column="patient")


def test_too_few_samples_in_a_class(tmp_path):
    table = C.load_marker_table(_markers_csv(tmp_path / "m.csv", n_patients=40), "label", group_column="patient")
    few = C.MarkerTable(table.features[:40], np.array(["ok"] * 38 + ["deg"] * 2), table.feature_names,
                        table.groups[:40], table.ids[:40], "label", "patient")
    with pytest.raises(InputError, match="'deg' has 2 sample"):
        C.evaluate(few)


def test_cli_train_evaluate_predict(tmp_path, capsys):
    csv_path = str(_markers_csv(tmp_path / "m.csv"))
    model = str(tmp_path / "rf.skops")
    assert main(["--progress", "none", "classify", "evaluate", csv_path, "--label", "label", "--group", "patient",
                 "--repeats", "2", "--trees", "10", "--compare", "--out", str(tmp_path / "ev")]) == 0
    for name in ("summary.csv", "random_forest_roc.png", "random_forest_learning_curve.png",
                 "gradient_boosting_importances.csv", "logistic_regression_per_repeat.csv"):
        assert (tmp_path / "ev" / name).is_file(), name
    assert main(["--progress", "none", "classify", "train", csv_path, "--label", "label", "--group", "patient",
                 "--repeats", "2", "--trees", "10", "--model-out", model]) == 0
    assert "evaluation" in json.loads((tmp_path / "rf.json").read_text())
    assert main(["classify", "predict", csv_path, "--model", model, "--out", str(tmp_path / "pred.csv")]) == 0
    assert (tmp_path / "pred.csv").read_text().startswith("id,predicted,probability_deg,probability_ok")
    capsys.readouterr()
    assert main(["classify", "predict", csv_path, "--model", model, "--features", "si_mean,si_sd",
                 "--out", str(tmp_path / "pred.csv")]) == 2
    assert "missing: si_z1_mean" in capsys.readouterr().err
