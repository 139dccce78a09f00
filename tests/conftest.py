"""Shared fixtures: the read-only training data and the small assets the project ships."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PIANOAPP_DATA", REPO.parent / "shared" / "data"))
ASSETS = REPO / "assets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"training data not found at {DATA_DIR} (set PIANOAPP_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return ASSETS
