"""Shared fixtures: offline mode, a per-session cache for built tiny models and programs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def nnrun_cache(tmp_path_factory):
    """Tiny models and generated programs are built once per test session."""
    if "NNRUN_CACHE" not in os.environ:
        os.environ["NNRUN_CACHE"] = str(tmp_path_factory.mktemp("nnrun-cache"))
    return os.environ["NNRUN_CACHE"]
