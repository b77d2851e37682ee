"""The shipped level-specific disc atlas (Resources/Atlas), loaded only after its SHA-256 check.

Built by scripts/build_disc_atlas.py from the 49 healthy subjects of lumbar_disc_labels_native
(Menezes-Reis et al. 2016): per level the medoid disc of a 25-subject atlas pool (most representative by
mean Dice after centroid + moment-affine alignment). 2D atlases are the mid-sagittal slice (axes
anterior->posterior, superior->inferior), 3D atlases have the PIR orientation at 0.43 x 0.43 x 4.4 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from .. import levels
from ..errors import InputError
from ..resources import verified_path

#: SHA-256 of each shipped atlas file (printed by scripts/build_disc_atlas.py).
ATLAS_SHA256: dict[str, str] = {}


def atlas_file(dim: int, level: str) -> str:
    return f"Atlas/disc_atlas_{dim}d_{level}.nrrd"


@dataclass(frozen=True)
class DiscAtlas:
    """One binary disc mask per level, all of the same dimension."""

    dim: int
    masks: dict  # level name -> sitk.Image (uint8 0/1)
    source: str = "shipped"

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(lv for lv in levels.DISCS if lv in self.masks)


_CACHE: dict[int, DiscAtlas] = {}


def load_atlas(dim: int) -> DiscAtlas:
    """The shipped atlas of dimension ``dim`` (2 or 3), each file checked against its SHA-256."""
    if dim not in (2, 3):
        raise InputError(f"There is a 2D and a 3D disc atlas; dimension {dim} was asked for. Use 2 or 3.")
    if dim not in _CACHE:
        masks = {}
        for level in levels.DISCS:
            rel = atlas_file(dim, level)
            name = rel.split("/", 1)[1]
            path = verified_path(rel, ATLAS_SHA256.get(name, "missing"))
            masks[level] = sitk.Cast(sitk.ReadImage(str(path)) > 0, sitk.sitkUInt8)
        _CACHE[dim] = DiscAtlas(dim=dim, masks=masks)
    return _CACHE[dim]


def atlas_from_masks(masks: dict, source: str = "custom") -> DiscAtlas:
    """An atlas from user-supplied masks ({level: binary sitk image}); all must share one dimension."""
    dims = {m.GetDimension() for m in masks.values()}
    if len(dims) != 1:
        raise InputError(f"Atlas masks mix dimensions {sorted(dims)}; give masks of one dimension.")
    norm = {levels.normalise_name(k): sitk.Cast(v > 0, sitk.sitkUInt8) for k, v in masks.items()}
    return DiscAtlas(dim=dims.pop(), masks=norm, source=source)
