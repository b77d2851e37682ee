"""Tier 2: a disc registration transform file loads into a real MRML transform node with the right sense."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs real MRML nodes: pip install slicer-core")

from DiscAnalysisLib import mrml  # noqa: E402
from DiscAnalysisLib.errors import InputError  # noqa: E402
from DiscAnalysisLib.registration import write_transform  # noqa: E402

pytestmark = pytest.mark.mrml


def test_displacement_field_transform_loads_as_transform_from_parent(tmp_path):
    grid = sitk.Image([20, 20, 20], sitk.sitkVectorFloat64, 3)
    grid.SetOrigin((-10.0, -10.0, -10.0))
    shift_lps = np.array([1.5, -2.0, 3.0])
    arr = np.broadcast_to(shift_lps, (20, 20, 20, 3)).copy()
    field = sitk.GetImageFromArray(arr, isVector=True)
    field.CopyInformation(grid)
    path = write_transform(sitk.DisplacementFieldTransform(field), tmp_path / "atlas_to_patient.h5")
    scene = slicer.vtkMRMLScene()
    node = mrml.load_transform(scene, path)
    assert node.GetName() == "atlas_to_patient"
    x_lps = np.array([1.0, 2.0, -3.0])
    expected_lps = x_lps + shift_lps  # ITK: atlas point -> patient point
    ras = [-x_lps[0], -x_lps[1], x_lps[2]]
    out = node.GetTransformFromParent().TransformPoint(ras)
    assert np.allclose(out, [-expected_lps[0], -expected_lps[1], expected_lps[2]], atol=1e-3)
    with pytest.raises(InputError):
        mrml.load_transform(scene, tmp_path / "missing.h5")
