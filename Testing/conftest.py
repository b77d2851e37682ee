"""Shared pytest fixtures.

Real-data tests use the scans in ``../shared/data`` (relative to the repository root, or
``$DISCANALYSIS_DATA``); they skip with a stated reason when that folder is absent (a user's fresh clone).
"""

from __future__ import annotations

import os
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


@pytest.fixture
def data_dir():
    return shared_data


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
