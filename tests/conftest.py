"""Shared fixtures: where the real datasets are (``../shared/data`` or env ``FEDREC_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the shared real datasets; the test is skipped when it is absent.

    Env ``FEDREC_DATA`` wins over ``<repo>/../shared/data``.
    """
    root = Path(os.environ.get("FEDREC_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set FEDREC_DATA)")
    return root
