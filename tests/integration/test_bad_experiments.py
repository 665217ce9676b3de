"""The command-line contract for mistakes, through a real `python -m nnrun` process: one case per
exit code of README's table that a mistake can have (2, 10, 11, 12, 13), and NNRUN_FULL_ERROR.
Each prints `nnrun: <summary>` and a located issue line on stderr, no Python traceback, and
leaves no `COMPLETED` marker.

The corpus of broken experiments (every category, ~200 cases) runs in-process through the same
`nnrun.cli.main` in test_bad_input_corpus.py; these few cases check what only a separate process
can: the exit status the shell sees and what reaches the real stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_bad_input_corpus import BASE, add_nodes, edit, line_of

NO_SUCH_MODEL = "model.path=nnrun-test/no-such-model"  # never in a cache: offline, exit 13

OUT_OF_ORDER = add_nodes(
    BASE, "    - {id: late, op: read, site: layer_output, layer: 1, position: last, scope: clean_run}\n"
          "    - {id: early, op: write, site: layer_output, layer: 0, position: last, scope: clean_run}\n",
    "    - {src: late, dst: early.value}\n")


def run_nnrun(tmp_path: Path, cache: str, name: str, text: str, args: list[str],
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    folder = tmp_path / "experiments"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNRUN_EXPERIMENTS", "NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR")}
    env.update({"HF_HUB_OFFLINE": "1", "NNRUN_CACHE": cache, **(extra_env or {})})
    return subprocess.run(
        [sys.executable, "-m", "nnrun", f"experiment={name}", "model=tiny_gpt2",
         f"hydra.run.dir={tmp_path / 'run'}", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}"


@pytest.mark.parametrize("text, args, exit_code, code, path, at", [
    pytest.param(BASE, ["seed=abc="], 2, "bad_override", "command line", None,
                 id="usage_2"),
    pytest.param(edit(("op: logit_diff,", "op: logit_dif,")), ["stage=validate"], 10,
                 "unknown_op", "graph.nodes[3].op (node effect)", "{id: effect,", id="config_10"),
    pytest.param(edit(("{src: logits, dst: effect.logits}", "{src: logit, dst: effect.logits}")),
                 ["stage=validate"], 11, "dangling_edge", "graph.edges[1].src (node logit)",
                 "{src: logit,", id="graph_11"),
    pytest.param(OUT_OF_ORDER, ["stage=plan"], 12, "out_of_order", "graph.nodes[7] (node early)",
                 "{id: early,", id="compile_12"),
    pytest.param(BASE, ["stage=validate", NO_SUCH_MODEL], 13, "model_unavailable", "model.path",
                 None, id="model_13"),
])
def test_exit_code_and_report(text, args, exit_code, code, path, at, request, tmp_path,
                              nnrun_cache):
    name = request.node.callspec.id
    result = run_nnrun(tmp_path, nnrun_cache, name, text, args)
    err = result.stderr
    assert result.returncode == exit_code, explain(result)
    assert "Traceback" not in err + result.stdout, explain(result)
    assert err.startswith("nnrun: "), explain(result)
    where = rf"\S*/{re.escape(name)}\.yaml:(\d+): " if at else ""
    issue = re.search(rf"^  {where}{re.escape(path)}: .*\[{code}\]$", err, re.MULTILINE)
    assert issue, explain(result)
    if at:
        assert int(issue.group(1)) == line_of(text, at), explain(result)
    assert not (tmp_path / "run" / "COMPLETED").exists()


def test_full_error_shows_traceback(tmp_path, nnrun_cache):
    text = edit(("op: logit_diff,", "op: logit_dif,"))
    quiet = run_nnrun(tmp_path, nnrun_cache, "full_error", text, ["stage=validate"])
    assert "Traceback" not in quiet.stderr and quiet.returncode == 10, explain(quiet)
    loud = run_nnrun(tmp_path, nnrun_cache, "full_error", text, ["stage=validate"],
                     {"NNRUN_FULL_ERROR": "1"})
    assert "Traceback" in loud.stderr, explain(loud)
    assert "ConfigError" in loud.stderr and "unknown_op" in loud.stderr, explain(loud)
    assert loud.returncode != 0, explain(loud)
    assert not (tmp_path / "run" / "COMPLETED").exists()
