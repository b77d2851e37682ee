"""``discanalysis grade``: RGB/RGBA PNG input with a label PNG, CSV rows, and the no-labels error."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
from PIL import Image

from DiscAnalysisLib.cli.main import main
from DiscAnalysisLib.grading.predict import load_model
from DiscAnalysisLib.levels import DISC_LABELS, DISCS

pytest.importorskip("torch")


def _write_pngs(tmp_path, mode):
    shape = (256, 220)
    img = np.full(shape, 60, np.uint8)
    lab = np.zeros(shape, np.uint8)
    r, c = np.mgrid[: shape[0], : shape[1]]
    for level, row in (("L3-L4", 90), ("L4-L5", 140), ("L5-S1", 190)):
        m = ((r - row) / 9.0) ** 2 + ((c - 100) / 30.0) ** 2 <= 1
        img[m] = 210
        lab[m] = DISC_LABELS[level]
    grey = Image.fromarray(img)
    colour = grey.convert(mode)
    colour.save(tmp_path / "slice.png")
    Image.fromarray(lab).save(tmp_path / "labels.png")
    return tmp_path / "slice.png", tmp_path / "labels.png"


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_grade_cli_on_colour_png(tmp_path, capsys, mode):
    png, labels = _write_pngs(tmp_path, mode)
    out = tmp_path / "grades.csv"
    rc = main(["--progress", "none", "grade", str(png), "--labels", str(labels), "--out", str(out), "--no-tta"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["level"] for r in rows] == list(DISCS)
    by = {r["level"]: r for r in rows}
    assert by["L1-L2"]["status"] == "not graded" and by["L1-L2"]["grade"] == ""
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        r = by[level]
        assert r["status"] == "graded" and r["grade"] in {"1", "2", "3", "4", "5"}
        p = [float(r[f"p_grade{g}"]) for g in range(1, 6)]
        # the confidence is the shipped calibration of the largest probability (grading.predict.CONFIDENCE_CALIBRATION)
        expected = load_model().confidence(np.array(p))
        assert abs(sum(p) - 1) < 1e-3 and float(r["confidence"]) == pytest.approx(expected, abs=2e-4)
        assert "pixel spacing unknown" in r["qc"] and "disc_width_px" in r
    assert "L1-L2: not graded" in capsys.readouterr().out


def test_grade_cli_with_pixel_spacing_reports_mm(tmp_path):
    png, labels = _write_pngs(tmp_path, "L")
    out = tmp_path / "grades.csv"
    assert main(["--progress", "none", "grade", str(png), "--labels", str(labels), "--out", str(out),
                 "--pixel-spacing-mm", "0.5", "--no-tta"]) == 0
    row = next(r for r in csv.DictReader(out.open()) if r["level"] == "L4-L5")
    assert float(row["disc_width_mm"]) == pytest.approx(61 * 0.5, rel=0.05)
    assert "pixel spacing unknown" not in row["qc"]


def test_grade_cli_without_labels_or_segmentation_says_to_pass_labels(tmp_path, capsys, monkeypatch):
    png, _ = _write_pngs(tmp_path, "L")
    monkeypatch.setitem(sys.modules, "DiscAnalysisLib.segmentation", None)  # import fails like an absent module
    rc = main(["--progress", "none", "grade", str(png), "--out", str(tmp_path / "g.csv")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--labels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.csv").exists()


def test_grade_cli_rejects_labels_on_another_grid(tmp_path, capsys):
    png, _ = _write_pngs(tmp_path, "L")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    rc = main(["--progress", "none", "grade", str(png), "--labels", str(tmp_path / "small.png"), "--out", str(tmp_path / "g.csv")])
    assert rc == 2 and "size" in capsys.readouterr().err


def test_grade_cli_refuses_a_labelmap_with_other_geometry(tmp_path, capsys):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.zeros((5, 40, 40), np.float32))
    img.SetSpacing((0.5, 0.5, 4.0))
    lab = sitk.GetImageFromArray(np.zeros((5, 40, 40), np.uint8))
    lab.SetSpacing((1.0, 1.0, 4.0))
    sitk.WriteImage(img, str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(lab, str(tmp_path / "lab.nrrd"))
    rc = main(["--progress", "none", "grade", str(tmp_path / "t2.nrrd"), "--labels", str(tmp_path / "lab.nrrd"),
               "--out", str(tmp_path / "g.csv")])
    assert rc == 2 and "geometry" in capsys.readouterr().err


def test_demo_step_grades_a_phantom_like_context(tmp_path):
    from types import SimpleNamespace

    from DiscAnalysisLib.grading.demo_step import grading_demo_step
    from DiscAnalysisLib.progress import Progress

    png, labels = _write_pngs(tmp_path, "L")
    from DiscAnalysisLib.image_io import read_image

    ph = SimpleNamespace(t2w=read_image(png, pixel_spacing_mm=0.5), labels=read_image(labels, pixel_spacing_mm=0.5),
                         grades={"L3-L4": 2})
    ctx = SimpleNamespace(phantom=ph, out_dir=tmp_path / "demo", paths={})
    lines = grading_demo_step(ctx, Progress.wrap(None))
    assert ctx.paths["grades"].is_file()
    assert any("L3-L4: grade" in line for line in lines) and any("L1-L2: not graded" in line for line in lines)


@pytest.mark.parametrize(
    "flag, words",
    [
        ("level_naming_uncertain:disc_below_L5-S1_dropped", "level names uncertain"),
        ("lowest_disc_kept_by_judge", "one level too high"),
        ("lowest_candidate_dropped_by_judge", "it dropped a lowest disc candidate"),
        (None, None),
    ],
)
def test_grade_cli_carries_the_segmentations_level_naming_doubt_into_qc(tmp_path, monkeypatch, flag, words):
    """Each segmentation flag that puts the level names in doubt (the size rule's doubt, either override of the
    lowest-disc judge) becomes a QC note on every graded disc; none without such a flag."""
    import types

    import SimpleITK as sitk

    import DiscAnalysisLib.segmentation as segmentation
    from DiscAnalysisLib.image_io import read_image
    from DiscAnalysisLib.segmentation import postprocess

    assert flag is None or flag in (postprocess.LEVEL_DOUBT_FLAG, postprocess.JUDGE_KEPT_FLAG, postprocess.JUDGE_DROPPED_FLAG)
    png, lab_png = _write_pngs(tmp_path, "L")

    def fake_segment(image, progress=None, **_):
        labels = read_image(lab_png)
        out = sitk.Cast(labels, sitk.sitkUInt8)
        out.CopyInformation(image)
        flags = ("small_disc_below_L5-S1_ignored",) + ((flag,) if flag else ())
        return types.SimpleNamespace(labels=out, flags=flags)

    monkeypatch.setattr(segmentation, "segment_image", fake_segment)
    out = tmp_path / "g.csv"
    assert main(["--progress", "none", "grade", str(png), "--out", str(out), "--no-tta"]) == 0
    rows = {r["level"]: r for r in csv.DictReader(open(out))}
    graded = [r for r in rows.values() if r["status"] == "graded"]
    assert {r["level"] for r in graded} == {"L3-L4", "L4-L5", "L5-S1"}
    for r in rows.values():
        has_note = "check the segmentation" in r["qc"]
        assert has_note == (flag is not None and r["status"] == "graded"), (r["level"], r["qc"])
        if has_note:
            assert words in r["qc"]
