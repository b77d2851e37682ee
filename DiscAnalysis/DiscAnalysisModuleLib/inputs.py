"""The "Inspect" step of the Inputs section: what DiscAnalysis sees in the selected volume."""

from __future__ import annotations

from typing import TYPE_CHECKING

from DiscAnalysisLib.errors import InputError

if TYPE_CHECKING:  # annotations only
    from DiscAnalysisLib.image_io import ImageInfo

# Where an index axis points, for the orientation letters of DiscAnalysisLib.image_io.orientation_code.
_DIRECTION_WORDS = {
    "L": "left",
    "R": "right",
    "A": "anterior",
    "P": "posterior",
    "S": "superior",
    "I": "inferior",
}
# The slice plane is the plane orthogonal to the k (slice) axis.
_PLANE_OF_SLICE_AXIS = {"L": "sagittal", "R": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}


def inspectVolumeNode(volumeNode) -> ImageInfo:
    """Size (i, j, k), spacing (mm), origin (mm, LPS), orientation and pixel type of a volume node's image.

    The image is read through the MRML bridge (:func:`DiscAnalysisLib.mrml.image_from_volume_node`), the
    conversion every analysis step uses, so the geometry shown is the geometry the analysis works with
    (ITK's LPS coordinates, as ``discanalysis info`` prints them). Raises
    :class:`~DiscAnalysisLib.errors.InputError` when no volume is selected or the volume holds no voxels.
    """
    if volumeNode is None:
        raise InputError("No input volume is selected. Select the sagittal T2-weighted volume in the Inputs section.")
    from DiscAnalysisLib import image_io, mrml

    image = mrml.image_from_volume_node(volumeNode)
    notes = []
    if volumeNode.GetParentTransformNode() is not None:
        notes.append("the volume is under a transform, which the analysis ignores: harden the transform to apply it")
    storageNode = volumeNode.GetStorageNode()
    fileName = storageNode.GetFileName() if storageNode is not None else None
    return image_io.describe_image(image, fileName or volumeNode.GetName(), image_io.times_ms(image), notes)


def slicePlane(info: ImageInfo) -> str | None:
    """Plane of the slices of a 3D image: "sagittal", "coronal" or "axial" (where its k axis points); None in 2D."""
    if len(info.size) != 3 or len(info.orientation) != 3:
        return None
    return _PLANE_OF_SLICE_AXIS[info.orientation[2]]


def formatImageInfo(info: ImageInfo) -> str:
    """Multi-line text describing ``info`` for the module panel."""
    row = info.to_row()
    axisNames = "ijk"[: len(info.orientation)]
    axes = ", ".join(
        f"{axis} \N{RIGHTWARDS ARROW} {_DIRECTION_WORDS[letter]}"
        for axis, letter in zip(axisNames, info.orientation, strict=True)
    )
    lines = [
        f"Source: {row['path']}",
        f"Size (i x j x k): {row['size'].replace('x', ' x ')} voxels",
        f"Spacing: {row['spacing_mm'].replace(' ', ' x ')} mm" if info.spacing_mm else "Spacing: unknown",
        f"Origin (LPS): {row['origin_mm']} mm",
        f"Orientation: {info.orientation} ({axes})",
    ]
    plane = slicePlane(info)
    if plane is not None:
        lines.append(f"Slices: {plane}" + ("" if plane == "sagittal" else " (DiscAnalysis expects sagittal slices)"))
    lines.append(f"Pixel type: {info.pixel_type}")
    if info.times_ms:
        lines.append(f"Echo / spin-lock times: {row['times_ms']} ms")
    lines.extend(f"Note: {note}" for note in info.notes)
    return "\n".join(lines)
