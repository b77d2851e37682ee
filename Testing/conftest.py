"""Shared pytest fixtures.

Real-data tests use the scans in ``../shared/data`` (relative to the repository root, or
``$DISCANALYSIS_DATA``); they skip with a stated reason when that folder is absent (a user's fresh clone).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISCANALYSIS_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """Path inside the shared real-data folder, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (set DISCANALYSIS_DATA to the shared data folder)")
    return path


def load_script(path: Path | str, name: str | None = None):
    """Import a script that is not a package module (``scripts/*.py``, ``Examples/*.py``) by its path.

    Registered in ``sys.modules`` under ``name`` (default: the file's stem) before it runs, so that dataclasses
    and pickling inside it find their module.
    """
    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data_dir():
    return shared_data


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
