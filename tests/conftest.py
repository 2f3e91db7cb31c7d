"""Shared fixtures."""

import os
from pathlib import Path

import jax
import pytest


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX types (where precision is the point)."""
    with jax.enable_x64(True):
        yield


def shared_datasets() -> Path | None:
    """The folder of original dataset files (``../shared/datasets`` beside the repo)."""
    env = os.environ.get("GLOCAL_SHARED_DATASETS")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    return path if path.is_dir() else None
