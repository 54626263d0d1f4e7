"""Helpers shared by tests (importable as `support`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CARNET_SHARED", ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("CARNET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def need_shared(*parts: str) -> Path:
    """Path inside ../shared; skip cleanly when absent, fail in CI."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if IN_CI:
            pytest.fail(f"{p} is missing in CI")
        pytest.skip(f"{p} not available")
    return p
