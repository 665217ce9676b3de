"""Runs shared by several test files (once per test session and worker)."""

from __future__ import annotations

import pytest
from nnrun_inprocess import run_nnrun


@pytest.fixture(scope="session")
def patching_run(tmp_path_factory):
    """`nnrun experiment=patching` (the demo model, the shipped 128-example dataset), in-process:
    (working directory, run directory, result)."""
    work = tmp_path_factory.mktemp("patching")
    result = run_nnrun(["experiment=patching", "model=demo"], cwd=work, run_dir=work / "run")
    assert result.code == 0, result.explain()
    return work, work / "run", result
