"""The whole-patient pipeline and the resumable batch runner, on the synthetic phantom."""

import csv
import json

import pytest

from DiscAnalysisLib.cli.main import main
from DiscAnalysisLib.phantom import PhantomSettings, make_phantom, write_phantom
from DiscAnalysisLib.pipeline import (
    DONE_FILE,
    PatientInputs,
    PipelineSettings,
    discover_cases,
    run_batch,
    run_patient,
)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    ph = make_phantom(PhantomSettings(seed=5))
    return ph, write_phantom(ph, tmp_path_factory.mktemp("phantom"))


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_patient_with_given_labels_and_series(phantom_files, tmp_path):
    ph, paths = phantom_files
    t2 = tuple(str(p) for k, p in sorted(paths.items()) if k.startswith("t2_series/"))
    inputs = PatientInputs(image=str(paths["t2w"]), case_id="p1", labels=str(paths["labels"]), age_years=45, sex="F",
                           t2_series=t2)
    result = run_patient(inputs, tmp_path / "p1", PipelineSettings(tta=False))
    assert [r["level"] for r in result.rows] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    for r in result.rows:
        assert r["grade"] in (1, 2, 3, 4, 5)
        assert 0 < r["grade_confidence"] <= 1
        assert r["dh_mm"] == pytest.approx(ph.disc_height_mm[r["level"]] * 0.976, rel=0.1)
        assert 40 < r["t2_mean_ms"] < 90  # whole-disc mean of annulus (55 ms) and nucleus
        assert r["t1rho_mean_ms"] is None  # no T1rho series given
    out = tmp_path / "p1"
    for name in ("labels.nrrd", "markers.csv", "markers.columns.csv", "grades.csv", "results.csv", "results.json",
                 "report.html", DONE_FILE, "relaxometry_t2/T2_ms.nrrd"):
        assert (out / name).is_file(), name
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 5 and rows[0]["level"] == "L1-L2"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2  # image + T2 map
    assert not list(out.rglob(".*.tmp")) and not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_labelmap_on_another_grid_is_refused(phantom_files, tmp_path):
    import SimpleITK as sitk

    ph, paths = phantom_files
    small = sitk.Image(10, 10, 3, sitk.sitkUInt8)
    sitk.WriteImage(small, str(tmp_path / "bad_labels.nrrd"))
    inputs = PatientInputs(image=str(paths["t2w"]), labels=str(tmp_path / "bad_labels.nrrd"))
    from DiscAnalysisLib.errors import InputError

    with pytest.raises(InputError, match="grid"):
        run_patient(inputs, tmp_path / "x", PipelineSettings(report=False, tta=False))
    assert not (tmp_path / "x" / DONE_FILE).exists()


def test_batch_is_resumable_and_survives_a_bad_case(phantom_files, tmp_path):
    ph, paths = phantom_files
    (tmp_path / "broken.nrrd").write_bytes(b"not an image")
    cases_csv = tmp_path / "cases.csv"
    cases_csv.write_text(
        "case_id,image,labels,age,sex\n"
        f"a,{paths['t2w']},{paths['labels']},40,F\n"
        f"b,{paths['t2w']},{paths['labels']},60,M\n"
        f"bad,broken.nrrd,,,\n"
    )
    cases = discover_cases(cases_csv)
    assert [c.name for c in cases] == ["a", "b", "bad"]
    settings = PipelineSettings(report=False, tta=False)
    # "interrupted" run: only the first case
    first = run_batch(cases[:1], tmp_path / "out", settings)
    assert first.done == ("a",)
    full = run_batch(cases, tmp_path / "out", settings)
    assert full.skipped == ("a",) and full.done == ("b",)
    assert [cid for cid, _ in full.failed] == ["bad"]
    assert "Cannot read" in full.failed[0][1]
    summary_resumed = (tmp_path / "out" / "summary.csv").read_text()
    # uninterrupted run into a fresh folder gives the same summary
    run_batch(cases, tmp_path / "fresh", settings)
    assert (tmp_path / "fresh" / "summary.csv").read_text() == summary_resumed
    rows = _read_csv(tmp_path / "out" / "summary.csv")
    assert len(rows) == 10 and {r["case_id"] for r in rows} == {"a", "b"}
    failures = _read_csv(tmp_path / "out" / "failures.csv")
    assert [f["case_id"] for f in failures] == ["bad"]


def test_cases_csv_errors(tmp_path):
    from DiscAnalysisLib.errors import InputError

    bad = tmp_path / "c.csv"
    bad.write_text("case_id,path\nx,y\n")
    with pytest.raises(InputError, match="'image' column"):
        discover_cases(bad)
    bad.write_text("case_id,image,sex\nx,y.nrrd,Q\n")
    with pytest.raises(InputError, match="sex must be"):
        discover_cases(bad)
    bad.write_text("case_id,image\nx,y.nrrd\nx,z.nrrd\n")
    with pytest.raises(InputError, match="twice"):
        discover_cases(bad)


def test_run_cli_segments_the_phantom_end_to_end(phantom_files, tmp_path, capsys):
    _, paths = phantom_files
    code = main(["--progress", "none", "run", str(paths["t2w"]), "--out", str(tmp_path / "r"), "--age", "50",
                 "--sex", "M", "--no-tta"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Report:" in printed
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["level"] for r in data["levels"]] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    assert (tmp_path / "r" / "segmentation_qc.json").is_file()


def test_batch_cli_exit_code_reports_failures(tmp_path, capsys):
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "x.nrrd").write_bytes(b"junk")
    code = main(["--progress", "none", "batch", str(folder), "--out", str(tmp_path / "o")])
    assert code == 3
    assert "1 failed" in capsys.readouterr().out


def test_patient_grades_carry_the_segmentations_level_naming_doubt(phantom_files, tmp_path, monkeypatch):
    """When the segmentation's lowest-disc judge overrode the size rule, each graded level of the patient's results
    says that its name may be one level off (the whole-patient flags alone are easy to miss in the table)."""
    import types

    import DiscAnalysisLib.segmentation as segmentation
    from DiscAnalysisLib.segmentation.postprocess import JUDGE_KEPT_FLAG

    _, paths = phantom_files
    real = segmentation.segment_image

    def judged(image, settings=None, progress=None, **kw):
        seg = real(image, settings, progress, **kw)
        return types.SimpleNamespace(labels=seg.labels, flags=(*seg.flags, JUDGE_KEPT_FLAG), to_rows=seg.to_rows,
                                     to_dict=seg.to_dict)

    monkeypatch.setattr(segmentation, "segment_image", judged)
    result = run_patient(PatientInputs(image=str(paths["t2w"]), case_id="j"), tmp_path / "j", PipelineSettings(tta=False))
    assert JUDGE_KEPT_FLAG in result.flags
    graded = [r for r in result.rows if r["grade"] is not None]
    assert graded and all("lowest-disc judge" in r["qc"] for r in graded)
