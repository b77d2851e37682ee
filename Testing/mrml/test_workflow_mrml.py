"""The DiscAnalysis module's workflow on real MRML (slicer-core): scene in -> background-run files -> nodes out.

Runs the same CLI the module's background process runs, in this process, and the same loaders the
widget uses, so the Slicer-only code left untested is the Qt plumbing.
"""

import json
import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML nodes) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("'slicer' is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "DiscAnalysis"))

from DiscAnalysisModuleLib import workflow  # noqa: E402

from DiscAnalysisLib import mrml  # noqa: E402
from DiscAnalysisLib.cli.main import main  # noqa: E402
from DiscAnalysisLib.phantom import PhantomSettings, make_phantom, write_phantom  # noqa: E402

pytestmark = pytest.mark.mrml


def _run(args):
    args = list(args)
    assert args[:2] == ["--progress", "lines"]
    args[1] = "none"
    assert main(args) == 0


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomSettings(seed=2))


def test_segment_step_makes_one_named_segment_per_level(phantom, tmp_path):
    scene = slicer.vtkMRMLScene()
    volume = mrml.volume_node_from_image(scene, phantom.t2w, "T2w")
    image = workflow.exportVolume(volume, tmp_path / "input.nrrd")
    _run(workflow.segmentArguments(image, tmp_path))
    seg = workflow.loadSegmentationResult(scene, tmp_path / "labels.nrrd", volume)
    names = {seg.GetSegmentation().GetNthSegment(i).GetName() for i in range(seg.GetSegmentation().GetNumberOfSegments())}
    assert {"L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"} <= names
    summary = workflow.segmentationSummary(tmp_path / "segmentation_qc.json")
    assert summary.startswith("Segmented: 5 of 5 discs found.") and "Check:" not in summary


def test_segment_step_summary_names_what_to_check(tmp_path):
    """The Analyse step runs on the reviewed segmentation, so the Segment step's status line is where a clinician
    learns that the lowest-disc judge decided the names, or that a level is missing."""
    qc = {"flags": ["lowest_disc_kept_by_judge", "extra_discs_above_L1-L2:1", "gap_between_discs"],
          "levels": [{"level": name, "found": name != "L2-L3"} for name in ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1", "L1")]}
    path = tmp_path / "segmentation_qc.json"
    path.write_text(json.dumps(qc))
    summary = workflow.segmentationSummary(path)
    assert summary.startswith("Segmented: 4 of 5 discs found.")
    assert "lowest-disc judge kept a thin lowest disc" in summary and "gap_between_discs" in summary
    assert "extra_discs" not in summary  # information only, not a reason to stop
    assert "no QC file" in workflow.segmentationSummary(tmp_path / "absent.json")


def test_analyse_step_fills_table_maps_and_colours(phantom, tmp_path):
    scene = slicer.vtkMRMLScene()
    volume = mrml.volume_node_from_image(scene, phantom.t2w, "T2w")
    seg = mrml.segmentation_node_from_labelmap(scene, phantom.labels, "levels", reference_volume_node=volume)
    # an edit in Segment Editor: the user renames a segment with another spelling
    seg.GetSegmentation().GetSegment("L4-L5").SetName("l4/l5")
    files = write_phantom(phantom, tmp_path / "ph")
    t2_paths = tuple(p for k, p in sorted(files.items()) if k.startswith("t2_series/"))
    inputs = tmp_path / "in"
    request = workflow.AnalysisRequest(
        imagePath=workflow.exportVolume(volume, inputs / "t2w.nrrd"),
        labelsPath=workflow.exportSegmentation(seg, volume, inputs / "labels.nrrd"),
        outDir=tmp_path / "out", caseId="phantom", age=50, sex="F", t2Paths=t2_paths,
    )
    args = workflow.analyseArguments(request)
    assert "--labels" in args and "--t2-series" in args
    _run(args)
    loaded = workflow.loadAnalysisResults(scene, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    table_rows = mrml.rows_from_table_node(loaded.tableNode)
    assert [r["level"] for r in table_rows] == [r["level"] for r in data["levels"]]
    assert [r["grade"] for r in table_rows] == [r["grade"] for r in data["levels"]]
    assert mrml.units_from_table_node(loaded.tableNode)["dh_mm"] == "mm"
    assert "T2" in loaded.mapNodes and loaded.reportPath is not None
    # the renamed segment was still read as L4-L5
    assert table_rows[3]["level"] == "L4-L5" and table_rows[3]["grade"] is not None
    # colour by grade, then back
    changed = workflow.colourSegmentsByGrade(seg, table_rows)
    assert changed == 5
    segment = seg.GetSegmentation().GetSegment("L1-L2")
    assert tuple(round(c, 2) for c in segment.GetColor()) == workflow.GRADE_COLORS[table_rows[0]["grade"]]
    workflow.restoreLevelColours(seg)
    from DiscAnalysisLib.levels import LEVEL_COLORS

    assert tuple(round(c, 2) for c in segment.GetColor()) == LEVEL_COLORS["L1-L2"]


def test_times_and_missing_inputs_give_clear_errors(tmp_path):
    from DiscAnalysisLib.errors import InputError

    assert workflow.parseTimes("10, 20,30") == (10.0, 20.0, 30.0)
    assert workflow.parseTimes("  ") is None
    with pytest.raises(InputError, match="numbers in ms"):
        workflow.parseTimes("10, abc")
    with pytest.raises(InputError, match="No input volume"):
        workflow.exportVolume(None, tmp_path / "x.nrrd")
    with pytest.raises(InputError, match="No segmentation"):
        workflow.exportSegmentation(None, None, tmp_path / "x.nrrd")
    with pytest.raises(InputError, match="did not finish"):
        workflow.loadAnalysisResults(slicer.vtkMRMLScene(), tmp_path)
