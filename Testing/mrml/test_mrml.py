"""Tier-2 tests: the MRML bridge against real MRML nodes from ``slicer-core`` (no Slicer application)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="the MRML bridge tests need real MRML nodes: pip install slicer-core")
vtk = pytest.importorskip("vtk", reason="the MRML bridge tests need VTK: pip install vtk")

from DiscAnalysisLib import image_io, levels, mrml  # noqa: E402
from DiscAnalysisLib.errors import InputError  # noqa: E402

pytestmark = pytest.mark.mrml

SPACING = (0.7, 1.3, 3.1)
ORIGIN = (-12.5, 40.25, 7.0)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A proper rotation (det +1) from angles in degrees about x, then y, then z."""
    cx, sx = np.cos(np.radians(ax)), np.sin(np.radians(ax))
    cy, sy = np.cos(np.radians(ay)), np.sin(np.radians(ay))
    cz, sz = np.cos(np.radians(az)), np.sin(np.radians(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTION = _rotation(20.0, -35.0, 50.0)


def _oblique(array_kji: np.ndarray) -> sitk.Image:
    """A 3D image on an oblique, non-isotropic grid with a non-zero origin (LPS)."""
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(DIRECTION.ravel()))
    return image


def _image_2d() -> sitk.Image:
    array = np.random.default_rng(2).normal(100.0, 20.0, size=(4, 6)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.8))
    image.SetOrigin((3.0, -2.0))
    angle = np.radians(25.0)
    image.SetDirection((np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)))
    return image


def _labels_kji() -> np.ndarray:
    labels = np.zeros((3, 5, 7), dtype=np.uint8)
    labels[:, 0:2, :] = levels.VERTEBRA_LABELS["L4"]
    labels[:, 2, 1:6] = levels.DISC_LABELS["L4-L5"]
    labels[:, 3:5, :] = levels.VERTEBRA_LABELS["L5"]
    labels[2, 4, 5:] = levels.DISC_LABELS["L5-S1"]
    return labels


def _assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetDimension() == b.GetDimension()
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def _assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    _assert_same_geometry(a, b)
    assert a.GetPixelID() == b.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture(params=[np.float32, np.int16, np.uint8, np.float64])
def image_3d(request) -> sitk.Image:
    rng = np.random.default_rng(1)
    dtype = np.dtype(request.param)
    if dtype.kind == "f":
        array = rng.normal(0.0, 50.0, size=(3, 5, 7)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 5, 7), endpoint=True).astype(dtype)
    return _oblique(array)


# ------------------------------------------------------------------------------------------- geometry
def test_flip_lps_ras_negates_first_two_axes_and_is_its_own_inverse():
    direction_ras, origin_ras = mrml.flip_lps_ras(DIRECTION, ORIGIN)
    np.testing.assert_allclose(direction_ras[:2], -DIRECTION[:2])
    np.testing.assert_allclose(direction_ras[2], DIRECTION[2])
    np.testing.assert_allclose(origin_ras, (12.5, -40.25, 7.0))
    direction_back, origin_back = mrml.flip_lps_ras(direction_ras, origin_ras)
    np.testing.assert_allclose(direction_back, DIRECTION)
    np.testing.assert_allclose(origin_back, ORIGIN)


def test_importing_the_bridge_does_not_import_slicer():
    code = "import sys, DiscAnalysisLib.mrml; assert 'slicer' not in sys.modules and 'vtk' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------------------- volumes
def test_volume_round_trip_keeps_values_pixel_type_and_geometry(scene, image_3d):
    node = mrml.volume_node_from_image(scene, image_3d, "T2w")
    assert node.GetScene() is scene and node.GetName() == "T2w"
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert node.GetDisplayNode() is not None
    # Slicer's own accessor sees the same (k, j, i) array.
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(image_3d))
    _assert_same_image(mrml.image_from_volume_node(node), image_3d)


def test_ijk_to_ras_matches_simpleitk_physical_points_flipped_to_ras(scene):
    image = _oblique(np.zeros((3, 5, 7), np.float32))
    node = mrml.volume_node_from_image(scene, image, "grid")
    matrix = _ijk_to_ras(node)
    np.testing.assert_allclose(matrix, mrml.ijk_to_ras_matrix(image), atol=1e-9)
    for index in [(0, 0, 0), (6, 4, 2), (3, 1, 2), (1, 4, 0)]:
        x, y, z = image.TransformIndexToPhysicalPoint(index)  # LPS
        ras = matrix @ np.array([*index, 1.0])
        np.testing.assert_allclose(ras[:3], (-x, -y, z), atol=1e-9)


def test_2d_image_is_a_single_slice_volume_and_comes_back_2d(scene):
    image = _image_2d()
    node = mrml.volume_node_from_image(scene, image, "sagittal slice")
    assert node.GetImageData().GetDimensions() == (6, 4, 1)
    matrix = _ijk_to_ras(node)
    x, y = image.TransformIndexToPhysicalPoint((5, 3))
    np.testing.assert_allclose((matrix @ [5, 3, 0, 1])[:3], (-x, -y, 0.0), atol=1e-9)

    _assert_same_image(mrml.image_from_volume_node(node), image)
    as_3d = mrml.image_from_volume_node(node, dimension=3)
    assert as_3d.GetSize() == (6, 4, 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(as_3d)[0], sitk.GetArrayFromImage(image))


def test_3d_volume_cannot_be_forced_to_2d(scene, image_3d):
    node = mrml.volume_node_from_image(scene, image_3d, "T2w")
    with pytest.raises(InputError, match="2D"):
        mrml.image_from_volume_node(node, dimension=2)


def test_spacing_unknown_flag_travels_through_the_node(scene):
    image = image_io.mark_spacing_unknown(_image_2d())
    node = mrml.volume_node_from_image(scene, image, "screenshot")
    assert not image_io.spacing_known(mrml.image_from_volume_node(node))


def test_labelmap_volume_uses_the_level_colour_table(scene):
    labels = _oblique(_labels_kji())
    node = mrml.volume_node_from_image(scene, labels, "levels", labelmap=True)
    assert node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    colors = node.GetDisplayNode().GetColorNode()
    assert colors is mrml.level_color_table_node(scene)  # created once, then reused
    rgba = [0.0] * 4
    colors.GetColor(levels.DISC_LABELS["L4-L5"], rgba)
    np.testing.assert_allclose(rgba[:3], levels.LEVEL_COLORS["L4-L5"], atol=0.5 / 255)  # stored as 8 bits
    assert colors.GetColorName(levels.DISC_LABELS["L4-L5"]) == "L4-L5"
    _assert_same_image(mrml.image_from_volume_node(node), labels)


def test_float_image_is_refused_as_labelmap(scene):
    with pytest.raises(InputError, match="integer"):
        mrml.volume_node_from_image(scene, _oblique(np.zeros((3, 5, 7), np.float32)), "x", labelmap=True)


def test_vector_image_is_refused_with_a_clear_message(scene):
    rgb = sitk.Image([4, 3], sitk.sitkVectorUInt8, 3)
    with pytest.raises(InputError, match="3 values per voxel"):
        mrml.volume_node_from_image(scene, rgb, "photo")


# -------------------------------------------------------------------------------------- segmentations
def test_segmentation_has_one_named_coloured_segment_per_level(scene):
    labels = _oblique(_labels_kji())
    node = mrml.segmentation_node_from_labelmap(scene, labels, "Levels")
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == ["L4", "L4-L5", "L5", "L5-S1"]  # top to bottom
    for level in ids:
        segment = segmentation.GetSegment(level)
        assert segment.GetName() == level
        np.testing.assert_allclose(segment.GetColor(), levels.LEVEL_COLORS[level])
        tag = vtk.reference("")
        assert segment.GetTag(mrml.LABEL_VALUE_TAG, tag) and int(str(tag)) == levels.label_of(level)
    assert node.GetDisplayNode() is not None
    _assert_same_image(mrml.labelmap_from_segmentation_node(node), labels)


def test_segmentation_round_trip_on_a_reference_grid_and_in_2d(scene):
    labels = _oblique(_labels_kji())
    volume = mrml.volume_node_from_image(scene, _oblique(np.zeros((3, 5, 7), np.int16)), "T2w")
    node = mrml.segmentation_node_from_labelmap(scene, labels, "Levels", reference_volume_node=volume)
    _assert_same_image(mrml.labelmap_from_segmentation_node(node), labels)
    _assert_same_image(mrml.labelmap_from_segmentation_node(node, labels), labels)

    grid_2d = _image_2d()
    labels_2d = sitk.GetImageFromArray(_labels_kji()[2, :4, :6])
    labels_2d.CopyInformation(grid_2d)
    node_2d = mrml.segmentation_node_from_labelmap(scene, labels_2d, "Levels 2D")
    _assert_same_image(mrml.labelmap_from_segmentation_node(node_2d), labels_2d)


def _segmentation_edited_by_a_user(scene):
    """Levels with one segment renamed, one respelled and one painted in its own layer; and the expected labels."""
    labels = _oblique(_labels_kji())
    node = mrml.segmentation_node_from_labelmap(scene, labels, "Levels")
    segmentation = node.GetSegmentation()
    segmentation.GetSegment("L4-L5").SetName("L3-L4")  # the user corrected a level
    segmentation.GetSegment("L5-S1").SetName("l5s1")  # another accepted spelling

    # A segment painted in Segment Editor lives in its own layer with a cropped extent.
    painted = mrml._oriented_image_from_sitk(labels, np.zeros((3, 5, 7), np.uint8))
    painted.SetExtent(2, 3, 0, 0, 1, 2)
    painted.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    painted.GetPointData().GetScalars().Fill(1)
    segment_id = segmentation.AddEmptySegment("", "CSF")
    segmentation.GetSegment(segment_id).AddRepresentation("Binary labelmap", painted)
    assert segmentation.GetNumberOfLayers() == 2

    expected = _labels_kji()
    expected[expected == levels.DISC_LABELS["L4-L5"]] = levels.DISC_LABELS["L3-L4"]
    expected[1:3, 0, 2:4] = levels.CSF_LABEL
    expected_image = sitk.GetImageFromArray(expected)
    expected_image.CopyInformation(labels)
    return node, expected_image


def test_renamed_and_user_painted_segments_map_by_name(scene):
    node, expected = _segmentation_edited_by_a_user(scene)
    _assert_same_image(mrml.labelmap_from_segmentation_node(node), expected)


def test_unknown_segment_name_raises_naming_it_and_the_choices(scene):
    node = mrml.segmentation_node_from_labelmap(scene, _oblique(_labels_kji()), "Levels")
    node.GetSegmentation().GetSegment("L5").SetName("Segment_1")
    with pytest.raises(InputError, match="Segment_1") as info:
        mrml.labelmap_from_segmentation_node(node)
    assert "L4-L5" in str(info.value) and "Levels" in str(info.value)


def test_label_values_outside_the_convention_are_refused(scene):
    array = _labels_kji()
    array[0, 0, 0] = 7
    with pytest.raises(InputError, match="7"):
        mrml.segmentation_node_from_labelmap(scene, _oblique(array), "Levels")


def test_empty_labelmap_gives_an_empty_segmentation_on_the_same_grid(scene):
    labels = _oblique(np.zeros((3, 5, 7), np.uint8))
    node = mrml.segmentation_node_from_labelmap(scene, labels, "Nothing yet")
    assert node.GetSegmentation().GetNumberOfSegments() == 0
    _assert_same_image(mrml.labelmap_from_segmentation_node(node), labels)


# --------------------------------------------------------------------------------------------- tables
ROWS = [
    {"level": "L4-L5", "height_mm": 9.25, "grade": 3, "qc_passed": True, "reason": None},
    {"level": "L5-S1", "height_mm": None, "grade": None, "qc_passed": False, "reason": "disc not found"},
    {"level": "L3-L4", "height_mm": float("nan"), "grade": 2, "qc_passed": True},
]


def test_table_rows_round_trip_with_types_and_missing_values(scene):
    node = mrml.table_node_from_rows(
        scene, ROWS, "Markers", units={"height_mm": "mm"}, descriptions={"grade": "Pfirrmann grade"}
    )
    assert node.GetNumberOfRows() == 3
    assert node.GetColumnType("level") == vtk.VTK_STRING
    assert node.GetColumnType("height_mm") == vtk.VTK_DOUBLE
    assert node.GetColumnType("qc_passed") == vtk.VTK_BIT
    assert node.GetColumnType("grade") == vtk.VTK_DOUBLE  # has a gap, so it cannot be an int column
    assert np.isnan(node.GetTable().GetValueByName(1, "grade").ToDouble())  # the gap is not 0
    assert node.GetColumnUnitLabel("height_mm") == "mm"
    assert node.GetColumnDescription("grade") == "Pfirrmann grade"

    rows = mrml.rows_from_table_node(node)
    expected = [{**row, "reason": row.get("reason")} for row in ROWS]
    expected[2]["height_mm"] = None  # NaN is read back as missing
    assert rows == expected
    assert type(rows[0]["grade"]) is int and type(rows[0]["qc_passed"]) is bool


def test_complete_integer_column_is_an_int_column(scene):
    node = mrml.table_node_from_rows(scene, [{"n": 1}, {"n": 2**40}, {"n": -3}], "Counts")
    assert node.GetColumnType("n") == vtk.VTK_LONG_LONG
    assert mrml.rows_from_table_node(node) == [{"n": 1}, {"n": 2**40}, {"n": -3}]


def test_units_for_an_unknown_column_are_refused(scene):
    with pytest.raises(InputError, match="height"):
        mrml.table_node_from_rows(scene, ROWS, "Markers", units={"height": "mm"})


# -------------------------------------------------------------------------------------------- storage
def _no_leftovers(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_volume_save_load_round_trip(scene, tmp_path, image_3d):
    node = mrml.volume_node_from_image(scene, image_3d, "T2w")
    path = mrml.save_node(scene, node, tmp_path / "t2w.nrrd")
    assert path.is_file() and node.GetStorageNode().GetFileName() == str(path)
    _no_leftovers(tmp_path)
    # The file is in LPS as every other tool expects: SimpleITK reads back the original image.
    _assert_same_image(sitk.ReadImage(str(path)), image_3d)

    loaded = mrml.load_volume(scene, path)
    assert loaded.GetName() == "t2w" and loaded.GetScene() is scene
    np.testing.assert_allclose(_ijk_to_ras(loaded), _ijk_to_ras(node), atol=1e-9)
    _assert_same_image(mrml.image_from_volume_node(loaded), image_3d)


def test_labelmap_volume_save_load_round_trip(scene, tmp_path):
    labels = _oblique(_labels_kji())
    path = mrml.save_node(scene, mrml.volume_node_from_image(scene, labels, "L", labelmap=True), tmp_path / "l.nrrd")
    loaded = mrml.load_volume(scene, path, labelmap=True, name="levels")
    assert loaded.GetClassName() == "vtkMRMLLabelMapVolumeNode" and loaded.GetName() == "levels"
    _assert_same_image(mrml.image_from_volume_node(loaded), labels)


def test_segmentation_save_load_round_trip(scene, tmp_path):
    labels = _oblique(_labels_kji())
    node = mrml.segmentation_node_from_labelmap(scene, labels, "Levels")
    path = mrml.save_node(scene, node, tmp_path / "levels.seg.nrrd")
    _no_leftovers(tmp_path)

    loaded = mrml.load_segmentation(scene, path)
    assert loaded.GetName() == "levels"
    segmentation = loaded.GetSegmentation()
    for level in ("L4", "L4-L5", "L5", "L5-S1"):
        np.testing.assert_allclose(segmentation.GetSegment(level).GetColor(), levels.LEVEL_COLORS[level], atol=1e-6)
    _assert_same_image(mrml.labelmap_from_segmentation_node(loaded), labels)


def test_edited_segmentation_with_two_layers_save_load_round_trip(scene, tmp_path):
    node, expected = _segmentation_edited_by_a_user(scene)
    loaded = mrml.load_segmentation(scene, mrml.save_node(scene, node, tmp_path / "edited.seg.nrrd"))
    _assert_same_image(mrml.labelmap_from_segmentation_node(loaded), expected)


def test_table_save_load_round_trip(scene, tmp_path):
    node = mrml.table_node_from_rows(scene, ROWS, "Markers", units={"height_mm": "mm"})
    path = mrml.save_node(scene, node, tmp_path / "markers.tsv")
    assert (tmp_path / "markers.schema.tsv").is_file()  # column types and units
    _no_leftovers(tmp_path)

    loaded = mrml.load_table(scene, path)
    assert mrml.rows_from_table_node(loaded) == mrml.rows_from_table_node(node)
    assert mrml.units_from_table_node(loaded) == {"height_mm": "mm"}


def test_reading_a_missing_or_corrupt_file_raises_input_error(scene, tmp_path):
    with pytest.raises(InputError, match="not found"):
        mrml.load_volume(scene, tmp_path / "absent.nrrd")
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_bytes(b"NRRD0004\nthis is not a header\n")
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="corrupt.nrrd"):
        mrml.load_volume(scene, corrupt)
    with pytest.raises(InputError, match="corrupt.nrrd"):
        mrml.load_segmentation(scene, corrupt)
    with pytest.raises(InputError, match=r"\.tsv"):
        mrml.load_table(scene, corrupt)
    assert scene.GetNumberOfNodes() == nodes_before  # nothing half-loaded is left in the scene


def test_truncated_segmentation_raises_input_error_instead_of_aborting(scene, tmp_path):
    labels = np.zeros((30, 50, 70), np.uint8)
    labels[:, 10:20] = levels.DISC_LABELS["L4-L5"]
    node = mrml.segmentation_node_from_labelmap(scene, sitk.GetImageFromArray(labels), "Levels")
    path = mrml.save_node(scene, node, tmp_path / "levels.seg.nrrd")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="corrupt or truncated"):
        mrml.load_segmentation(scene, path)


def test_writing_with_a_wrong_extension_or_where_no_file_can_be_created_raises_input_error(scene, tmp_path):
    node = mrml.table_node_from_rows(scene, ROWS, "Markers")
    with pytest.raises(InputError, match=r"\.tsv"):
        mrml.save_node(scene, node, tmp_path / "markers.nrrd")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError, match="Cannot write"):
        mrml.save_node(scene, node, blocker / "markers.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
