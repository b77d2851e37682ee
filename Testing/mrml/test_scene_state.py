"""A saved scene (.mrb) restores the DiscAnalysis module: its parameter node (every parameter, every node
reference) and the nodes it points to (input volume, edited segmentation with grade colours, results
table with units) come back from a real Slicer data bundle, written and read by slicer-core's
``vtkMRMLScene.WriteToMRB`` / ``ReadFromMRB`` (the calls behind Slicer's "Save scene as .mrb").

The module's ``@parameterNodeWrapper`` is not part of slicer-core, so its storage is reproduced as Slicer's
serializers do it (Base/Python/slicer/parameterNodeWrapper/serializers.py): a vtkMRMLScriptedModuleNode,
singleton tag and "ModuleName" attribute = the module name; numbers, strings and paths as
``SetParameter(name, str(value))``; bools as "True"/"False"; a node as ``SetParameter(name, "")`` plus the
node reference of role ``name``. The parameter list is read from ``DiscAnalysisParameterNode`` in
DiscAnalysis.py, so a parameter added there is covered here without editing this test.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT

slicer = pytest.importorskip("slicer", reason="the scene tests need real MRML nodes: pip install slicer-core")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the scene tests need real MRML nodes: pip install slicer-core", allow_module_level=True)

from DiscAnalysisLib import levels, mrml  # noqa: E402

pytestmark = pytest.mark.mrml

MODULE = "DiscAnalysis"
PARAMETER_CLASS = "DiscAnalysisParameterNode"


def parameterKinds() -> dict[str, str]:
    """{parameter: kind} of DiscAnalysisParameterNode; kind is "node:<class>", "int", "float", "bool",
    "str" or "Path" (Annotated[...] reduced to its first argument)."""
    tree = ast.parse((REPO_ROOT / "DiscAnalysis" / f"{MODULE}.py").read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == PARAMETER_CLASS)
    kinds = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            annotation = item.annotation
            if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
                annotation = annotation.slice.elts[0]
            name = ast.unparse(annotation)
            kinds[item.target.id] = f"node:{name}" if name.startswith("vtkMRML") else name
    return kinds


def newScene(cacheDir: Path):
    """A scene that can read bundles: ReadFromMRB needs a data I/O manager with a cache directory (in Slicer
    the application sets these up)."""
    scene = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(cacheDir))
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    scene.SetCacheManager(cache)
    return scene


def writeParameter(node, name: str, kind: str, value) -> None:
    if kind.startswith("node:"):
        node.SetParameter(name, "")
        node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
    elif kind == "bool":
        node.SetParameter(name, "True" if value else "False")
    else:
        node.SetParameter(name, str(value))


def readParameter(node, name: str, kind: str):
    if kind.startswith("node:"):
        return node.GetNodeReference(name)
    text = node.GetParameter(name)
    return {"int": int, "float": float, "bool": lambda t: t == "True", "str": str, "Path": Path}[kind](text)


def _sequenceNode(scene, volumeNode):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "T2 echoes")
    sequence.SetIndexUnit("ms")
    for te in (10.0, 20.0, 40.0):
        sequence.SetDataNodeAtValue(volumeNode, f"{te:g}")
    sequence.AddDefaultStorageNode()
    return sequence


@pytest.fixture
def savedCase(tmp_path):
    """A scene as the clinician leaves it: inputs, an edited and grade-coloured segmentation, a results
    table, every module parameter set to a non-default value; saved as case.mrb."""
    scene = newScene(tmp_path / "cache-write")
    rng = np.random.default_rng(7)
    t2w = sitk.GetImageFromArray(rng.normal(300.0, 40.0, (5, 12, 10)).astype(np.float32))
    t2w.SetSpacing((0.6, 0.6, 4.0))
    t2w.SetOrigin((-20.0, 15.5, 3.0))
    volume = mrml.volume_node_from_image(scene, t2w, "Patient T2w")
    labels = np.zeros((5, 12, 10), np.uint8)
    labels[:, 1:4, 2:8] = levels.VERTEBRA_LABELS["L4"]
    labels[:, 4:6, 2:8] = levels.DISC_LABELS["L4-L5"]
    labels[:, 6:9, 2:8] = levels.VERTEBRA_LABELS["L5"]
    labels[:, 9:11, 2:8] = levels.DISC_LABELS["L5-S1"]
    labelImage = sitk.GetImageFromArray(labels)
    labelImage.CopyInformation(t2w)
    segmentation = mrml.segmentation_node_from_labelmap(scene, labelImage, "Disc levels", reference_volume_node=volume)
    rows = [
        {"level": "L4-L5", "grade": 3, "grade_confidence": 0.71, "height_mm": 9.25, "qc": "ok"},
        {"level": "L5-S1", "grade": None, "grade_confidence": None, "height_mm": 7.5, "qc": "disc cut by the field of view"},
    ]
    table = mrml.table_node_from_rows(scene, rows, "Disc results", units={"height_mm": "mm"})
    series = _sequenceNode(scene, volume)

    import sys

    sys.path.insert(0, str(REPO_ROOT / "DiscAnalysis"))
    try:
        from DiscAnalysisModuleLib import workflow
    finally:
        sys.path.remove(str(REPO_ROOT / "DiscAnalysis"))
    assert workflow.colourSegmentsByGrade(segmentation, rows) == 2

    for node in (volume, segmentation, table):
        node.AddDefaultStorageNode()

    nodesByClass = {
        "vtkMRMLScalarVolumeNode": volume,
        "vtkMRMLSegmentationNode": segmentation,
        "vtkMRMLTableNode": table,
        "vtkMRMLSequenceNode": series,
    }
    # Non-default values of every kind (defaults would come back even if nothing were saved).
    plain = {"int": 63, "float": 1.5, "bool": True, "str": "F", "Path": tmp_path / "outputs" / "case 1"}
    kinds = parameterKinds()
    expected = {}
    for name, kind in kinds.items():
        value = nodesByClass[kind[5:]] if kind.startswith("node:") else plain[kind]
        if name.endswith("TimesMs"):
            value = "10, 20, 40"
        expected[name] = value

    parameterNode = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
    parameterNode.UnRegister(None)
    parameterNode.SetAttribute("ModuleName", MODULE)
    parameterNode.SetName(MODULE)
    parameterNode.SetSingletonTag(MODULE)
    parameterNode = scene.AddNode(parameterNode)
    for name, kind in kinds.items():
        writeParameter(parameterNode, name, kind, expected[name])

    bundle = tmp_path / "case.mrb"
    assert scene.WriteToMRB(str(bundle)), "vtkMRMLScene.WriteToMRB failed"
    return bundle, kinds, expected, {"t2w": t2w, "labels": labels, "rows": rows}


def test_parameter_list_is_read_from_the_module():
    kinds = parameterKinds()
    # The references the workflow depends on, and one parameter of each stored kind.
    for name in ("inputVolume", "segmentation", "resultsTable", "t2Sequence"):
        assert kinds[name].startswith("node:"), name
    assert {"int", "str", "bool", "Path"} <= set(kinds.values())


def test_mrb_round_trip_restores_the_module_state(savedCase, tmp_path):
    bundle, kinds, expected, truth = savedCase
    assert bundle.stat().st_size > 0
    scene = newScene(tmp_path / "cache-read")
    assert scene.ReadFromMRB(str(bundle)), "vtkMRMLScene.ReadFromMRB failed"

    # The logic finds its parameter node the way ScriptedLoadableModuleLogic.getParameterNode does.
    parameterNode = scene.GetSingletonNode(MODULE, "vtkMRMLScriptedModuleNode")
    assert parameterNode is not None and parameterNode.GetAttribute("ModuleName") == MODULE
    for name, kind in kinds.items():
        value = readParameter(parameterNode, name, kind)
        if kind.startswith("node:"):
            assert value is not None, f"reference {name} lost"
            assert value.GetClassName() == expected[name].GetClassName() and value.GetName() == expected[name].GetName()
        else:
            assert value == expected[name], name

    # The referenced nodes carry their data: voxels and geometry ...
    volume = parameterNode.GetNodeReference("inputVolume")
    image = mrml.image_from_volume_node(volume)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(truth["t2w"]))
    np.testing.assert_allclose(image.GetSpacing(), truth["t2w"].GetSpacing())
    np.testing.assert_allclose(image.GetOrigin(), truth["t2w"].GetOrigin(), atol=1e-6)
    # ... the segmentation, which feeds every later step, gives back the same labelmap ...
    segmentation = parameterNode.GetNodeReference("segmentation")
    labels = mrml.labelmap_from_segmentation_node(segmentation, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), truth["labels"])
    # ... with the grade colours it was saved with (grade 3 yellow; ungraded grey) ...
    colours = {}
    for i in range(segmentation.GetSegmentation().GetNumberOfSegments()):
        segment = segmentation.GetSegmentation().GetNthSegment(i)
        colours[levels.normalise_name(segment.GetName())] = segment.GetColor()
    np.testing.assert_allclose(colours["L4-L5"], (0.98, 0.80, 0.18), atol=1e-3)
    np.testing.assert_allclose(colours["L5-S1"], (0.60, 0.60, 0.60), atol=1e-3)
    # ... the results table keeps values, missing values and units ...
    table = parameterNode.GetNodeReference("resultsTable")
    assert mrml.rows_from_table_node(table) == truth["rows"]
    assert mrml.units_from_table_node(table)["height_mm"] == "mm"
    # ... and the series keeps its time points.
    sequence = parameterNode.GetNodeReference("t2Sequence")
    assert sequence.GetNumberOfDataNodes() == 3 and sequence.GetIndexUnit() == "ms"
    assert [float(sequence.GetNthIndexValue(i)) for i in range(3)] == [10.0, 20.0, 40.0]


def test_an_unset_reference_stays_unset(tmp_path):
    """A parameter with no node (e.g. no T1rho series) must come back as None, not as some other node."""
    scene = newScene(tmp_path / "w")
    volume = mrml.volume_node_from_image(scene, sitk.Image(4, 4, 2, sitk.sitkFloat32), "v")
    volume.AddDefaultStorageNode()
    node = scene.AddNode(scene.CreateNodeByClass("vtkMRMLScriptedModuleNode"))
    node.SetSingletonTag(MODULE)
    writeParameter(node, "inputVolume", "node:vtkMRMLScalarVolumeNode", volume)
    writeParameter(node, "t1rhoSequence", "node:vtkMRMLSequenceNode", None)
    bundle = tmp_path / "b.mrb"
    assert scene.WriteToMRB(os.fspath(bundle))
    restored = newScene(tmp_path / "r")
    assert restored.ReadFromMRB(os.fspath(bundle))
    node = restored.GetSingletonNode(MODULE, "vtkMRMLScriptedModuleNode")
    assert node.HasParameter("t1rhoSequence") and node.GetNodeReference("t1rhoSequence") is None
    assert node.GetNodeReference("inputVolume").GetName() == "v"
