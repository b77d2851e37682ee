"""The self-contained HTML report: content, no external resources, and a real render in headless Chromium."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from DiscAnalysisLib.phantom import PhantomSettings, make_phantom
from DiscAnalysisLib.report import Column, MapPanel, PatientReport, render_html, sagittal_view, write_report


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomSettings(seed=3))


def _report(ph, rows=None):
    rows = rows if rows is not None else tuple(
        {"level": lvl, "grade": g, "height_mm": ph.disc_height_mm[lvl], "qc": "" if g < 4 else "collapsed"}
        for lvl, g in ph.grades.items()
    )
    return PatientReport(
        "case-007", ph.t2w, ph.labels, rows,
        (Column("level", "Level"), Column("grade", "Pfirrmann"), Column("height_mm", "Disc height", "mm", 1), Column("qc", "QC")),
        maps=(MapPanel("T2 (ms)", ph.t2_ms, 0, 150, "ms"),), synthetic=True,
    )


def test_sagittal_view_puts_anterior_left_and_superior_up(phantom):
    lab, aspect = sagittal_view(phantom.labels)
    assert aspect == pytest.approx(1.0)
    rows_l1 = np.nonzero(lab == 20)[0]
    rows_s1 = np.nonzero(lab == 26)[0]
    assert rows_l1.mean() < rows_s1.mean()  # L1 above S1
    cols_body = np.nonzero(lab == 22)[1]
    cols_csf = np.nonzero(lab == 61)[1]
    assert cols_body.mean() < cols_csf.mean()  # vertebral body anterior (left) of the canal


def test_html_is_self_contained_and_has_one_row_per_level(phantom, tmp_path):
    path = write_report(_report(phantom), tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//|file:)""", text), "external resource referenced"
    assert text.count("data:image/png;base64,") == 2
    assert re.findall(r"data-level='([^']+)'", text) == list(phantom.grades)
    assert "collapsed" in text and "Synthetic phantom" in text
    assert "(mm)" in text


def test_missing_values_are_marked_not_zero(phantom):
    rows = ({"level": "L4-L5", "height_mm": None, "qc": "vertebra missing"},)
    text = render_html(_report(phantom, rows))
    cell = re.search(r"<tr data-level='L4-L5'>(.*?)</tr>", text).group(1)
    assert "\u2014" in cell and "0.0" not in cell


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not installed (CI installs Debian's 'chromium'); cannot render the report")


def test_report_renders_in_headless_chromium(phantom, tmp_path):
    browser = _chromium()
    html_path = write_report(_report(phantom), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}",
        html_path.as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    # not blank: a white page has ~zero variance; our page has a dark MR image and a table
    assert img.std() > 20
    assert (img < 60).mean() > 0.05  # the image panels are mostly dark
    # dump the DOM and check the table really has the expected rows after rendering
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", html_path.as_uri()], capture_output=True, text=True, timeout=120)
    assert re.findall(r'data-level="([^"]+)"', dom.stdout) == list(phantom.grades)
