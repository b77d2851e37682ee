"""The body of the DiscAnalysis self-test, shared by two runners.

* ``DiscAnalysisTest`` in ``DiscAnalysis.py`` runs it inside Slicer on ``slicer.mrmlScene``;
* ``Testing/module/test_selftest_shared.py`` runs it under pytest on a ``slicer.vtkMRMLScene()`` of the
  ``slicer-core`` PyPI package.

It uses nothing but the scene it is given (no application, no Qt), and raises AssertionError with a
message naming the quantity that is wrong.
"""

from __future__ import annotations

import numpy as np

from .inputs import formatImageInfo, inspectVolumeNode

#: The synthetic volume: a sagittal stack whose index axes point i -> posterior, j -> inferior, k -> right,
#: the usual layout of a sagittal lumbar MRI series.
SIZE_IJK = (12, 10, 4)
SPACING_MM = (0.5, 0.6, 4.0)
ORIGIN_RAS = (10.0, -20.0, 30.0)
#: Columns are the RAS directions of the i, j and k axes.
DIRECTIONS_RAS = np.array(
    [
        [0.0, 0.0, 1.0],
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
    ]
)
#: The same geometry in ITK's LPS coordinates (x and y negated), as DiscAnalysisLib reports it.
ORIGIN_LPS = (-10.0, 20.0, 30.0)
DIRECTIONS_LPS = np.diag([-1.0, -1.0, 1.0]) @ DIRECTIONS_RAS
ORIENTATION = "PIR"


def syntheticVoxels() -> np.ndarray:
    """Voxel values in (k, j, i) order, 100 k + 10 j + i, so that any axis mix-up changes them."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(SIZE_IJK)), indexing="ij")
    return (100 * k + 10 * j + i).astype(np.float32)


def addSyntheticVolume(scene, name: str = "DiscAnalysisSelfTest"):
    """Add a scalar volume node with the geometry above to ``scene``, built with the MRML API directly
    (not through DiscAnalysisLib.mrml, so that the bridge is checked against MRML's own geometry)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    imageData = vtk.vtkImageData()
    imageData.SetDimensions(*SIZE_IJK)
    scalars = numpy_to_vtk(syntheticVoxels().ravel(), deep=True)
    scalars.SetName("ImageScalars")
    imageData.GetPointData().SetScalars(scalars)

    directions = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            directions.SetElement(row, column, DIRECTIONS_RAS[row, column])

    volumeNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volumeNode.SetSpacing(*SPACING_MM)
    volumeNode.SetOrigin(*ORIGIN_RAS)
    volumeNode.SetIJKToRASDirectionMatrix(directions)
    volumeNode.SetAndObserveImageData(imageData)
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode


def runSelfTest(scene):
    """Inspect a synthetic volume of known geometry and check every reported number; return the volume."""
    volumeNode = addSyntheticVolume(scene)

    info = inspectVolumeNode(volumeNode)
    _expectEqual(info.size, SIZE_IJK, "size (i, j, k)")
    _expectClose(info.spacing_mm, SPACING_MM, "spacing (mm)")
    _expectClose(info.origin_mm, ORIGIN_LPS, "origin (mm, LPS)")
    _expectClose(info.direction, DIRECTIONS_LPS.ravel(), "direction (LPS, row-major)")
    _expectEqual(info.orientation, ORIENTATION, "orientation")
    _expectEqual(info.pixel_type, "32-bit float", "pixel type")
    _expectEqual(info.notes, (), "notes")

    text = formatImageInfo(info)
    for expected in ("12 x 10 x 4 voxels", "0.5 x 0.6 x 4 mm", "Orientation: PIR", "Slices: sagittal"):
        if expected not in text:
            raise AssertionError(f"panel text lacks {expected!r}:\n{text}")

    # Voxels and their positions: the image DiscAnalysisLib works on must put every voxel value where
    # MRML's own IJK-to-RAS matrix puts it.
    import SimpleITK as sitk
    import vtk

    from DiscAnalysisLib import mrml

    image = mrml.image_from_volume_node(volumeNode)
    _expectClose(sitk.GetArrayFromImage(image), syntheticVoxels(), "voxel values in (k, j, i) order")
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    for ijk in [(0, 0, 0), (11, 0, 0), (0, 9, 0), (0, 0, 3), (11, 9, 3)]:
        ras = ijkToRas.MultiplyPoint((*ijk, 1.0))[:3]
        lps = (-ras[0], -ras[1], ras[2])
        _expectClose(image.TransformIndexToPhysicalPoint(ijk), lps, f"LPS position of voxel {ijk}")

    # Missing input gives an actionable error, not a crash.
    from DiscAnalysisLib.errors import InputError

    for badNode, what in [(None, "no volume"), (scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty"), "empty")]:
        try:
            inspectVolumeNode(badNode)
        except InputError:
            pass
        else:
            raise AssertionError(f"inspecting {what} did not raise InputError")

    return volumeNode


def _expectEqual(actual, expected, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: got {actual!r}, expected {expected!r}")


def _expectClose(actual, expected, what: str, tolerance: float = 1e-6) -> None:
    actualArray, expectedArray = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if actualArray.shape != expectedArray.shape or not np.allclose(actualArray, expectedArray, atol=tolerance):
        raise AssertionError(f"{what}: got {actual!r}, expected {expected!r}")
