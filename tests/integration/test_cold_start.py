"""The command line answers at once: `--help`, tab completion and `stage=validate` (with the
model's facts cached) import neither torch, nor transformers, nor nnsight, and list experiments
without parsing them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nnrun_inprocess import run_nnrun

HEAVY = ("torch", "transformers", "nnsight", "tokenizers")
# `nnrun ARGS` in this interpreter, then which heavy modules it imported (on stderr's last line)
WRAPPER = """
import json, sys
from nnrun.cli import main
sys.argv = ["nnrun", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as done:
    code = done.code
print("HEAVY " + json.dumps(sorted(m for m in %r if m in sys.modules)), file=sys.stderr)
sys.exit(code)
""" % (HEAVY,)


def nnrun(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """Exit code, stdout, stderr and the heavy modules a fresh `nnrun ARGS` process imported."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    for name in ("NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR"):
        full.pop(name, None)
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY "), done.stderr
    return done.returncode, done.stdout, done.stderr, json.loads(last[len("HEAVY "):])


@pytest.fixture
def folder(tmp_path):
    """A user's experiments: one good, one that is not even UTF-8."""
    mine = tmp_path / "experiments"
    mine.mkdir()
    source = Path(__file__).resolve().parents[2] / "experiments" / "patching_single.yaml"
    (mine / "mine.yaml").write_text(source.read_text().replace("name: patching_single",
                                                               "name: mine"))
    (mine / "broken.yaml").write_bytes(b"\xff\xfe{{{")
    return tmp_path


def test_help_lists_experiments_without_parsing_or_heavy_imports(folder):
    code, out, err, heavy = nnrun("--help", cwd=folder)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("experiment:"))
    assert {"broken", "mine", "patching"} <= {n.strip() for n in line[11:].split(",")}
    assert heavy == []


def test_completion_lists_experiment_names(folder):
    code, out, err, heavy = nnrun("-sc", "query=bash", cwd=folder,
                                  env={"COMP_LINE": "nnrun experiment="})
    assert code == 0, err
    assert {"experiment=broken", "experiment=mine", "experiment=patching"} <= set(out.split())
    assert heavy == []


def test_validate_with_cached_model_facts_imports_no_model_code(folder):
    from nnrun.models import ModelSpec, model_info

    model_info(ModelSpec(path="builtin:demo"))  # fills $NNRUN_CACHE (shared with the child)
    code, out, err, heavy = nnrun("experiment=patching", "stage=validate",
                                  f"hydra.run.dir={folder / 'run'}", cwd=folder)
    assert code == 0, err
    assert "is valid" in out and heavy == []
    code, out, err, heavy = nnrun("experiment=broken", "stage=validate",
                                  f"hydra.run.dir={folder / 'run2'}", cwd=folder)
    assert code == 10 and "is not UTF-8" in err and "Traceback" not in err
    assert heavy == []


def test_cd_shadows_a_packaged_experiment(folder):
    shadow = folder / "cfg" / "experiment"
    shadow.mkdir(parents=True)
    text = (folder / "experiments" / "mine.yaml").read_text()
    (shadow / "patching_single.yaml").write_text(text.replace("name: mine", "name: shadowed"))
    result = run_nnrun(["-cd", str(folder / "cfg"), "experiment=patching_single",
                        "stage=validate"], cwd=folder, run_dir=folder / "run")
    assert result.code == 0 and "`shadowed` is valid" in result.stdout, result.explain()
    result = run_nnrun(["experiment=patching_single", "stage=validate"], cwd=folder,
                       run_dir=folder / "run2")
    assert result.code == 0 and "`patching_single` is valid" in result.stdout, result.explain()
