"""The validation scoring of scripts/build_grading_ensemble.py (synthetic logits of known truth)."""

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def build():
    return load_script("scripts/build_grading_ensemble.py")


def _samples(grades):
    # the first two are two images of one patient's disc; one image per disc otherwise
    return [SimpleNamespace(patient=max(i - 1, 0), level="L4-L5", grade=g) for i, g in enumerate(grades)]


def test_an_ensemble_is_scored_on_the_mean_of_its_members_after_one_fitted_temperature(build, tmp_path):
    rng = np.random.default_rng(0)
    grades = [2, 2, 1, 3, 3, 4, 5, 5, 2, 4, 3, 1]
    samples = _samples(grades)
    n = len(samples)
    right = np.zeros((1, 6, n, 5))
    right[0, :, np.arange(n), np.array(grades) - 1] = 4.0  # confident and correct
    noise = rng.normal(size=(1, 6, n, 5)) * 3
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    # the same file spelled two ways finds the same logits (realpath keys)
    logits = {str(a.resolve()): right + noise, str(b.resolve()): right - noise}
    res = build.evaluate_candidate([str(a), str(tmp_path / "." / "b.pt")], logits, samples)
    # the members' noise cancels in the mean: every disc right, the score is 1
    assert res["score"] == pytest.approx(1.0) and res["accuracy"] == 1.0
    # patient 0 has two images of one level: one prediction per disc
    assert res["n_discs"] == n - 1
    assert res["temperature"] == build._fit_temperature()(
        np.concatenate([right + noise, right - noise]).reshape(12, n, 5), np.array(grades) - 1)
    # one member alone is worse here (its noise does not cancel)
    alone = build.score(samples, right + noise, res["temperature"])
    assert alone["score"] < res["score"]
