"""Pfirrmann grading (1-5) of lumbar discs from a sagittal T2-weighted image and a disc labelmap.

* :func:`grade_discs` (``api``): every disc level of a labelmap -> :class:`GradeResult` rows (grade,
  probabilities, confidence, expected grade, mild/moderate/severe group, QC, or "not graded" + reason).
* ``crop``: the disc-centred, disc-width-scaled crop and its intensity normalisation.
* ``model`` / ``predict``: the compact CNN, its losses, and loading the shipped SHA-256-checked weights.
* ``metrics``: balanced accuracy, kappa (unweighted/quadratic), Lin's CCC, macro-F1, AUC, patient bootstrap.
* ``sudirman``: reader of the training data set (scripts and tests only).

torch is imported only when a model is built or loaded.
"""

from __future__ import annotations

from .api import GradeResult, GradingSettings, grade_discs
from .metrics import GROUPS, group_of

__all__ = ["GROUPS", "GradeResult", "GradingSettings", "grade_discs", "group_of"]
