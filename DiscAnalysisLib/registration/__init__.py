"""Disc-by-disc atlas registration with elastix (2D and 3D).

Per disc (Iriondo et al., voxel-based T1rho/T2 relaxometry pipeline, Registration): translate the disc
mask to the atlas disc's centroid, affine (four-resolution recursive pyramid), then B-spline guided by
the masks with a transform rigidity penalty; apply the deformation to images, maps and labelmaps; map
atlas-space results back to the patient; report Dice with the atlas, the Jacobian determinant (SD,
folding fraction) per disc.

>>> from DiscAnalysisLib.registration import register_labelmap, write_registration
>>> results = register_labelmap(labelmap, maps={"t2_ms": t2_map}, dim=2, workers=2)
>>> write_registration(results, "out/")
"""

from .atlas import DiscAtlas, atlas_from_masks, load_atlas
from .batch import (
    DiscRegistration,
    RegistrationResults,
    register_labelmap,
    report_csv,
    summary,
    worker_pool,
    write_registration,
    write_transform,
)
from .disc import DiscTransform, RegistrationSettings, jacobian_determinant, register_disc, to_atlas, to_patient
from .geometry import DiscSkipped, midsagittal_slice

__all__ = [
    "DiscAtlas", "DiscRegistration", "DiscSkipped", "DiscTransform", "RegistrationResults", "RegistrationSettings", "atlas_from_masks",
    "jacobian_determinant", "load_atlas", "midsagittal_slice", "register_disc", "register_labelmap", "report_csv",
    "summary", "to_atlas", "to_patient", "worker_pool", "write_registration", "write_transform",
]
