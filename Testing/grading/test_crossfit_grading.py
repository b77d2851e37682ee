"""Cross-fitting: the patient folds and the out-of-fold scoring of scripts/crossfit_grading.py (synthetic data)."""

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import load_script
from DiscAnalysisLib.grading.sudirman import patient_folds


def _samples(n_patients, rng):
    out = []
    for p in range(n_patients):
        grades = rng.choice([1, 2, 2, 2, 3, 3, 4, 5], size=3)
        out += [SimpleNamespace(patient=p, level=lev, grade=int(g)) for lev, g in zip(("L3-L4", "L4-L5", "L5-S1"), grades, strict=True)]
    return out


def test_patient_folds_cover_each_patient_once_balanced_and_stratified():
    rng = np.random.default_rng(1)
    samples = _samples(103, rng)
    folds = patient_folds(samples, range(103), k=5, seed=0)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == list(range(103))  # every patient exactly once
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    # the rare grade-1 patients are spread over the folds, not piled into one
    grade1 = {s.patient for s in samples if s.grade == 1}
    per_fold = [len(grade1 & set(f)) for f in folds]
    assert max(per_fold) - min(per_fold) <= 1
    # only the patients asked for, and deterministic for a seed
    assert patient_folds(samples, range(50), k=5, seed=0) == patient_folds(samples, range(50), k=5, seed=0)
    assert sorted(p for f in patient_folds(samples, range(50), k=5) for p in f) == list(range(50))
    with pytest.raises(ValueError):
        patient_folds(samples, range(10), k=1)


def _write_fold(path, grades, patients, logits, swa=None):
    extra = {"logits_swa": swa} if swa is not None else {}
    np.savez(path, logits=logits, grade=np.array(grades), patient=np.array(patients),
             level=np.array(["L4-L5"] * len(grades)), image=np.array(["x.png"] * len(grades)), **extra)


def test_out_of_fold_files_are_pooled_and_scored_one_prediction_per_disc(tmp_path):
    cf = load_script("scripts/crossfit_grading.py")
    grades = [1, 2, 3, 4, 5, 2]
    right = np.zeros((6, len(grades), 5))
    right[:, np.arange(6), np.array(grades) - 1] = 5.0
    wrong = np.roll(right, 1, axis=2)  # every disc one grade off
    _write_fold(tmp_path / "m_fold0_oof.npz", grades[:3], [0, 1, 2], right[:, :3], swa=wrong[:, :3])
    _write_fold(tmp_path / "m_fold1_oof.npz", grades[3:], [3, 4, 5], right[:, 3:], swa=wrong[:, 3:])
    final = cf.load_folds(tmp_path, "final")
    assert final["logits"].shape == (6, 6, 5) and final["n_folds"] == 2
    assert final["weights"] == [str(tmp_path / "m_fold0.pt"), str(tmp_path / "m_fold1.pt")]
    assert cf.score(final)["score"] == pytest.approx(1.0)
    assert cf.score(cf.load_folds(tmp_path, "swa"))["accuracy"] == 0.0
    # restricted to some patients
    part = cf.score(final, patients={0, 1})
    assert part["n_discs"] == 2 and part["n_patients"] == 2
    # a patient in two folds means the files do not belong together
    _write_fold(tmp_path / "m_fold2_oof.npz", [2], [0], right[:, :1])
    with pytest.raises(SystemExit, match="two folds"):
        cf.load_folds(tmp_path, "final")


def test_two_images_of_one_disc_give_one_prediction(tmp_path):
    cf = load_script("scripts/crossfit_grading.py")
    lg = np.zeros((1, 2, 5))
    lg[0, 0, 1], lg[0, 1, 2] = 3.0, 1.0  # image 1 says grade 2 strongly, image 2 grade 3 weakly
    pool = {"logits": lg, "grade": np.array([2, 2]), "patient": np.array([7, 7]), "level": np.array(["L5-S1", "L5-S1"])}
    res = cf.score(pool)
    assert res["n_discs"] == 1 and res["accuracy"] == 1.0


def test_grade_offsets_recover_an_under_called_rare_grade_and_are_checked_out_of_fold():
    cf = load_script("scripts/crossfit_grading.py")
    rng = np.random.default_rng(3)
    y = np.array([1] * 20 + [2] * 200 + [3] * 60)
    probs = np.full((len(y), 5), 0.02)
    probs[y == 2, 1] = 0.9
    probs[y == 3, 2] = 0.9
    probs[y == 1, 0], probs[y == 1, 1] = 0.3, 0.62  # grade 1 always loses to grade 2 by a margin
    probs = probs / probs.sum(1, keepdims=True)
    assert np.all(cf.decide(probs)[y == 1] == 2)
    b = cf.fit_offsets(probs, y)
    assert b[1] == 0.0 and b[0] > 0.5  # grade 1 lifted, grade 2 the reference
    assert np.all(cf.decide(probs, b) == y)
    folds = rng.integers(0, 5, len(y))
    pred, fitted = cf.nested_offsets(probs, y, folds)
    assert len(fitted) == 5 and np.all(pred == y)
    # offsets that cannot help stay at zero
    assert np.all(cf.fit_offsets(np.eye(5)[y - 1] * 0.9 + 0.02, y) == 0.0)
