"""Locating shipped resources (model weights, atlas, normal ranges) and checking their SHA-256.

Resources live in the repository's top-level ``Resources/`` folder. They are found, in order, at
``$DISCANALYSIS_RESOURCES``; next to the package (a source checkout, an editable install, or the Slicer
extension, where ``DiscAnalysisLib`` and ``Resources`` are installed side by side); or inside the
installed package as ``DiscAnalysisLib/resources_data`` (a wheel). Every shipped binary is listed with its
SHA-256 in a manifest and is verified before it is loaded: a corrupted or swapped file is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import InputError


def resources_dir() -> Path:
    """The folder holding the shipped resources."""
    env = os.environ.get("DISCANALYSIS_RESOURCES")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "Resources", here / "resources_data"]
    for c in candidates:
        if c.is_dir():
            return c
    raise InputError(
        "DiscAnalysis resources (model weights, atlas, normal ranges) were not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Reinstall DiscAnalysis or set DISCANALYSIS_RESOURCES to the Resources folder."
    )


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verified_path(relative: str, expected_sha256: str) -> Path:
    """Path of a shipped resource after checking its SHA-256 against the value the code expects."""
    path = resources_dir() / relative
    if not path.is_file():
        raise InputError(f"Shipped resource {relative} is missing from {resources_dir()}; reinstall DiscAnalysis.")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise InputError(
            f"Shipped resource {path} failed its integrity check (SHA-256 {actual[:12]}..., expected "
            f"{expected_sha256[:12]}...). The file is corrupted or was replaced; reinstall DiscAnalysis."
        )
    return path
