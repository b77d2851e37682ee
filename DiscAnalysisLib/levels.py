"""Spinal level names and the on-disk label convention.

DiscAnalysis writes labelmaps in the convention of SPINEPS / TPTBox so that outputs interoperate with
those tools (https://github.com/Hendrik-code/spineps, label table in TPTBox ``v_name2idx``):

=========  =====  =========  =====
vertebra   label  disc       label
=========  =====  =========  =====
L1         20     L1-L2      120
L2         21     L2-L3      121
L3         22     L3-L4      122
L4         23     L4-L5      123
L5         24     L5-S1      124
S1         26
=========  =====  =========  =====

A disc's label is 100 + the label of the vertebra above it. Label 25 (L6, a transitional vertebra in
TPTBox) is never written by DiscAnalysis. 0 is background. Other tissue classes that the pipeline may
produce use labels outside these ranges (see :data:`CSF_LABEL`).

Mapping from other conventions (see :func:`convert_labels`):

* ``"from_l5s1"`` - discs numbered 1..5 counted upward from L5-S1 (1 = L5-S1 ... 5 = L1-L2). This is the
  convention of the Menezes-Reis lumbar T2 data set (``lumbar_t2_3d``, ``lumbar_disc_labels_native``).
* ``"from_l1l2"`` - discs numbered 1..5 counted downward from L1-L2 (1 = L1-L2 ... 5 = L5-S1).
* ``"spineps"`` - already this convention (identity).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from .errors import InputError

VERTEBRAE: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "S1")
DISCS: tuple[str, ...] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")

VERTEBRA_LABELS: dict[str, int] = {"L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24, "S1": 26}
DISC_LABELS: dict[str, int] = {d: 100 + VERTEBRA_LABELS[d.split("-")[0]] for d in DISCS}
#: Cerebrospinal fluid (spinal canal), used as reference tissue by some markers. TPTBox uses 61 for the
#: spinal canal; we use the same value.
CSF_LABEL: int = 61
#: Display names of the non-level tissue labels.
TISSUE_LABELS: dict[str, int] = {"CSF": CSF_LABEL}

LABEL_TO_NAME: dict[int, str] = {
    **{v: k for k, v in VERTEBRA_LABELS.items()},
    **{v: k for k, v in DISC_LABELS.items()},
    **{v: k for k, v in TISSUE_LABELS.items()},
}
NAME_TO_LABEL: dict[str, int] = {v: k for k, v in LABEL_TO_NAME.items()}

#: Fixed display colours (RGB, 0..1), one per level, so that every view of every patient looks alike.
#: Discs are warm/bright, vertebrae muted; chosen to be distinguishable for common colour-vision deficits
#: (adjacent levels alternate in hue and lightness).
LEVEL_COLORS: dict[str, tuple[float, float, float]] = {
    "L1": (0.65, 0.55, 0.45),
    "L2": (0.55, 0.65, 0.50),
    "L3": (0.50, 0.55, 0.70),
    "L4": (0.70, 0.50, 0.60),
    "L5": (0.55, 0.70, 0.70),
    "S1": (0.75, 0.70, 0.45),
    "L1-L2": (0.90, 0.60, 0.00),
    "L2-L3": (0.00, 0.45, 0.70),
    "L3-L4": (0.80, 0.40, 0.00),
    "L4-L5": (0.35, 0.70, 0.90),
    "L5-S1": (0.95, 0.90, 0.25),
    "CSF": (0.20, 0.60, 1.00),
}

_DISC_NUMBERINGS: dict[str, tuple[str, ...]] = {
    "from_l5s1": tuple(reversed(DISCS)),  # 1 = L5-S1 ... 5 = L1-L2
    "from_l1l2": DISCS,  # 1 = L1-L2 ... 5 = L5-S1
}
CONVENTIONS: tuple[str, ...] = ("spineps", *_DISC_NUMBERINGS)


def label_of(name: str) -> int:
    """Label value of a level name ("L4-L5" -> 123, "L5" -> 24). Raises InputError for unknown names."""
    try:
        return NAME_TO_LABEL[normalise_name(name)]
    except KeyError:
        raise InputError(
            f"Unknown level name '{name}'. Use one of {', '.join(VERTEBRAE + DISCS)}."
        ) from None


def name_of(label: int) -> str:
    """Level name of a label value (123 -> "L4-L5"). Raises InputError for values outside the convention."""
    try:
        return LABEL_TO_NAME[int(label)]
    except KeyError:
        raise InputError(
            f"Label value {label} is not in the DiscAnalysis (SPINEPS) convention; "
            "convert the labelmap first, e.g. with convention='from_l5s1' for discs numbered 1..5 from L5-S1."
        ) from None


_NAME_RE = re.compile(r"^(L[1-5]|S1)(?:-?(L[1-5]|S1|[1-5]))?$")


def normalise_name(name: str) -> str:
    """Accept common spellings ("l4l5", "L4/L5", "L4-5", "L5S1") and return the canonical name.

    Strings that are not a level spelling are returned upper-cased and otherwise unchanged, so that the
    caller's lookup fails with its own message.
    """
    s = name.strip().upper().replace("/", "-").replace("_", "-").replace(" ", "")
    m = _NAME_RE.match(s)
    if not m:
        return s
    upper, lower = m.groups()
    if lower is None:
        return upper
    if lower.isdigit():
        lower = "S1" if (upper == "L5" and lower == "1") else "L" + lower
    return f"{upper}-{lower}"


def is_disc(label: int) -> bool:
    return int(label) in DISC_LABELS.values()


def is_vertebra(label: int) -> bool:
    return int(label) in VERTEBRA_LABELS.values()


def disc_neighbours(disc: str) -> tuple[str, str]:
    """The vertebrae above and below a disc: "L4-L5" -> ("L4", "L5")."""
    disc = normalise_name(disc)
    if disc not in DISC_LABELS:
        raise InputError(f"'{disc}' is not a lumbar disc level; use one of {', '.join(DISCS)}.")
    upper, lower = disc.split("-")
    return upper, lower


def convert_labels(labels: np.ndarray, convention: str, mapping: Mapping[int, str] | None = None) -> np.ndarray:
    """Convert a labelmap array from another convention to the DiscAnalysis (SPINEPS) convention.

    ``convention`` is one of :data:`CONVENTIONS`; alternatively pass ``mapping`` (value -> level name) for
    anything else. Values that the convention does not know raise :class:`InputError` rather than being
    silently dropped.
    """
    labels = np.asarray(labels)
    if mapping is None:
        if convention == "spineps":
            unknown = set(np.unique(labels).tolist()) - {0} - set(LABEL_TO_NAME)
            if unknown:
                raise InputError(f"Labelmap has values {sorted(unknown)} that are not SPINEPS labels.")
            return labels.astype(np.uint8, copy=True)
        if convention not in _DISC_NUMBERINGS:
            raise InputError(f"Unknown label convention '{convention}'; use one of {', '.join(CONVENTIONS)}.")
        mapping = {i + 1: name for i, name in enumerate(_DISC_NUMBERINGS[convention])}
    out = np.zeros(labels.shape, dtype=np.uint8)
    present = set(np.unique(labels).tolist()) - {0}
    unknown = present - set(mapping)
    if unknown:
        raise InputError(
            f"Labelmap has values {sorted(unknown)} that the '{convention}' convention does not define "
            f"(it knows {sorted(mapping)})."
        )
    for value, name in mapping.items():
        out[labels == value] = label_of(name)
    return out
