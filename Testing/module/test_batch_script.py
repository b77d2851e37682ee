"""The pure helpers of Examples/slicer_batch_process_folder.py, imported without Slicer (argument parsing,
case discovery, covariates, the combined CSV), and its storage-node helper on a slicer-core scene."""

from __future__ import annotations

import ast
import csv
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "Examples" / "slicer_batch_process_folder.py"


@pytest.fixture(scope="module")
def batch():
    return load_script(SCRIPT, "slicer_batch_process_folder")


def _dicom(path):
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)


def test_importing_the_script_needs_no_slicer_application():
    """Only main() and the functions it calls may import slicer, DICOMLib or the module."""
    tree = ast.parse(SCRIPT.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not [n for n in names if n.split(".")[0] in ("slicer", "qt", "DICOMLib", "DiscAnalysis",
                                                                  "DiscAnalysisModuleLib")], names


def test_arguments(batch, tmp_path):
    (tmp_path / "cases").mkdir()
    args = batch.parseArguments(["--", "--cases", str(tmp_path / "cases"), "--out", str(tmp_path / "o"), "--register"])
    assert args.cases == tmp_path / "cases" and args.register and args.age_csv is None
    args = batch.parseArguments(["--cases", str(tmp_path / "cases"), "--out", str(tmp_path / "o")])
    assert not args.register and not args.overwrite
    with pytest.raises(batch.BatchInputError, match="is not a folder"):
        batch.parseArguments(["--cases", str(tmp_path / "absent"), "--out", str(tmp_path)])
    with pytest.raises(batch.BatchInputError, match="--age-csv .* not found"):
        batch.parseArguments(["--cases", str(tmp_path / "cases"), "--out", str(tmp_path), "--age-csv", str(tmp_path / "x.csv")])
    with pytest.raises(SystemExit):
        batch.parseArguments(["--out", str(tmp_path)])


def test_case_discovery(batch, tmp_path):
    for name in ("p02.nii.gz", "p01.nrrd", "P03.MHA", "notes.txt", ".hidden.nrrd"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "p04 dicom").mkdir()
    _dicom(tmp_path / "p04 dicom" / "IM0001")  # no extension: recognised by the DICM preamble
    (tmp_path / "p05").mkdir()
    (tmp_path / "p05" / "1.dcm").write_bytes(b"")
    (tmp_path / "empty folder").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.md").write_text("no images")
    cases = batch.discoverCases(tmp_path)
    assert [c for c, _ in cases] == ["P03", "p01", "p02", "p04 dicom", "p05"]
    assert dict(cases)["p02"] == tmp_path / "p02.nii.gz"
    assert batch.safeFileName("p04 dicom") == "p04_dicom" and batch.safeFileName("a/b:c") == "a_b_c"
    assert batch.safeFileName("...") == "case"


def test_case_discovery_refuses_clashes_and_empty_folders(batch, tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(batch.BatchInputError, match="No cases"):
        batch.discoverCases(tmp_path / "a")
    (tmp_path / "a" / "p1.nrrd").write_bytes(b"x")
    (tmp_path / "a" / "p1.nii.gz").write_bytes(b"x")
    with pytest.raises(batch.BatchInputError, match="same case name: p1"):
        batch.discoverCases(tmp_path / "a")


def test_covariates(batch, tmp_path):
    path = tmp_path / "ages.csv"
    path.write_text("\ufeffCase,Age,Sex\np01,63,f\np02,,M\np03,41.5,\n,50,F\n", encoding="utf-8")
    assert batch.readCovariates(path) == {
        "p01": {"age": 63.0, "sex": "F"}, "p02": {"age": None, "sex": "M"}, "p03": {"age": 41.5, "sex": None}}
    assert batch.readCovariates(None) == {}
    path.write_text("subject,age\np01,63\n")
    with pytest.raises(batch.BatchInputError, match="needs the columns 'case' and 'age'"):
        batch.readCovariates(path)
    path.write_text("case,age\np01,sixty\n")
    with pytest.raises(batch.BatchInputError, match="line 2: age 'sixty'"):
        batch.readCovariates(path)
    path.write_text("case,age,sex\np01,60,X\n")
    with pytest.raises(batch.BatchInputError, match="sex must be F or M"):
        batch.readCovariates(path)


def test_combined_csv_unions_columns_keeps_failures_and_reads_back(batch, tmp_path):
    rows = batch.caseRows("p01", [{"level": "L4-L5", "grade": 3, "t2_ms": 81.5}, {"level": "L5-S1", "grade": None}])
    rows.append(batch.failedRow("p02", "No disc found: check the image is a sagittal lumbar T2w."))
    rows += batch.caseRows("p03", [{"level": "L4-L5", "grade": 2, "height_mm": 10.25}])
    path = batch.writeCombinedCsv(tmp_path / "all.csv", rows)
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["case", "status", "level", "grade", "t2_ms", "reason", "height_mm"]
    assert [r["case"] for r in table] == ["p01", "p01", "p02", "p03"]
    assert table[1]["grade"] == "" and table[2]["status"] == "failed" and table[2]["level"] == ""
    assert table[3]["height_mm"] == "10.25"
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    again = batch.readCombinedCsv(path)
    assert again[1]["grade"] is None and again[0]["t2_ms"] == "81.5" and len(again) == 4
    assert batch.readCombinedCsv(tmp_path / "none.csv") == []


def test_storage_nodes_are_added_for_the_bundle(batch):
    slicer = pytest.importorskip("slicer", reason="needs real MRML nodes: pip install slicer-core")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("needs real MRML nodes: pip install slicer-core")
    import SimpleITK as sitk

    from DiscAnalysisLib import mrml

    scene = slicer.vtkMRMLScene()
    volume = mrml.volume_node_from_image(scene, sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32)), "v")
    table = mrml.table_node_from_rows(scene, [{"level": "L4-L5", "grade": 3}], "t")
    assert volume.GetStorageNode() is None and table.GetStorageNode() is None
    assert batch.addMissingStorageNodes(scene) == 2
    assert volume.GetStorageNode() is not None and table.GetStorageNode() is not None
    assert batch.addMissingStorageNodes(scene) == 0


def test_main_orchestration_with_a_stand_in_for_slicer(batch, tmp_path, monkeypatch):
    """main(): failures become rows and do not stop the batch, existing scenes are skipped with their
    earlier rows kept, dependencies are ensured once without dialogs, exit codes 2 / 1 / 0."""
    import types

    cases, out = tmp_path / "cases", tmp_path / "out"
    cases.mkdir()
    for name in ("p01.nrrd", "p02.nrrd", "p03.nrrd"):
        (cases / name).write_bytes(b"x")
    assert batch.main(["--cases", str(tmp_path / "absent"), "--out", str(out)]) == batch.EXIT_BAD_ARGUMENTS
    assert not out.exists()

    out.mkdir()
    (out / "p03.mrb").write_bytes(b"earlier run")
    batch.writeCombinedCsv(out / batch.COMBINED_CSV, batch.caseRows("p03", [{"level": "L4-L5", "grade": 4}]))
    (tmp_path / "ages.csv").write_text("case,age,sex\np01,63,F\n")

    fakeSlicer = types.SimpleNamespace(util=types.SimpleNamespace(getModuleLogic=lambda name: f"logic:{name}"))
    monkeypatch.setitem(sys.modules, "slicer", fakeSlicer)
    monkeypatch.syspath_prepend(str(REPO_ROOT / "DiscAnalysis"))
    import DiscAnalysisModuleLib.dependencies as dependencies

    ensured = []
    monkeypatch.setattr(dependencies, "ensureDependencies", lambda steps, **kw: ensured.append((steps, kw)))
    processed = []

    def process(slicer, logic, case, path, outDir, covariates, register):
        processed.append((case, covariates, register, logic))
        if case == "p02":
            raise RuntimeError("No disc found in p02: check that it is a sagittal lumbar T2w image.\nTraceback...")
        return [{"level": "L4-L5", "grade": 2}, {"level": "L5-S1", "grade": None}]

    monkeypatch.setattr(batch, "processCase", process)
    code = batch.main(["--", "--cases", str(cases), "--out", str(out), "--age-csv", str(tmp_path / "ages.csv"), "--register"])
    assert code == batch.EXIT_SOME_FAILED
    assert ensured == [(["segment", "analyse", "register"], {"interactive": False})]
    assert processed == [("p01", {"age": 63.0, "sex": "F"}, True, "logic:DiscAnalysis"),
                         ("p02", {}, True, "logic:DiscAnalysis")]
    rows = batch.readCombinedCsv(out / batch.COMBINED_CSV)
    assert [(r["case"], r["status"], r["level"], r["grade"]) for r in rows] == [
        ("p01", "done", "L4-L5", "2"), ("p01", "done", "L5-S1", None),
        ("p02", "failed", None, None), ("p03", "done", "L4-L5", "4")]
    assert rows[2]["reason"] == "No disc found in p02: check that it is a sagittal lumbar T2w image."

    monkeypatch.setattr(batch, "processCase", lambda *a: [{"level": "L4-L5", "grade": 1}])
    assert batch.main(["--cases", str(cases), "--out", str(out), "--overwrite"]) == batch.EXIT_OK
