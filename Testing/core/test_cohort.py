"""Cohort CSV: loading, path resolution and every validation error."""

import numpy as np
import pytest
import SimpleITK as sitk

from DiscAnalysisLib.cohort import load_cohort, write_cohort_csv
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.image_io import write_image


def _map(path, size=(6, 5, 4), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), value=50.0):
    img = sitk.GetImageFromArray(np.full(size[::-1], value, np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    write_image(img, path)
    return path


def _cohort(tmp_path, n=4, **overrides):
    rows = []
    for i in range(n):
        _map(tmp_path / "maps" / f"s{i}_t2.nrrd")
        rows.append({"subject": f"S{i}", "level": "L4-L5", "map_t2": f"maps/s{i}_t2.nrrd", "age": 30 + i,
                     "sex": "FM"[i % 2], "bmi": 22.5})
    for fn in overrides.values():
        fn(rows)
    return write_cohort_csv(rows, tmp_path / "cohort.csv")


def test_relative_paths_are_resolved_against_the_csv_folder(tmp_path, monkeypatch):
    csv_path = _cohort(tmp_path)
    monkeypatch.chdir("/")
    c = load_cohort(csv_path)
    assert c.map_columns == ("map_t2",) and c.value_columns == ("age", "sex", "bmi")
    assert all(r.maps["map_t2"] == tmp_path / "maps" / f"s{i}_t2.nrrd" for i, r in enumerate(c.rows))
    assert c.levels == ("L4-L5",) and c.grids["L4-L5"].size == (6, 5, 4)


def test_numeric_covariates_and_two_valued_text_coding(tmp_path):
    c = load_cohort(_cohort(tmp_path))
    age, note = c.numeric(c.rows, "age")
    assert age.tolist() == [30, 31, 32, 33] and note == ""
    sex, note = c.numeric(c.rows, "sex")
    assert sex.tolist() == [0, 1, 0, 1] and note == "sex: F=0, M=1"


def test_missing_required_column(tmp_path):
    (tmp_path / "c.csv").write_text("subject,map_t2\nS1,a.nrrd\n")
    with pytest.raises(InputError, match="lacks the required column.*level"):
        load_cohort(tmp_path / "c.csv")


def test_no_map_column(tmp_path):
    (tmp_path / "c.csv").write_text("subject,level,t2\nS1,L4-L5,a.nrrd\n")
    with pytest.raises(InputError, match="no map column"):
        load_cohort(tmp_path / "c.csv")


def test_missing_map_file(tmp_path):
    path = _cohort(tmp_path, drop=lambda rows: rows[2].update(map_t2="maps/nope.nrrd"))
    with pytest.raises(InputError, match=r"1 map file\(s\).*line 4 map_t2.*nope.nrrd"):
        load_cohort(path)


def test_maps_on_different_grids(tmp_path):
    def other_grid(rows):
        _map(tmp_path / "maps" / "odd.nrrd", spacing=(1.0, 1.0, 2.0))
        rows[1]["map_t2"] = "maps/odd.nrrd"

    with pytest.raises(InputError, match="different grids.*odd.nrrd"):
        load_cohort(_cohort(tmp_path, odd=other_grid))


def test_non_numeric_covariate(tmp_path):
    path = _cohort(tmp_path, bad=lambda rows: [r.update(bmi=v) for r, v in zip(rows, ["low", "high", "mid", "low"], strict=True)])
    c = load_cohort(path)
    with pytest.raises(InputError, match="'bmi'.*not numeric"):
        c.numeric(c.rows, "bmi")


def test_covariate_mixing_numbers_and_text(tmp_path):
    c = load_cohort(_cohort(tmp_path, bad=lambda rows: rows[1].update(age="forty")))
    with pytest.raises(InputError, match="'age'.*mixes numbers and text.*line 3"):
        c.numeric(c.rows, "age")


def test_unknown_covariate_column(tmp_path):
    c = load_cohort(_cohort(tmp_path))
    with pytest.raises(InputError, match="no column 'odi'"):
        c.numeric(c.rows, "odi")


def test_duplicate_subject_level_timepoint(tmp_path):
    with pytest.raises(InputError, match="line 4 repeats subject 'S1'.*line 3"):
        load_cohort(_cohort(tmp_path, dup=lambda rows: rows[2].update(subject="S1")))


def test_same_subject_at_two_timepoints_is_fine(tmp_path):
    def two_timepoints(rows):
        for i, r in enumerate(rows):
            r["subject"] = f"S{i // 2}"
            r["timepoint"] = i % 2

    c = load_cohort(_cohort(tmp_path, n=6, tp=two_timepoints))
    assert c.has_timepoints and len(c.rows) == 6


def test_too_few_subjects(tmp_path):
    with pytest.raises(InputError, match="2 subject.*at least 3"):
        load_cohort(_cohort(tmp_path, n=2))


def test_missing_cohort_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_cohort(tmp_path / "absent.csv")


def test_empty_cell_is_missing_value(tmp_path):
    c = load_cohort(_cohort(tmp_path, gap=lambda rows: rows[0].update(age="")))
    age, _ = c.numeric(c.rows, "age")
    assert np.isnan(age[0]) and np.isfinite(age[1:]).all()
