"""The Register step at the MRML level (slicer-core): a registration run's outputs become transform and
volume nodes named by level, with transforms of the right sense, and a rerun replaces them."""

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML nodes) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("'slicer' is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "DiscAnalysis"))

from DiscAnalysisModuleLib import workflow  # noqa: E402

from DiscAnalysisLib import image_io, mrml  # noqa: E402
from DiscAnalysisLib.cli.main import main  # noqa: E402
from DiscAnalysisLib.errors import InputError  # noqa: E402
from DiscAnalysisLib.phantom import PhantomSettings, make_phantom  # noqa: E402

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """`discanalysis register` (2D, mid-sagittal) on the phantom with its T2 truth map; L1-L2 erased."""
    tmp = tmp_path_factory.mktemp("reg")
    ph = make_phantom(PhantomSettings(seed=2))
    arr = sitk.GetArrayFromImage(ph.labels)
    arr[arr == 120] = 0  # one disc missing: a row with a reason, no nodes
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(ph.labels)
    lab = image_io.write_image(labels, tmp / "labels.nrrd")
    t2 = image_io.write_image(ph.t2_ms, tmp / "T2_ms.nrrd")
    out = tmp / "registration"
    assert main(["--progress", "none", "register", str(lab), "--maps", f"T2_ms={t2}", "--dim", "2",
                 "--out", str(out)]) == 0
    return out


def test_registration_outputs_become_nodes_named_by_level(registered):
    scene = slicer.vtkMRMLScene()
    loaded = workflow.loadRegistrationResults(scene, registered)
    levels = [r["level"] for r in loaded.rows]
    assert levels == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    assert loaded.rows[0]["status"] == "skipped" and "not in the labelmap" in loaded.rows[0]["reason"]
    ok = [r["level"] for r in loaded.rows if r["status"] == "ok"]
    assert ok == levels[1:]
    for level in ok:
        for stem in ("atlas_to_patient", "patient_to_atlas"):
            node = loaded.transformNodes[(level, stem)]
            assert node.IsA("vtkMRMLTransformNode") and node.GetName() == f"{level} {stem.replace('_', ' ')}"
            assert scene.GetNodeByID(node.GetID()) is node
        for name in ("T2_ms", "labels", "jacobian", "atlas_mask"):
            node = loaded.volumeNodes[(level, name)]
            assert node.GetName() == f"{level} {name} (atlas)"
            assert node.IsA("vtkMRMLLabelMapVolumeNode") == (name in ("labels", "atlas_mask"))
        # the volume node holds the file's voxels on the atlas disc grid
        written = image_io.read_image(registered / level / "T2_ms.nrrd")
        back = mrml.image_from_volume_node(loaded.volumeNodes[(level, "T2_ms")], dimension=2)
        assert back.GetSize() == written.GetSize()
        assert np.allclose(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(written))
        labels = sitk.GetArrayFromImage(mrml.image_from_volume_node(loaded.volumeNodes[(level, "labels")],
                                                                      dimension=2))
        assert set(np.unique(labels).tolist()) <= {0, 20, 21, 22, 23, 24, 26, 61, 120, 121, 122, 123, 124}
    assert not any(key[0] == "L1-L2" for key in {**loaded.transformNodes, **loaded.volumeNodes})


def test_loaded_transform_maps_points_as_the_written_file(registered):
    """The transform node (RAS, "transform from parent") maps an atlas-disc point where the ITK file does."""
    scene = slicer.vtkMRMLScene()
    loaded = workflow.loadRegistrationResults(scene, registered)
    mask = image_io.read_image(registered / "L3-L4" / "atlas_mask.nrrd")
    itk_tx = sitk.ReadTransform(str(registered / "L3-L4" / "atlas_to_patient.h5"))
    node = loaded.transformNodes[("L3-L4", "atlas_to_patient")]
    inside = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]
    for idx in inside[:: max(1, len(inside) // 5)]:
        x = np.asarray(mask.TransformIndexToPhysicalPoint([int(v) for v in idx]))  # LPS, 2D
        y = np.asarray(itk_tx.TransformPoint(x.tolist()))
        assert np.linalg.norm(y - x) > 0  # a real deformation, not identity
        ras = node.GetTransformFromParent().TransformPoint([-x[0], -x[1], 0.0])
        assert np.allclose([-ras[0], -ras[1]], y, atol=1e-3) and abs(ras[2]) < 1e-6


def test_reload_replaces_the_registration_nodes_and_keeps_others(registered, tmp_path):
    scene = slicer.vtkMRMLScene()
    other = mrml.volume_node_from_image(scene, sitk.Image([4, 4], sitk.sitkFloat32), "user volume")
    first = workflow.loadRegistrationResults(scene, registered)
    n_first = scene.GetNumberOfNodes()
    second = workflow.loadRegistrationResults(scene, registered)
    assert scene.GetNumberOfNodes() == n_first
    assert scene.GetNodeByID(other.GetID()) is other
    for key, node in first.volumeNodes.items():
        assert scene.GetNodeByID(node.GetID()) is not node and second.volumeNodes[key].GetScene() is scene
    with pytest.raises(InputError, match="registration_report.csv"):
        workflow.loadRegistrationResults(scene, tmp_path)
