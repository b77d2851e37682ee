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
ATLAS_SHA256: dict[str, str] = {
    "disc_atlas_2d_L1-L2.nrrd": "b2f7d578bac6b5d32aaaa04d62f631fd21fea06e1f00409f1fa110b685990432",
    "disc_atlas_2d_L2-L3.nrrd": "c652ffcf0acca3d9c81ccd473dff05ed3f2e14042388a7c42c86cf34908e1943",
    "disc_atlas_2d_L3-L4.nrrd": "fd544e0bdfcf0450542985ac0d56fd19b788cef7275b76c9a731dbc7a1a8c67d",
    "disc_atlas_2d_L4-L5.nrrd": "555db9e9a65a72fbb12d3f6de1587c3a933d3213d49d2a1952639c0372a54fa5",
    "disc_atlas_2d_L5-S1.nrrd": "f80f382f808b526ceb895f7c60ec5b562769e1f5318fd658fbf7b7f2d174d0b5",
    "disc_atlas_3d_L1-L2.nrrd": "829a1c1de89d53901e5dc25f7ef536247a4e5097b14ad68c5c8f0329c6e28c2e",
    "disc_atlas_3d_L2-L3.nrrd": "97cee654c5fb2be7c371036a990f7c8cce634829e41cdf72df153031d460fd1b",
    "disc_atlas_3d_L3-L4.nrrd": "5b99ffa5febbd0fb6fb65d293b3547b524c61ef16fdb25fb1ba170cf1a8e9d8a",
    "disc_atlas_3d_L4-L5.nrrd": "1968371d53794986167dd9ab62d19f1e1d26dd58e5e3643329e6abfc69557c84",
    "disc_atlas_3d_L5-S1.nrrd": "555746a138ba6aeb79ec657a768f820108fb8255977ebde400f14707ad6e0fce",
}


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
