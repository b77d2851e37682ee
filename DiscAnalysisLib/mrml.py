"""Bridge between MRML nodes and DiscAnalysis images, labelmaps and result rows (layer 2).

Everything here runs on plain ``slicer-core`` (PyPI) as well as inside 3D Slicer: the MRML scene is always
passed in, never taken from ``slicer.mrmlScene``, and no application, module or Qt object is used.
``slicer`` and VTK are imported when a function first needs them, so importing this module is cheap and
the rest of :mod:`DiscAnalysisLib` never imports it.

Conventions
-----------
* SimpleITK images are in ITK's **LPS** patient coordinates; MRML nodes are in Slicer's **RAS**
  coordinates. :func:`flip_lps_ras` is the one place where one is converted into the other.
* Voxel arrays are in **(k, j, i)** order (slice, row, column), the order of
  ``SimpleITK.GetArrayFromImage`` and ``slicer.util.arrayFromVolume``; a vtkImageData stores the same
  memory with i varying fastest.
* A 2D image becomes a single-slice volume (k = 1) whose third axis is the LPS z axis at z = 0; the node
  remembers that it came from a 2D image (attribute :data:`DIMENSION_ATTRIBUTE`) and converts back to 2D.
* Labelmaps use the SPINEPS label values of :mod:`DiscAnalysisLib.levels`; a segmentation node holds one
  segment per level, whose ID and name are the level name ("L4-L5") and whose colour is
  :data:`levels.LEVEL_COLORS`. Converting back reads the label from the segment *name*, so segments that a
  user renamed or edited in Segment Editor still map to the right value.
* Table nodes hold result rows with typed columns; missing numbers are stored as NaN, never as 0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from . import levels
from .errors import InputError, require
from .image_io import SPACING_KEY, TIMES_KEY

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import slicer

log = logging.getLogger(__name__)

#: Node attribute set to "2" on volume and segmentation nodes made from a 2D image.
DIMENSION_ATTRIBUTE = "DiscAnalysis.ImageDimension"
#: Segment tag holding the label value the segment was created from (informational; the name decides).
LABEL_VALUE_TAG = "DiscAnalysis.LabelValue"
#: Attribute marking the scene's level colour table node (see :func:`level_color_table_node`).
LEVEL_COLOR_TABLE_ATTRIBUTE = "DiscAnalysis.LevelColorTable"
LEVEL_COLOR_TABLE_NAME = "DiscAnalysis levels"
#: Table column property recording the Python type of a column stored as double because it has gaps.
VALUE_TYPE_PROPERTY = "DiscAnalysis.valueType"

# Image metadata that DiscAnalysis relies on and that travels as node attributes of the same name.
_METADATA_KEYS = (SPACING_KEY, TIMES_KEY)
_BINARY_LABELMAP = "Binary labelmap"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_GEOMETRY_TOLERANCE = 1e-6
# Top-to-bottom order of segments in the segment list: L1, L1-L2, L2, ..., L5-S1, S1, then tissues.
_ANATOMICAL_ORDER: tuple[str, ...] = (
    *(name for pair in zip(levels.VERTEBRAE[:-1], levels.DISCS, strict=True) for name in pair),
    "S1",
    *levels.TISSUE_LABELS,
)


_PURPOSE = "The MRML bridge (DiscAnalysisLib.mrml)"


def _slicer():
    return require("slicer", _PURPOSE, "pip install slicer-core, or run the code inside 3D Slicer")


def _numpy_support():
    return require("vtkmodules.util.numpy_support", _PURPOSE, "pip install vtk")


def _vtk():
    """VTK's core classes (data arrays); the full ``vtk`` module would also load rendering."""
    return require("vtkmodules.vtkCommonCore", _PURPOSE, "pip install vtk")


def _new_vtk_matrix():
    return require("vtkmodules.vtkCommonMath", _PURPOSE, "pip install vtk").vtkMatrix4x4()


# ------------------------------------------------------------------------------------------- geometry
def flip_lps_ras(direction: Sequence[float] | np.ndarray, origin: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Convert a 3D direction matrix and origin between LPS (ITK) and RAS (Slicer).

    ``direction`` is 3x3 (or 9 numbers, row-major) whose columns are the i, j, k axes; ``origin`` has 3
    components (mm). The first two rows of the direction and the first two origin components are negated.
    The flip is its own inverse, so the same call converts RAS back to LPS. All LPS/RAS conversions of
    DiscAnalysis go through this function.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    o = np.asarray(origin, dtype=float).reshape(3)
    return _LPS_TO_RAS @ d, _LPS_TO_RAS @ o


def _geometry_3d(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spacing (3,), origin (3,) and direction (3, 3) of ``image`` in LPS, 2D images embedded at z = 0."""
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise InputError(f"Only 2D and 3D images can become MRML nodes; this image is {dim}D.")
    spacing = np.ones(3)
    origin = np.zeros(3)
    direction = np.eye(3)
    spacing[:dim] = image.GetSpacing()
    origin[:dim] = image.GetOrigin()
    direction[:dim, :dim] = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    return spacing, origin, direction


def ijk_to_ras_matrix(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of ``image`` (a 2D image as its single-slice volume).

    Column c of the upper 3x3 block is the RAS direction of index axis c times its spacing (mm); the last
    column is the RAS position of voxel (0, 0, 0). A volume node made by :func:`volume_node_from_image`
    has exactly this matrix.
    """
    spacing, origin, direction = _geometry_3d(image)
    direction_ras, origin_ras = flip_lps_ras(direction, origin)
    matrix = np.eye(4)
    matrix[:3, :3] = direction_ras * spacing[np.newaxis, :]
    matrix[:3, 3] = origin_ras
    return matrix


def _image_from_ras(
    array_kji: np.ndarray,
    spacing: Sequence[float],
    origin_ras: Sequence[float],
    direction_ras: np.ndarray,
    dimension: int,
    what: str,
) -> sitk.Image:
    """Build a SimpleITK image (LPS) from a (k, j, i) array and RAS geometry; ``dimension`` 2 drops k."""
    direction, origin = flip_lps_ras(direction_ras, origin_ras)
    spacing = np.asarray(spacing, dtype=float)
    if dimension == 2:
        in_plane = (
            array_kji.shape[0] == 1
            and np.allclose(direction[2], (0.0, 0.0, 1.0), atol=_GEOMETRY_TOLERANCE)
            and np.allclose(direction[:2, 2], 0.0, atol=_GEOMETRY_TOLERANCE)
            and abs(origin[2]) <= _GEOMETRY_TOLERANCE
        )
        if not in_plane:
            raise InputError(
                f"{what} cannot be returned as a 2D image: it has {array_kji.shape[0]} slice(s) or does not lie in "
                "the z = 0 plane with its slice axis along z. Use it as a 3D image (dimension=3)."
            )
        image = sitk.GetImageFromArray(array_kji[0])
        image.SetSpacing(tuple(spacing[:2]))
        image.SetOrigin(tuple(origin[:2]))
        image.SetDirection(tuple(direction[:2, :2].ravel()))
        return image
    if dimension != 3:
        raise ValueError(f"dimension must be 2, 3 or None, not {dimension!r}")
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(direction.ravel()))
    return image


def _scalar_array(image: sitk.Image, what: str) -> np.ndarray:
    """The voxels of a scalar 2D/3D image as a contiguous (k, j, i) array (k = 1 for 2D)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} values per voxel; DiscAnalysis works on "
            "scalar (grey-value) images. Convert colour or vector images to one channel first."
        )
    _geometry_3d(image)  # checks the dimension
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        array = array[np.newaxis]
    if array.dtype.kind not in "iuf":
        raise InputError(f"{what} has pixel type {image.GetPixelIDTypeAsString()}, which MRML volumes cannot hold.")
    return np.ascontiguousarray(array)


def _vtk_matrix(array: np.ndarray):
    matrix = _new_vtk_matrix()
    rows, cols = array.shape
    for r in range(rows):
        for c in range(cols):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _fill_image_data(image_data, array_kji: np.ndarray) -> None:
    """Make ``image_data`` (vtkImageData or vtkOrientedImageData) hold ``array_kji`` (deep copy)."""
    numpy_support = _numpy_support()
    nk, nj, ni = array_kji.shape
    image_data.SetDimensions(ni, nj, nk)
    scalars = numpy_support.numpy_to_vtk(array_kji.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image_data.GetPointData().SetScalars(scalars)


def _array_from_image_data(image_data, what: str) -> np.ndarray:
    """Copy of the scalars of a vtkImageData as a (k, j, i) array."""
    scalars = None if image_data is None else image_data.GetPointData().GetScalars()
    if scalars is None:
        raise InputError(f"{what} holds no voxel data. Load or compute the image first.")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(
            f"{what} has {scalars.GetNumberOfComponents()} values per voxel; DiscAnalysis works on scalar "
            "(grey-value) volumes. Convert it to a scalar volume first."
        )
    x0, x1, y0, y1, z0, z1 = image_data.GetExtent()
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    return _numpy_support().vtk_to_numpy(scalars).reshape(shape).copy()


def _oriented_image_from_sitk(image: sitk.Image, array_kji: np.ndarray | None = None):
    """A vtkOrientedImageData on the grid of ``image`` (RAS), holding ``array_kji`` or uint8 zeros."""
    spacing, origin, direction = _geometry_3d(image)
    direction_ras, origin_ras = flip_lps_ras(direction, origin)
    if array_kji is None:
        size = tuple(int(s) for s in image.GetSize())
        array_kji = np.zeros((1, *size[::-1]) if len(size) == 2 else size[::-1], np.uint8)
    oriented = _slicer().vtkOrientedImageData()
    oriented.SetSpacing(*spacing)
    oriented.SetOrigin(*origin_ras)
    directions = np.eye(4)
    directions[:3, :3] = direction_ras
    oriented.SetDirectionMatrix(_vtk_matrix(directions))
    _fill_image_data(oriented, array_kji)
    return oriented


def _ras_geometry(image_data, spacing, origin, get_direction_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spacing, RAS direction and RAS position of the first voxel of ``image_data``'s extent.

    Volume nodes and vtkOrientedImageData both keep spacing, origin (of index 0) and directions apart from
    the voxels; an extent that does not start at 0 (a cropped segment) shifts the first voxel.
    """
    directions = _new_vtk_matrix()
    get_direction_matrix(directions)
    direction_ras = _numpy_matrix(directions)[:3, :3]
    spacing = np.asarray(spacing, dtype=float)
    extent_start = np.asarray(image_data.GetExtent()[::2], dtype=float)
    origin_ras = np.asarray(origin, dtype=float) + direction_ras @ (spacing * extent_start)
    return spacing, direction_ras, origin_ras


def _requested_dimension(node, dimension: int | None) -> int:
    if dimension is not None:
        return dimension
    return 2 if node.GetAttribute(DIMENSION_ATTRIBUTE) == "2" else 3


# -------------------------------------------------------------------------------------------- volumes
def volume_node_from_image(
    scene: slicer.vtkMRMLScene, image: sitk.Image, name: str, *, labelmap: bool = False
) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a scalar volume node (or a labelmap volume node) holding ``image`` to ``scene``.

    The node's IJK-to-RAS matrix is the image's spacing, origin and direction converted from LPS to RAS
    (see :func:`ijk_to_ras_matrix`); voxels are copied in (k, j, i) order with their pixel type. A 2D image
    becomes a single-slice volume. The DiscAnalysis metadata flags (unknown spacing, echo times) are kept
    as node attributes. A display node is added: greyscale for volumes, the level colour table
    (:func:`level_color_table_node`) for labelmaps.
    """
    slicer = _slicer()
    what = f"Image '{name}'"
    array = _scalar_array(image, what)
    if labelmap and array.dtype.kind not in "iu":
        raise InputError(
            f"{what} has pixel type {image.GetPixelIDTypeAsString()}; a labelmap needs integer label values. "
            "Pass a labelmap image (e.g. UInt8) or create a scalar volume instead."
        )
    spacing, origin, direction = _geometry_3d(image)
    direction_ras, origin_ras = flip_lps_ras(direction, origin)

    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin_ras)
    directions = np.eye(4)
    directions[:3, :3] = direction_ras
    node.SetIJKToRASDirectionMatrix(_vtk_matrix(directions))
    image_data = require("vtkmodules.vtkCommonDataModel", _PURPOSE, "pip install vtk").vtkImageData()
    _fill_image_data(image_data, array)
    node.SetAndObserveImageData(image_data)
    for key in _METADATA_KEYS:
        if image.HasMetaDataKey(key):
            node.SetAttribute(key, image.GetMetaData(key))
    if image.GetDimension() == 2:
        node.SetAttribute(DIMENSION_ATTRIBUTE, "2")
    scene.AddNode(node)
    _add_volume_display_node(scene, node, labelmap)
    return node


def _add_volume_display_node(scene, node, labelmap: bool) -> None:
    slicer = _slicer()
    if labelmap:
        # The default labelmap colour table ("Labels") exists only in a full Slicer application; the level
        # table is in every scene we touch and gives the same colours as the segmentation.
        display = slicer.vtkMRMLLabelMapVolumeDisplayNode()
        scene.AddNode(display)
        display.SetAndObserveColorNodeID(level_color_table_node(scene).GetID())
        node.SetAndObserveDisplayNodeID(display.GetID())
    else:
        # Refers to Slicer's "Grey" colour table; without the application it is a dangling ID, which MRML
        # tolerates (the display node then falls back to greyscale).
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOn()


def image_from_volume_node(node: slicer.vtkMRMLVolumeNode, *, dimension: int | None = None) -> sitk.Image:
    """The SimpleITK image (LPS) held by a scalar or labelmap volume node; inverse of
    :func:`volume_node_from_image`.

    Voxels keep their pixel type; spacing, origin and direction come from the node's own IJK-to-RAS
    geometry converted to LPS. A parent transform is *not* applied (harden it in Slicer first if the
    image should move). ``dimension`` 2 returns a 2D image (the volume must be a single slice at z = 0);
    None returns 2D for nodes made from a 2D image and 3D otherwise.
    """
    what = f"Volume '{node.GetName()}'"
    array = _array_from_image_data(node.GetImageData(), what)
    if node.GetParentTransformNode() is not None:
        log.warning("%s is under a transform, which is ignored; harden the transform to apply it.", what)
    spacing, direction_ras, origin_ras = _ras_geometry(
        node.GetImageData(), node.GetSpacing(), node.GetOrigin(), node.GetIJKToRASDirectionMatrix
    )
    image = _image_from_ras(array, spacing, origin_ras, direction_ras, _requested_dimension(node, dimension), what)
    for key in _METADATA_KEYS:
        value = node.GetAttribute(key)
        if value is not None:
            image.SetMetaData(key, value)
    return image


# ------------------------------------------------------------------------------------- level colours
def level_color_table_node(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """The scene's colour table of spinal levels, created on first use.

    Entry ``v`` is label value ``v`` of the SPINEPS convention, named after its level ("L4-L5") and
    coloured with :data:`levels.LEVEL_COLORS`; other entries are unnamed and transparent. Slicer uses it
    to display labelmap volumes and, as a segmentation's labelmap conversion table, to give exported
    labelmaps the DiscAnalysis label values.
    """
    slicer = _slicer()
    existing = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for i in range(existing.GetNumberOfItems()):
        candidate = existing.GetItemAsObject(i)
        if candidate.GetAttribute(LEVEL_COLOR_TABLE_ATTRIBUTE) == "1":
            return candidate
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetName(LEVEL_COLOR_TABLE_NAME)
    table.SetAttribute(LEVEL_COLOR_TABLE_ATTRIBUTE, "1")
    table.SetNumberOfColors(max(levels.LABEL_TO_NAME) + 1)
    for value in range(table.GetNumberOfColors()):
        table.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
    table.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for value, level in levels.LABEL_TO_NAME.items():
        table.SetColor(value, level, *levels.LEVEL_COLORS[level], 1.0)
    scene.AddNode(table)
    return table


def _anatomical_rank(label: int) -> int:
    return _ANATOMICAL_ORDER.index(levels.name_of(label))


# --------------------------------------------------------------------------------------- segmentations
def segmentation_node_from_labelmap(
    scene: slicer.vtkMRMLScene,
    labels: sitk.Image,
    name: str,
    *,
    reference_volume_node: slicer.vtkMRMLVolumeNode | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """Add a segmentation node with one segment per level present in ``labels`` (SPINEPS values).

    Segment ID and name are the level name ("L4-L5"), the colour is :data:`levels.LEVEL_COLORS`, the tag
    :data:`LABEL_VALUE_TAG` records the label value; segments are listed top to bottom (L1, L1-L2, ...).
    All segments share one binary labelmap layer on the grid of ``labels``. The segmentation's reference
    geometry is ``reference_volume_node``'s if given, otherwise the grid of ``labels``, so that
    :func:`labelmap_from_segmentation_node` returns the same grid. Values outside the convention raise
    :class:`InputError` (convert them with :func:`levels.convert_labels` first).
    """
    slicer = _slicer()
    what = f"Labelmap '{name}'"
    array = _scalar_array(labels, what)
    if array.dtype.kind not in "iu":
        raise InputError(f"{what} has pixel type {labels.GetPixelIDTypeAsString()}; label values must be integers.")
    values = sorted((int(v) for v in np.unique(array) if v != 0), key=_anatomical_rank)  # name_of checks values
    shared_layer = _oriented_image_from_sitk(labels, array.astype(np.uint8))

    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    node.SetSourceRepresentationToBinaryLabelmap()
    segmentation = node.GetSegmentation()
    for value in values:
        level = levels.name_of(value)
        segment = slicer.vtkSegment()
        segment.SetName(level)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*levels.LEVEL_COLORS[level])
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(value)
        segment.SetTag(LABEL_VALUE_TAG, str(value))
        segment.AddRepresentation(_BINARY_LABELMAP, shared_layer)
        segmentation.AddSegment(segment, level)
    if reference_volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    else:
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            slicer.vtkSegmentationConverter.SerializeImageGeometry(shared_layer),
        )
    node.SetLabelmapConversionColorTableNodeID(level_color_table_node(scene).GetID())
    if labels.GetDimension() == 2:
        node.SetAttribute(DIMENSION_ATTRIBUTE, "2")
    return node


def _label_of_segment(segment_name: str, node_name: str) -> int:
    canonical = levels.normalise_name(segment_name)
    if canonical in levels.NAME_TO_LABEL:
        return levels.NAME_TO_LABEL[canonical]
    raise InputError(
        f"Segment '{segment_name}' of segmentation '{node_name}' is not a spinal level name, so its label value "
        f"is unknown. Rename it to one of {', '.join(levels.NAME_TO_LABEL)} (or delete it)."
    )


def _segmentation_geometry(node, reference: sitk.Image | None):
    """The grid (vtkOrientedImageData) on which a segmentation is turned into a labelmap."""
    slicer = _slicer()
    if reference is not None:
        return _oriented_image_from_sitk(reference)
    segmentation = node.GetSegmentation()
    serialized = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    if not serialized and segmentation.GetNumberOfSegments() > 0:
        serialized = segmentation.DetermineCommonLabelmapGeometry(slicer.vtkSegmentation.EXTENT_UNION_OF_SEGMENTS)
    geometry = slicer.vtkOrientedImageData()
    if not serialized or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, geometry, True):
        raise InputError(
            f"Segmentation '{node.GetName()}' has no geometry (no reference volume and no segments). "
            "Pass the reference image to convert it to a labelmap."
        )
    return geometry


def labelmap_from_segmentation_node(
    node: slicer.vtkMRMLSegmentationNode,
    reference: sitk.Image | None = None,
    *,
    dimension: int | None = None,
) -> sitk.Image:
    """A UInt8 labelmap (SPINEPS values, LPS geometry) of a segmentation node.

    Each segment's label comes from its *name* (:func:`levels.normalise_name` spellings such as "l4l5"
    are accepted), so renamed segments map correctly; a name that is not a level raises
    :class:`InputError` naming the segment and the accepted names. The grid is ``reference``'s if given
    (the output then has its dimension), otherwise the segmentation's reference geometry, otherwise the
    union of the segments' extents. Where segments of different levels overlap, the later segment in the
    list wins and a warning is logged. ``dimension`` is as in :func:`image_from_volume_node`.
    """
    slicer = _slicer()
    vtk = _vtk()
    segmentation = node.GetSegmentation()
    segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = {sid: segmentation.GetSegment(sid).GetName() for sid in segment_ids}
    labels = {sid: _label_of_segment(names[sid], node.GetName()) for sid in segment_ids}
    if segment_ids and not segmentation.ContainsRepresentation(_BINARY_LABELMAP):
        if not node.CreateBinaryLabelmapRepresentation():
            raise InputError(
                f"Segmentation '{node.GetName()}' cannot be converted to a binary labelmap. Convert it in the "
                "Segmentations module (Representations: Binary labelmap) first."
            )
    geometry = _segmentation_geometry(node, reference)
    spacing, direction_ras, origin_ras = _ras_geometry(
        geometry, geometry.GetSpacing(), geometry.GetOrigin(), geometry.GetDirectionMatrix
    )
    x0, x1, y0, y1, z0, z1 = geometry.GetExtent()
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)

    out = np.zeros(shape, dtype=np.uint8)
    for sid in segment_ids:
        mask_image = slicer.vtkOrientedImageData()
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(sid)
        values = vtk.vtkIntArray()
        values.InsertNextValue(1)
        if not node.GenerateMergedLabelmapForAllSegments(
            mask_image, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry, ids, values
        ):
            raise InputError(f"Segment '{names[sid]}' of segmentation '{node.GetName()}' could not be resampled.")
        mask = _array_from_image_data(mask_image, f"Segment '{names[sid]}'")
        if mask.shape != shape:  # pragma: no cover - MRML returns the requested extent
            raise RuntimeError(f"segment mask has shape {mask.shape}, expected {shape}")
        mask = mask != 0
        clash = mask & (out != 0) & (out != labels[sid])
        if clash.any():
            log.warning(
                "Segment '%s' overlaps other levels in %d voxels of segmentation '%s'; those voxels get label %d.",
                names[sid], int(clash.sum()), node.GetName(), labels[sid],
            )
        out[mask] = labels[sid]

    if reference is not None:
        dimension = reference.GetDimension()
    return _image_from_ras(
        out, spacing, origin_ras, direction_ras, _requested_dimension(node, dimension), f"Segmentation '{node.GetName()}'"
    )


# --------------------------------------------------------------------------------------------- tables
def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    return False


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _column_kind(values: Sequence[Any]) -> str:
    """'bool', 'int', 'float' or 'str' for the non-missing values of a column (all missing: 'str')."""
    present = [v for v in values if not _is_missing(v)]
    if not present:
        return "str"
    if all(_is_bool(v) for v in present):
        return "bool"
    if any(_is_bool(v) for v in present):
        return "str"
    if all(isinstance(v, numbers.Integral) for v in present):
        return "int"
    if all(isinstance(v, numbers.Real) for v in present):
        return "float"
    return "str"


_INT32 = np.iinfo(np.int32)


def _vtk_column(name: str, values: Sequence[Any]) -> tuple[Any, str | None]:
    """A VTK array for one column and, for gappy int/bool columns stored as double, their Python type."""
    vtk = _vtk()
    kind = _column_kind(values)
    has_gaps = any(_is_missing(v) for v in values)
    value_type = None
    if kind == "str":
        column = vtk.vtkStringArray()
        for v in values:
            column.InsertNextValue("" if _is_missing(v) else str(v))
    elif kind in ("bool", "int") and not has_gaps:
        if kind == "bool":
            column = vtk.vtkBitArray()
        elif all(_INT32.min <= int(v) <= _INT32.max for v in values):
            column = vtk.vtkIntArray()
        else:
            column = vtk.vtkLongLongArray()
        for v in values:
            column.InsertNextValue(int(v))
    else:
        # Gaps are NaN, which only floating-point columns can hold; integer-valued columns remember their
        # type so that rows_from_table_node gives back ints and bools, and a gap never reads back as 0.
        column = vtk.vtkDoubleArray()
        for v in values:
            column.InsertNextValue(math.nan if _is_missing(v) else float(v))
        value_type = None if kind == "float" else kind
    column.SetName(name)
    return column, value_type


def table_node_from_rows(
    scene: slicer.vtkMRMLScene,
    rows: Sequence[Mapping[str, Any]],
    name: str,
    *,
    units: Mapping[str, str] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> slicer.vtkMRMLTableNode:
    """Add a table node with one row per mapping in ``rows`` and one typed column per key.

    Columns appear in the order keys are first seen; a key absent from a row is missing there. Column
    types: bools -> bit, ints -> int (64-bit when needed), other numbers -> double, anything else ->
    string. Missing values (None, NaN, absent key) are NaN in number columns (an int or bool column with
    gaps is stored as double and marked with :data:`VALUE_TYPE_PROPERTY`) and empty in string columns,
    so they never read back as 0. ``units`` and ``descriptions`` (column -> text) become the columns'
    unit label and description, which Slicer shows and the table storage node saves.
    """
    slicer = _slicer()
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    for label, mapping in (("units", units), ("descriptions", descriptions)):
        unknown = sorted(set(mapping or {}) - set(columns))
        if unknown:
            raise InputError(f"Table '{name}': {label} given for columns {unknown} that no row has.")

    node = slicer.vtkMRMLTableNode()
    node.SetName(name)
    scene.AddNode(node)
    table = node.GetTable()
    value_types = {}
    for column_name in columns:
        column, value_types[column_name] = _vtk_column(column_name, [row.get(column_name) for row in rows])
        table.AddColumn(column)
    for column_name, value_type in value_types.items():
        if value_type is not None:
            node.SetColumnProperty(column_name, VALUE_TYPE_PROPERTY, value_type)
    for column_name, unit in (units or {}).items():
        node.SetColumnUnitLabel(column_name, unit)
    for column_name, description in (descriptions or {}).items():
        node.SetColumnDescription(column_name, description)
    node.Modified()
    return node


def _column_values(node, column) -> list[Any]:
    vtk = _vtk()
    n = column.GetNumberOfTuples()
    if isinstance(column, vtk.vtkStringArray):
        return [column.GetValue(r) or None for r in range(n)]
    if isinstance(column, vtk.vtkBitArray):
        return [bool(column.GetValue(r)) for r in range(n)]
    if isinstance(column, vtk.vtkDataArray):
        array = _numpy_support().vtk_to_numpy(column)
        if array.ndim > 1:  # multi-component column (e.g. a position): one tuple per row
            return [tuple(float(x) for x in row) for row in array]
        if array.dtype.kind in "iu":
            return [int(x) for x in array]
        value_type = node.GetColumnProperty(column.GetName(), VALUE_TYPE_PROPERTY)
        convert = {"int": int, "bool": bool}.get(value_type, float)
        return [None if math.isnan(x) else convert(x) for x in array.tolist()]
    return [column.GetVariantValue(r).ToString() or None for r in range(n)]


def rows_from_table_node(node: slicer.vtkMRMLTableNode) -> list[dict[str, Any]]:
    """The rows of a table node as dicts (column name -> value); inverse of :func:`table_node_from_rows`.

    Number columns give ints or floats, bit columns bools, string columns str; missing values (NaN,
    empty string) give None. A table read from a file without a schema has only string columns.
    """
    table = node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    values = {column.GetName(): _column_values(node, column) for column in columns}
    return [{name: column_values[r] for name, column_values in values.items()} for r in range(table.GetNumberOfRows())]


def units_from_table_node(node: slicer.vtkMRMLTableNode) -> dict[str, str]:
    """Column name -> unit label, for the columns of a table node that have one."""
    table = node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return {name: node.GetColumnUnitLabel(name) for name in names if node.GetColumnUnitLabel(name)}


# -------------------------------------------------------------------------------------------- storage
def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _messages(storage) -> str:
    messages = storage.GetUserMessages()
    text = messages.GetAllMessagesAsString().strip() if messages is not None else ""
    return " ".join(line.lstrip("- ").strip() for line in text.splitlines() if line.strip())


@contextlib.contextmanager
def _staging_folder(path: Path) -> Iterator[Path]:
    """A temporary folder next to ``path``; on success every file written there is renamed into place.

    Storage nodes may write companion files (a table's ``.schema.tsv``, an ``.mhd``'s ``.raw``), so the
    whole folder is moved, the file named ``path`` last: a crash never leaves a half-written output.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise InputError(f"Cannot write to {path.parent}: {exc.strerror or exc}. Check the folder and its permissions.") from None
    try:
        yield staging
        for written in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_node(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLStorableNode, path: str | os.PathLike) -> Path:
    """Write a volume, segmentation or table node to ``path`` through its MRML storage node.

    The format follows the extension: volumes ``.nrrd``/``.nii.gz``/``.mha``..., segmentations
    ``.seg.nrrd``, tables ``.tsv``/``.csv`` (plus a ``.schema.tsv``/``.schema.csv`` holding column types
    and units). The node's storage node is created if it has none and points at ``path`` afterwards.
    Writing is atomic (temporary files renamed into place); failures raise :class:`InputError`.
    """
    path = Path(path)
    if node.GetScene() is not scene:
        raise ValueError(f"node '{node.GetName()}' is not in the given scene")
    storage = node.GetStorageNode()
    if storage is None:
        storage = node.CreateDefaultStorageNode()
        if storage is None:
            raise InputError(f"'{node.GetName()}' ({node.GetClassName()}) cannot be saved to a file.")
        scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
    _check_extension(storage, path, f"save '{node.GetName()}' as", write=True)
    previous = storage.GetFileName() or ""
    with _staging_folder(path) as staging:
        storage.ResetFileNameList()
        storage.SetFileName(str(staging / path.name))
        storage.GetUserMessages().ClearMessages()
        if not storage.WriteData(node):
            storage.SetFileName(previous)
            raise InputError(
                f"Cannot save '{node.GetName()}' to {path}: {_messages(storage) or 'the storage node refused it'}."
            )
    storage.ResetFileNameList()
    storage.SetFileName(str(path))
    return path


def _supported_extensions(storage, *, write: bool) -> list[str]:
    """Extensions a storage node reads or writes; empty when it does not say (volumes accept what ITK reads)."""
    found = _vtk().vtkStringArray()
    types = storage.GetSupportedWriteFileTypes() if write else storage.GetSupportedReadFileTypes()
    storage.GetFileExtensionsFromFileTypes(types, found)
    extensions = [found.GetValue(i) for i in range(found.GetNumberOfValues())]
    return [] if ".*" in extensions else extensions


def _check_extension(storage, path: Path, action: str, *, write: bool) -> None:
    extensions = _supported_extensions(storage, write=write)
    if extensions and not any(path.name.lower().endswith(ext) for ext in extensions):
        raise InputError(f"Cannot {action} {path.name}: the file name must end with one of {', '.join(extensions)}.")


def _load(scene, node, storage, path: str | os.PathLike, what: str, name: str | None):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what.capitalize()} file not found: {path}. Check the path.")
    _check_extension(storage, path, f"read a {what} from", write=False)
    node.SetName(name or storage.GetFileNameWithoutExtension(str(path)) or path.stem)
    scene.AddNode(storage)
    scene.AddNode(node)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        details = _messages(storage)
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(f"Cannot read {path} as a {what}: {details or 'unsupported or corrupt file'}.")
    return node


def load_volume(
    scene: slicer.vtkMRMLScene, path: str | os.PathLike, *, labelmap: bool = False, name: str | None = None
) -> slicer.vtkMRMLScalarVolumeNode:
    """Read one image file (NRRD, NIfTI, MHA, ...) into a new scalar (or labelmap) volume node in ``scene``.

    Only the named file is read (no series of numbered files). The node is named after the file unless
    ``name`` is given and gets a display node as in :func:`volume_node_from_image`.
    """
    slicer = _slicer()
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetSingleFile(True)
    _load(scene, node, storage, path, "labelmap volume" if labelmap else "volume", name)
    _add_volume_display_node(scene, node, labelmap)
    return node


def load_segmentation(
    scene: slicer.vtkMRMLScene, path: str | os.PathLike, *, name: str | None = None
) -> slicer.vtkMRMLSegmentationNode:
    """Read a ``.seg.nrrd`` file into a new segmentation node in ``scene`` (segments, colours, geometry)."""
    slicer = _slicer()
    path = Path(path)
    if path.is_file() and not path.name.lower().endswith(".vtm"):
        # The segmentation storage node lets ITK's exception for a corrupt or truncated NRRD escape, which
        # aborts the process outside the Slicer application; reading the file once with SimpleITK first
        # turns that into a message.
        try:
            sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(
                f"Cannot read {path} as a segmentation (corrupt or truncated file?): {_last_line(exc)}"
            ) from None
    node = _load(
        scene, slicer.vtkMRMLSegmentationNode(), slicer.vtkMRMLSegmentationStorageNode(), path, "segmentation", name
    )
    node.CreateDefaultDisplayNodes()
    return node


def load_table(scene: slicer.vtkMRMLScene, path: str | os.PathLike, *, name: str | None = None) -> slicer.vtkMRMLTableNode:
    """Read a ``.tsv``/``.csv`` table (and its ``.schema`` file, if any) into a new table node in ``scene``."""
    slicer = _slicer()
    return _load(scene, slicer.vtkMRMLTableNode(), slicer.vtkMRMLTableStorageNode(), path, "table", name)


def load_transform(scene: slicer.vtkMRMLScene, path: str | os.PathLike, *, name: str | None = None
                   ) -> slicer.vtkMRMLTransformNode:
    """Read an ITK transform file (.h5, .tfm; e.g. a disc registration's ``atlas_to_patient.h5``) into a
    new transform node in ``scene``.

    ITK files hold *resampling* transforms (output point -> input point, LPS); Slicer stores them as the
    node's "transform from parent" in RAS. So a patient volume placed under the node loaded from
    ``atlas_to_patient.h5`` is shown in atlas space, and an atlas-space volume placed under
    ``patient_to_atlas.h5`` is shown on the patient (the usual Slicer registration convention).
    """
    slicer = _slicer()
    return _load(scene, slicer.vtkMRMLTransformNode(), slicer.vtkMRMLTransformStorageNode(), path, "transform",
                 name)
