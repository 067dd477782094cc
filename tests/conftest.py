"""Shared fixtures: where the real datasets are (``../shared/data`` or env ``FEDREC_DATA``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(autouse=True, scope="session")
def device_state_root(tmp_path_factory) -> Iterator[Path]:
    """Device hosts keep private state under ``$FEDREC_STATE_DIR``: a session folder here,
    so tests never leave state in the system's temporary folder (Ray workers and Flower
    processes started by the tests inherit it)."""
    root = tmp_path_factory.mktemp("device-state")
    old = os.environ.get("FEDREC_STATE_DIR")
    os.environ["FEDREC_STATE_DIR"] = str(root)
    yield root
    if old is None:
        os.environ.pop("FEDREC_STATE_DIR", None)
    else:
        os.environ["FEDREC_STATE_DIR"] = old
