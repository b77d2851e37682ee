"""``discanalysis markers``: same numbers as the Python API, documented columns, clean errors."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from markers_synthetic import scene, stack

from DiscAnalysisLib import image_io
from DiscAnalysisLib.cli.main import main
from DiscAnalysisLib.markers import MarkerSettings, compute_markers


def _write(tmp_path, im, lab, suffix=".nrrd"):
    a, b = tmp_path / f"t2w{suffix}", tmp_path / f"labels{suffix}"
    image_io.write_image(im, a)
    image_io.write_image(lab, b)
    return a, b


def _same(api_row, cli_value):
    if api_row is None:
        return cli_value in ("", None)
    if isinstance(api_row, float):
        return float(cli_value) == pytest.approx(api_row, abs=1e-9, rel=1e-12)
    return str(api_row) == str(cli_value)


def test_cli_csv_equals_api_and_has_a_column_sidecar(tmp_path, capsys):
    im, lab = stack(scene("ellipse", 12.0), n_slices=6)
    a, b = _write(tmp_path, im, lab)
    out = tmp_path / "m.csv"
    assert main(["--progress", "none", "markers", str(a), str(b), "--age", "44", "--sex", "F", "--out", str(out)]) == 0
    api = compute_markers(image_io.read_image(a), image_io.read_image(b), MarkerSettings(age_years=44, sex="F")).rows()
    with open(out, newline="") as fh:
        cli = list(csv.DictReader(fh))
    assert len(cli) == 5
    for ra, rc in zip(api, cli, strict=True):
        assert list(ra) == list(rc)
        for k in ra:
            assert _same(ra[k], rc[k]), (ra["level"], k, ra[k], rc[k])
    with open(tmp_path / "m.columns.csv", newline="") as fh:
        docs = {r["column"]: r for r in csv.DictReader(fh)}
    assert set(docs) == set(cli[0])
    assert docs["dh_mm"]["unit"] == "mm" and "80 %" in docs["dh_mm"]["definition"]
    assert "L4-L5: ok" in capsys.readouterr().out


def test_cli_json_equals_api(tmp_path):
    sc = scene("rect", 9.0)
    im, lab = sc.images()
    a, b = _write(tmp_path, im, lab)
    out = tmp_path / "m.json"
    assert main(["--progress", "none", "markers", str(a), str(b), "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    api = compute_markers(image_io.read_image(a), image_io.read_image(b)).rows()
    assert set(payload["columns"]) == set(api[0])
    for ra, rj in zip(api, payload["rows"], strict=True):
        for k, v in ra.items():
            if isinstance(v, float):
                assert rj[k] == pytest.approx(v, abs=1e-12)
            else:
                assert rj[k] == v


def test_cli_png_with_and_without_spacing(tmp_path):
    sc = scene("rect", 0.0)
    from PIL import Image

    im, _ = sc.images()
    Image.fromarray(np.clip(sitk.GetArrayFromImage(im), 0, 255).astype(np.uint8)).save(tmp_path / "t2w.png")
    Image.fromarray(sc.labels).save(tmp_path / "labels.png")
    out = tmp_path / "a.csv"
    assert main(["--progress", "none", "markers", str(tmp_path / "t2w.png"), str(tmp_path / "labels.png"),
                 "--out", str(out)]) == 0
    row = next(r for r in csv.DictReader(open(out)) if r["level"] == "L4-L5")
    assert row["dh_mm"] == "" and "spacing unknown" in row["reason"] and float(row["dhi"]) > 0
    out2 = tmp_path / "b.csv"
    assert main(["--progress", "none", "markers", str(tmp_path / "t2w.png"), str(tmp_path / "labels.png"),
                 "--pixel-spacing-mm", "0.5", "--out", str(out2)]) == 0
    row2 = next(r for r in csv.DictReader(open(out2)) if r["level"] == "L4-L5")
    assert float(row2["dh_mm"]) == pytest.approx(10.0, rel=0.02)
    assert float(row2["dhi"]) == pytest.approx(float(row["dhi"]), rel=1e-9)


def test_cli_off_grid_labelmap_is_one_line_exit_2(tmp_path, capsys):
    im, lab = scene("rect").images()
    lab.SetSpacing((0.7, 0.7))
    a, b = _write(tmp_path, im, lab)
    code = main(["--progress", "none", "markers", str(a), str(b), "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not on the image grid" in err
    assert not (tmp_path / "x.csv").exists()
