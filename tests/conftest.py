"""Shared fixtures: offline mode, a per-session cache for built tiny models and programs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# pytest-xdist (`make test`: -n 2) runs a worker per core: torch's default of a thread per core in
# each worker puts two spinning threads on every core, which ran the tests that call torch
# themselves (reference hooks, autograd) 2-4x slower. Each worker gets its share of the cores
# (nnrun's runs still choose their own count, `threads=auto`). Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (_cores or 1)
                                                     // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(scope="session", autouse=True)
def nnrun_cache(tmp_path_factory):
    """Tiny models and generated programs are built once per test session."""
    if "NNRUN_CACHE" not in os.environ:
        os.environ["NNRUN_CACHE"] = str(tmp_path_factory.mktemp("nnrun-cache"))
    return os.environ["NNRUN_CACHE"]
