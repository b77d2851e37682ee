"""DiscCohort's MRML-level helpers (DiscAnalysisModuleLib.cohort) on real MRML nodes from slicer-core."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT
from DiscAnalysisLib.errors import InputError

slicer = pytest.importorskip("slicer", reason="the module helpers need real MRML nodes: pip install slicer-core")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the module helpers need real MRML nodes: pip install slicer-core", allow_module_level=True)

pytestmark = pytest.mark.mrml


@pytest.fixture
def cohortLib(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "DiscAnalysis"))
    import DiscAnalysisModuleLib.cohort

    return DiscAnalysisModuleLib.cohort


def test_stats_arguments_and_panel_checks(cohortLib, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("subject,level,map_t2\n")
    args = cohortLib.statsArguments(str(csv), str(tmp_path / "out"), "partial", "odi", "age, sex", "", "maxt", 500, 6)
    assert args[:4] == ["--progress", "lines", "stats", str(csv)]
    assert args[args.index("--covariates") + 1] == "age,sex" and args[args.index("--permutations") + 1] == "500"
    assert "--group" not in args
    with pytest.raises(InputError, match="Cohort file not found"):
        cohortLib.statsArguments(str(tmp_path / "absent.csv"), str(tmp_path))
    with pytest.raises(InputError, match="variable"):
        cohortLib.statsArguments(str(csv), str(tmp_path), "pearson", "")
    with pytest.raises(InputError, match="group column"):
        cohortLib.statsArguments(str(csv), str(tmp_path), "welch")
    with pytest.raises(InputError, match="Atlas image not found"):
        cohortLib.statsArguments(str(csv), str(tmp_path), "pearson", "age", atlasFile=str(tmp_path / "none.nrrd"))


def test_results_are_loaded_with_the_atlas_geometry(cohortLib, tmp_path):
    from DiscAnalysisLib import mrml
    from DiscAnalysisLib.cli.main import main
    from DiscAnalysisLib.cohortstats import make_synthetic_cohort

    cohort = make_synthetic_cohort(tmp_path / "cohort", n_subjects=12, size_ijk=(10, 8, 3))
    out = tmp_path / "out"
    args = cohortLib.statsArguments(str(cohort.csv_path.with_name("cohort_baseline.csv")), str(out), "pearson", "age")
    assert main(["--progress", "none", *args[2:], "--no-figures"]) == 0
    scene = slicer.vtkMRMLScene()
    atlas = cohort.csv_path.parent / "S00" / "L4-L5_tp0_t2.nrrd"
    loaded = cohortLib.loadResults(scene, str(out), str(atlas))
    assert loaded.backgroundNode("L4-L5 t2 pearson") is loaded.atlasNode and loaded.atlasNode.GetName() == "Disc atlas"
    assert sorted(loaded.statNodes) == ["L4-L5 t1rho pearson", "L4-L5 t2 pearson"]
    node = loaded.statNodes["L4-L5 t2 pearson"]
    assert node.GetName() == "L4-L5 t2 pearson r"
    back = mrml.image_from_volume_node(node)
    ref = sitk.ReadImage(str(out / "L4-L5" / "t2_pearson_r.nrrd"))
    assert back.GetSpacing() == pytest.approx(ref.GetSpacing()) and back.GetOrigin() == pytest.approx(ref.GetOrigin())
    np.testing.assert_array_equal(np.isnan(sitk.GetArrayFromImage(back)), np.isnan(sitk.GetArrayFromImage(ref)))
    assert loaded.significantNodes["L4-L5 t2 pearson"].IsA("vtkMRMLLabelMapVolumeNode")
    assert loaded.tableNode.GetNumberOfRows() == 2
    with pytest.raises(InputError, match="summary.json is missing"):
        cohortLib.loadResults(scene, str(tmp_path))
