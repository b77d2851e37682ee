"""The module's MRML-only helpers (DiscAnalysisModuleLib) on real MRML nodes from ``slicer-core``.

``DiscAnalysisModuleLib.selftest.runSelfTest`` is the body of ``DiscAnalysisTest`` (run inside Slicer by
Reload & Test and by ctest); here the same function runs on a plain ``slicer.vtkMRMLScene()``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT

slicer = pytest.importorskip("slicer", reason="the module helpers need real MRML nodes: pip install slicer-core")
if not hasattr(slicer, "vtkMRMLScene"):
    # Without slicer-core, a folder named "slicer" on sys.path (such as this one) imports as an empty
    # namespace package instead of failing.
    pytest.skip("the module helpers need real MRML nodes: pip install slicer-core", allow_module_level=True)

pytestmark = pytest.mark.mrml


@pytest.fixture
def moduleLib(monkeypatch):
    """DiscAnalysisModuleLib, imported as inside Slicer, where the module folder is on sys.path."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "DiscAnalysis"))
    import DiscAnalysisModuleLib.inputs
    import DiscAnalysisModuleLib.selftest

    return DiscAnalysisModuleLib


def test_self_test_body_passes_on_slicer_core(moduleLib):
    scene = slicer.vtkMRMLScene()
    volumeNode = moduleLib.selftest.runSelfTest(scene)
    assert volumeNode.GetScene() is scene
    assert volumeNode.GetImageData().GetDimensions() == moduleLib.selftest.SIZE_IJK


def test_self_test_body_catches_a_missing_lps_ras_flip(moduleLib, monkeypatch):
    """The self-test can fail: a bridge that hands RAS coordinates over as LPS is caught."""
    from DiscAnalysisLib import mrml

    monkeypatch.setattr(
        mrml, "flip_lps_ras", lambda d, o: (np.asarray(d, float).reshape(3, 3), np.asarray(o, float).reshape(3))
    )
    with pytest.raises(AssertionError, match=r"origin \(mm, LPS\)"):
        moduleLib.selftest.runSelfTest(slicer.vtkMRMLScene())


def test_inspect_reports_unknown_spacing_and_times_of_a_2d_image(moduleLib):
    from DiscAnalysisLib import image_io, mrml

    image = sitk.GetImageFromArray(np.arange(6 * 8, dtype=np.float32).reshape(6, 8))
    image_io.mark_spacing_unknown(image)
    image.SetMetaData(image_io.TIMES_KEY, "10 20 40")
    volumeNode = mrml.volume_node_from_image(slicer.vtkMRMLScene(), image, "slice")

    info = moduleLib.inputs.inspectVolumeNode(volumeNode)
    assert info.size == (8, 6)
    assert info.spacing_mm is None
    assert info.times_ms == (10.0, 20.0, 40.0)
    assert moduleLib.inputs.slicePlane(info) is None
    text = moduleLib.inputs.formatImageInfo(info)
    assert "Spacing: unknown" in text
    assert "Echo / spin-lock times: 10 20 40 ms" in text
    assert "pixel spacing unknown" in text
    assert "Slices:" not in text


def test_inspect_warns_about_axial_slices_and_transforms(moduleLib):
    from DiscAnalysisLib import mrml

    scene = slicer.vtkMRMLScene()
    volumeNode = mrml.volume_node_from_image(scene, sitk.Image([4, 5, 3], sitk.sitkInt16), "axial")  # identity: k -> S
    transformNode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    volumeNode.SetAndObserveTransformNodeID(transformNode.GetID())

    info = moduleLib.inputs.inspectVolumeNode(volumeNode)
    assert info.orientation == "LPS"
    assert info.pixel_type == "16-bit signed integer"
    text = moduleLib.inputs.formatImageInfo(info)
    assert "Slices: axial (DiscAnalysis expects sagittal slices)" in text
    assert "under a transform" in text


def test_inspect_without_input_names_the_fix(moduleLib):
    from DiscAnalysisLib.errors import InputError

    with pytest.raises(InputError, match="Select the sagittal T2-weighted volume"):
        moduleLib.inputs.inspectVolumeNode(None)
