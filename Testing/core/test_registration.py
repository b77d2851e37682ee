"""Disc-by-disc registration on synthetic discs of known shape (ellipses) and on real disc masks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_data
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.registration import (
    RegistrationSettings,
    atlas_from_masks,
    jacobian_determinant,
    register_disc,
    register_labelmap,
    to_atlas,
    to_patient,
    write_registration,
)

SPACING = 0.5
# fewer iterations than the shipped defaults keep the tests quick; the goals hold with these too
FAST = RegistrationSettings(affine_iterations=100, bspline_iterations=150)


def ellipse(shape=(90, 120), center=(45.0, 60.0), axes=(9.0, 30.0), angle_deg=0.0, label=1, spacing=SPACING):
    """2D image (rows=j, cols=i) with an ellipse; axes are half-lengths in pixels (j, i)."""
    jj, ii = np.mgrid[: shape[0], : shape[1]].astype(float)
    a = np.deg2rad(angle_deg)
    dj, di = jj - center[0], ii - center[1]
    u = np.cos(a) * di + np.sin(a) * dj
    v = -np.sin(a) * di + np.cos(a) * dj
    arr = ((v / axes[0]) ** 2 + (u / axes[1]) ** 2 <= 1.0).astype(np.uint8) * label
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((spacing, spacing))
    return img


def bean(shape=(90, 120), center=(45.0, 60.0), label=1):
    """An asymmetric disc-like shape: an ellipse with a posterior notch, so rotation matters."""
    img = ellipse(shape, center, (10.0, 32.0), 0.0, label)
    arr = sitk.GetArrayFromImage(img)
    jj, ii = np.mgrid[: shape[0], : shape[1]]
    arr[((jj - center[0]) ** 2 + (ii - (center[1] + 34)) ** 2) < 8**2] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


@pytest.fixture(scope="module")
def ellipse_result():
    atlas = bean()
    patient = ellipse((100, 140), (52.0, 66.0), (12.0, 36.0), 12.0)  # scaled, rotated, shifted
    patient.SetOrigin((40.0, -25.0))
    return atlas, patient, register_disc(atlas, patient, FAST, "L4-L5")


def test_ellipse_reaches_high_dice_without_folding(ellipse_result):
    _, _, r = ellipse_result
    assert r.dice >= 0.95, r.metrics_row()
    assert r.folding_fraction == 0.0
    assert 0.0 < r.jacobian_sd < 0.5
    # the patient disc is bigger than the atlas disc: the atlas->patient map expands (J > 1)
    assert r.jacobian_mean > 1.1


def test_bspline_improves_on_affine_only(ellipse_result):
    atlas, patient, r = ellipse_result
    affine = register_disc(atlas, patient, RegistrationSettings(affine_iterations=100, affine_only=True), "L4-L5")
    assert affine.jacobian_sd < 1e-3  # an affine map has a constant Jacobian
    assert r.dice > affine.dice


def test_inverse_mapping_round_trips_a_map(ellipse_result):
    _, patient, r = ellipse_result
    shape = sitk.GetArrayViewFromImage(patient).shape
    jj, ii = np.mgrid[: shape[0], : shape[1]]
    values = (40 + 10 * np.sin(ii / 9.0) + 5 * np.cos(jj / 6.0)).astype(np.float32)
    t2 = sitk.GetImageFromArray(values)
    t2.CopyInformation(patient)
    back = to_patient(r, to_atlas(r, t2), reference=patient)
    inside = sitk.GetArrayViewFromImage(sitk.BinaryErode(patient, [2, 2])) > 0
    err = np.abs(sitk.GetArrayViewFromImage(back)[inside] - values[inside])
    assert np.median(err) < 0.2 and np.percentile(err, 95) < 1.0, (np.median(err), err.max())
    assert r.inverse_error_mm < 0.1


def test_jacobian_of_a_known_affine_field():
    grid = sitk.Image([30, 20, 10], sitk.sitkUInt8)
    grid.SetSpacing((0.5, 0.7, 2.0))
    grid.SetDirection((0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))  # PIR, like the 3D atlas
    a = np.array([[1.2, 0.1, 0.0], [0.0, 0.9, 0.2], [0.05, 0.0, 1.1]])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    pts = np.array([grid.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in idx])
    disp = (pts @ (a - np.eye(3)).T).reshape(*grid.GetSize(), 3).transpose(2, 1, 0, 3)
    field = sitk.GetImageFromArray(disp, isVector=True)
    field.CopyInformation(grid)
    jac = sitk.GetArrayFromImage(jacobian_determinant(field))
    assert np.allclose(jac, np.linalg.det(a), atol=1e-6)


def _labelmap_with_discs(discs: dict[int, tuple[float, float]], shape=(220, 140)) -> sitk.Image:
    arr = np.zeros(shape, np.uint8)
    for label, (cj, ci) in discs.items():
        arr = np.maximum(arr, sitk.GetArrayFromImage(ellipse(shape, (cj, ci), (10.0, 30.0), 5.0, label)))
    arr[(arr == 0) & (np.arange(shape[0])[:, None] % 40 < 15)] = 23  # vertebra-like bands to carry along
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((SPACING, SPACING))
    return img


@pytest.fixture(scope="module")
def synthetic_atlas():
    return atlas_from_masks({lv: bean() for lv in ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")})


def test_labelmap_rows_for_missing_and_edge_touching_discs(synthetic_atlas, tmp_path):
    # L4-L5 (123) well inside, L5-S1 (124) cut by the lower image edge, the other three absent
    labelmap = _labelmap_with_discs({123: (100.0, 70.0), 124: (215.0, 70.0)})
    t2 = sitk.Cast(labelmap, sitk.sitkFloat32) * 0.5 + 30.0
    results = register_labelmap(labelmap, maps={"t2_ms": t2}, atlas=synthetic_atlas, dim=2, settings=FAST)
    rows = {r.level: r for r in results}
    assert [r.level for r in results] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    assert rows["L4-L5"].ok and rows["L4-L5"].transform.dice > 0.95
    assert rows["L5-S1"].status == "skipped" and "edge" in rows["L5-S1"].reason
    for lv in ("L1-L2", "L2-L3", "L3-L4"):
        assert rows[lv].status == "skipped" and "not in the labelmap" in rows[lv].reason
    # nearest-neighbour warping keeps label values: nothing new, nothing blended
    warped = np.unique(sitk.GetArrayViewFromImage(rows["L4-L5"].registered["labels"]))
    assert set(warped.tolist()) <= {0, 23, 123} and 123 in warped
    assert rows["L4-L5"].registered["labels"].GetPixelID() == labelmap.GetPixelID()
    # maps come through with values from the input range
    t2_reg = sitk.GetArrayViewFromImage(rows["L4-L5"].registered["t2_ms"])
    core = sitk.BinaryErode(rows["L4-L5"].transform.atlas_grid, [3, 3])  # away from the blended boundary
    inside = sitk.GetArrayViewFromImage(core) > 0
    assert np.allclose(t2_reg[inside], 30.0 + 0.5 * 123, atol=0.5)
    assert [row["status"] for row in results.rows()] == ["skipped", "skipped", "skipped", "ok", "skipped"]
    written = write_registration(results, tmp_path)
    csv_text = written["report"].read_text()
    assert csv_text.count("\n") == 6 and "touches the image edge" in csv_text
    assert (tmp_path / "L4-L5" / "atlas_to_patient.h5").is_file()
    assert sitk.ReadImage(str(tmp_path / "L4-L5" / "t2_ms.nrrd")).GetSize() == rows["L4-L5"].transform.atlas_grid.GetSize()


def test_dimension_mismatch_is_a_row_per_disc(synthetic_atlas):
    labelmap = _labelmap_with_discs({123: (100.0, 70.0)})
    results = register_labelmap(labelmap, atlas=synthetic_atlas, dim=3)
    assert all(r.status == "skipped" and "dimension mismatch" in r.reason for r in results)
    assert len(results) == 5


def test_register_labelmap_refuses_bad_settings(synthetic_atlas):
    with pytest.raises(InputError):
        register_labelmap(_labelmap_with_discs({123: (100.0, 70.0)}), atlas=synthetic_atlas, dim=4)


@pytest.mark.realdata
def test_real_disc_masks_reach_goal_dice_with_shipped_atlas():
    """A validation-split subject (never used for the atlas or tuning), mid-sagittal discs, 2D."""
    import sys

    from conftest import REPO_ROOT

    data = shared_data("lumbar_disc_labels_native")
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from build_disc_atlas import load_native, split, subjects

    sid = split(subjects(data))["validation"][0]
    results = register_labelmap(load_native(data, sid), dim=2)
    dices = [r.transform.dice for r in results if r.ok]
    assert len(dices) == 5, [r.to_row() for r in results]
    assert np.mean(dices) >= 0.95 and min(dices) >= 0.9, dices
    assert max(r.transform.folding_fraction for r in results) == 0.0


def test_shipped_atlas_loads_and_a_tampered_file_is_refused(tmp_path, monkeypatch):
    import shutil

    from conftest import REPO_ROOT
    from DiscAnalysisLib.registration import atlas as atlas_mod

    monkeypatch.setattr(atlas_mod, "_CACHE", {})
    shipped = atlas_mod.load_atlas(2)
    assert shipped.levels == ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
    assert all(m.GetDimension() == 2 and sitk.GetArrayViewFromImage(m).max() == 1 for m in shipped.masks.values())
    copy = tmp_path / "Resources"
    shutil.copytree(REPO_ROOT / "Resources", copy)
    with open(copy / "Atlas" / "disc_atlas_3d_L4-L5.nrrd", "ab") as fh:
        fh.write(b"\0")
    monkeypatch.setenv("DISCANALYSIS_RESOURCES", str(copy))
    monkeypatch.setattr(atlas_mod, "_CACHE", {})
    assert atlas_mod.load_atlas(2).dim == 2  # untouched files still load
    with pytest.raises(InputError, match="integrity"):
        atlas_mod.load_atlas(3)


def test_cli_register_writes_report_and_rows(tmp_path, capsys):
    from DiscAnalysisLib.cli.main import main

    lab = _labelmap_with_discs({123: (100.0, 70.0)})
    arr = sitk.GetArrayFromImage(lab)
    arr[arr == 23] = 0
    arr[arr == 123] = 2  # the 1..5-from-L5-S1 numbering: 2 = L4-L5
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(lab)
    path = tmp_path / "discs.nrrd"
    sitk.WriteImage(img, str(path))
    out = tmp_path / "reg"
    assert main(["--progress", "none", "register", str(path), "--labels", "from_l5s1", "--out", str(out)]) == 0
    report = (out / "registration_report.csv").read_text().splitlines()
    assert len(report) == 6
    l45 = next(line for line in report if line.startswith("L4-L5"))
    assert ",ok," in l45
    assert (out / "L4-L5" / "labels.nrrd").is_file() and not (out / "L3-L4").exists()
    assert "1/5 discs registered" in capsys.readouterr().out
    assert main(["--progress", "none", "register", str(path), "--out", str(out)]) == 2  # 2 is not a SPINEPS label


def test_cli_workers_2_gives_the_same_rows_as_1_worker(tmp_path):
    """``--workers 2`` (discs in worker processes forked from the elastix-preloading server) reports the
    same per-disc rows as the in-process run: same statuses and reasons, same Dice and Jacobian."""
    import csv

    from DiscAnalysisLib.cli.main import main

    lab = _labelmap_with_discs({122: (60.0, 70.0), 123: (140.0, 70.0), 124: (215.0, 70.0)})  # 124 cut by the edge
    path = tmp_path / "discs.nrrd"
    sitk.WriteImage(lab, str(path))
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["--progress", "none", "register", str(path), "--dim", "2", "--workers", str(workers),
                     "--out", str(out)]) == 0
        with open(out / "registration_report.csv", newline="") as fh:
            rows[workers] = list(csv.DictReader(fh))
        assert (out / "L3-L4" / "patient_to_atlas.h5").is_file() and (out / "L4-L5" / "labels.nrrd").is_file()
    assert [r["level"] for r in rows[2]] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    assert [r["status"] for r in rows[2]] == ["skipped", "skipped", "ok", "ok", "skipped"]
    for one, two in zip(rows[1], rows[2], strict=True):
        assert (one["level"], one["status"], one["reason"]) == (two["level"], two["status"], two["reason"])
        if one["status"] == "ok":
            assert float(two["dice"]) > 0.8
            for key in ("dice", "jacobian_sd", "folding_fraction"):
                assert abs(float(one[key]) - float(two[key])) <= 1e-3, (key, one, two)
