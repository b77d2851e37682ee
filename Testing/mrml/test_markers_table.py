"""Markers through the MRML path: the table node holds the same numbers, units and definitions as the API."""

import math

import pytest
from markers_synthetic import scene, stack

slicer = pytest.importorskip("slicer", reason="needs real MRML nodes: pip install slicer-core")

from DiscAnalysisLib import mrml  # noqa: E402
from DiscAnalysisLib.markers import MarkerSettings, compute_markers  # noqa: E402

pytestmark = pytest.mark.mrml


def test_markers_table_node_round_trip():
    im, lab = stack(scene("ellipse", 11.0), n_slices=6)
    report = compute_markers(im, lab, MarkerSettings(age_years=52, sex="M"))
    rows = report.rows()
    scene_ = slicer.vtkMRMLScene()
    node = mrml.table_node_from_rows(scene_, rows, "Disc markers", units=report.units(),
                                     descriptions=report.descriptions())
    back = mrml.rows_from_table_node(node)
    assert len(back) == 5
    for ra, rb in zip(rows, back, strict=True):
        for k, v in ra.items():
            got = rb.get(k)
            if v is None:
                assert got is None or got == "" or (isinstance(got, float) and math.isnan(got)), k
            elif isinstance(v, float):
                assert got == pytest.approx(v, rel=1e-12, abs=1e-12), k
            else:
                assert got == v, k
    units = mrml.units_from_table_node(node)
    assert units["dh_mm"] == "mm" and units["delta_si"].startswith("a.u.")
