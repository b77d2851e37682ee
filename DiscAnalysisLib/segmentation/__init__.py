"""Disc and vertebral-body segmentation with level labels (L1-L2..L5-S1, L1..S1).

A small 2D MONAI U-Net runs slice by slice on sagittal T2-weighted images (a single slice or a stack);
post-processing keeps consistent connected components, counts levels upward from L5-S1 at the sacrum
and reports per-level confidence and QC flags. Weights ship in ``Resources/Models`` and are verified by
SHA-256 before loading. torch/MONAI are imported only when a function needs them.

>>> from DiscAnalysisLib.segmentation import segment_image
>>> result = segment_image(image)                      # SimpleITK image, 2D or 3D
>>> result.labels                                      # labelmap, same geometry, SPINEPS values
>>> result.to_rows()                                   # one row per level with confidence and flags
"""

from __future__ import annotations

from .api import SegmentationResult, SegmentationSettings, predict_classes, segment_image
from .postprocess import LevelRow, PostprocessSettings, assign_levels

__all__ = [
    "LevelRow",
    "PostprocessSettings",
    "SegmentationResult",
    "SegmentationSettings",
    "assign_levels",
    "predict_classes",
    "segment_image",
]
