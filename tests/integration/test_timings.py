"""The manifest's `timings_s` accounts for the run: its phases add up to (nearly) the wall time
of the whole command, picture and plots included."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nnrun_inprocess import run_nnrun

PHASES = {"compose", "imports", "compile", "static", "graph_picture", "load_model", "execute",
          "write", "plots"}


def test_timings_add_up_to_the_wall_time(tmp_path: Path):
    run_dir = tmp_path / "run"
    t0 = time.perf_counter()
    result = run_nnrun(["experiment=patching_single"], cwd=tmp_path, run_dir=run_dir)
    wall = time.perf_counter() - t0
    assert result.code == 0, result.explain()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    timings = manifest["timings_s"]
    assert PHASES <= set(timings), timings
    assert "startup" not in timings  # a test process's age is not nnrun's startup
    assert sum(timings.values()) >= 0.9 * wall, (timings, wall)
    assert manifest["threads"] >= 1
    assert manifest["model"]["attn_implementation"] == "sdpa"
