"""Broken experiment files: each one is `experiments/patching.yaml` with one mistake, run through the
real command line. Every mistake must be reported the documented way: `nnrun: <summary>` and one
located line per issue (file:line, YAML path, node id, message, [issue_code]) on stderr, the error
class's exit code, no Python traceback, and no `COMPLETED` marker in the run directory.

Mistakes that validation catches run with `stage=validate` (no weights, seconds); only those found
later (binding to the tokenizer, compiling the schedule) run the default `stage=run`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CONFIG, GRAPH, COMPILE = 10, 11, 12   # ConfigError, GraphError, CompileError (nnrun/errors.py)

# A copy of experiments/patching.yaml (kept here so that edits to the shipped example do not move
# the line numbers these tests expect). Every case below changes exactly one thing in it.
BASE = '''\
# @package _global_
# Residual-stream activation patching over every layer × position.
format: 1                                # experiment format version
name: patching
description: >-
  Patch the clean run's residual stream into the corrupted run at every (layer, position) and
  measure how much of the clean answer's logit difference comes back.
params:
  clean: "the eiffel tower is in the city of"
  corrupt: "the colosseum tower is in the city of"
  answer: " paris"
  foil: " rome"
graph:
  scopes:
    - {id: clean_run, kind: trace, input: "${params.clean}"}
    - {id: patched, kind: trace}
    - {id: point, kind: invoke, parent: patched, input: "${params.corrupt}",
       foreach: {layer: all, position: all}}
  nodes:
    - {id: clean_resid, op: read, site: layer_output, layer: all, scope: clean_run}
    - {id: patch, op: write, site: layer_output, layer: "{layer}", position: "{position}",
       mode: patch, scope: point}
    - {id: logits, op: read, site: logits, position: last, scope: point}
    - {id: effect, op: logit_diff, answer: "${params.answer}", foil: "${params.foil}"}
    - {id: save_effect, op: save}
    - {id: heatmap, op: plot_heatmap, axes: [layer, position], title: "logit difference"}
  edges:
    - {src: clean_resid, dst: patch.value}
    - {src: logits, dst: effect.logits}
    - {src: effect, dst: save_effect}
    - {src: effect, dst: heatmap}
'''


def edit(*replacements: tuple[str, str], text: str = BASE) -> str:
    """Apply (old, new) replacements; each `old` must occur exactly once (guards against typos)."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the base file"
        text = text.replace(old, new)
    return text


def line_of(text: str, marker: str) -> int:
    """1-based number of the first line of `text` containing `marker`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert hits, f"{marker!r} not in the experiment"
    return hits[0]


@dataclass
class Case:
    """One broken file and how nnrun must report it."""

    yaml: str
    exit: int
    code: str                       # the issue code, e.g. `unknown_op`
    path: str                       # YAML path, e.g. `graph.nodes[3].op`
    node: str | None = None         # node or scope id the issue names
    at: str | None = None           # text on the line the issue must point at (None: no line)
    stage: str | None = "validate"  # None: the default stage (run)
    also: tuple[str, ...] = ()      # further text stderr must contain (hints, messages)
    problems: int | None = None     # exact number of issues, where the mistake has one effect
    codes: tuple[str, ...] = field(default=())  # further issue codes expected in the same report


# --- running the command line ------------------------------------------------------------------


@pytest.fixture(scope="session")
def nnrun_cache(tmp_path_factory) -> Path:
    """One model cache for the whole session: the tiny model is built once."""
    return tmp_path_factory.mktemp("nnrun_cache")


def run_nnrun(tmp_path: Path, cache: Path, name: str, text: str, stage: str | None,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    folder = tmp_path / "experiments"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNRUN_EXPERIMENTS", "NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR")}
    env.update({"HF_HUB_OFFLINE": "1", "NNRUN_CACHE": str(cache), **(extra_env or {})})
    # Pinned to the random tiny GPT-2 whose vocabulary the cases were written for.
    args = [sys.executable, "-m", "nnrun", f"experiment={name}", "model=tiny_gpt2",
            f"hydra.run.dir={tmp_path / 'run'}"]
    if stage:
        args.append(f"stage={stage}")
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


class TooManyIssues(AssertionError):
    """The mistake was reported correctly, but so were consequences of it (lint.py's invariant
    says they must not be). Cases marked xfail(raises=TooManyIssues) still fail for anything else."""


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}"


# --- the table ---------------------------------------------------------------------------------

NODE_EFFECT = "{id: effect,"
NODE_HEATMAP = "{id: heatmap,"

CASES = [
    # -- the file does not match the format (ConfigError, load.py) --
    pytest.param(Case(
        edit(("op: logit_diff,", "op: logit_dif,")),
        CONFIG, "unknown_op", "graph.nodes[3].op", "effect", NODE_EFFECT,
        also=("unknown op `logit_dif`", "did you mean `logit_diff`?"), problems=1),
        id="unknown_op_typo"),
    pytest.param(Case(
        edit(("{id: save_effect, op: save}", "{id: save_effect}")),
        CONFIG, "missing_op", "graph.nodes[4]", "save_effect", "{id: save_effect}",
        also=("valid ops:",), problems=1),
        id="missing_op"),
    pytest.param(Case(
        edit(('title: "logit difference"', 'titel: "logit difference"')),
        CONFIG, "unknown_field", "graph.nodes[5].titel", "heatmap", NODE_HEATMAP,
        also=("unknown field `titel`", "did you mean `title`?"), problems=1),
        id="unknown_field_typo"),
    pytest.param(Case(
        edit(('answer: "${params.answer}", ', "")),
        CONFIG, "missing_field", "graph.nodes[3].answer", "effect", NODE_EFFECT,
        also=("required field `answer` is missing",), problems=1),
        id="missing_required_field"),
    pytest.param(Case(
        edit(("layer: all, scope: clean_run", 'layer: "abc", scope: clean_run')),
        CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", "{id: clean_resid,"),
        id="wrong_type_layer_string"),
    pytest.param(Case(
        edit(("layer: all, scope: clean_run", "layer: 1.5, scope: clean_run")),
        CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", "{id: clean_resid,",
        problems=1),
        id="wrong_type_layer_float"),
    pytest.param(Case(
        edit(("axes: [layer, position]", "axes: layer")),
        CONFIG, "invalid_value", "graph.nodes[5].axes", "heatmap", NODE_HEATMAP, problems=1),
        id="wrong_type_axes_not_a_list"),
    pytest.param(Case(
        edit(("format: 1 ", "format: 2 ")),
        CONFIG, "unsupported_format", "format", None, "format: 2",
        also=("this nnrun reads format 1",), problems=1),
        id="unsupported_format_version"),
    pytest.param(Case(
        edit(('answer: "${params.answer}"', 'answer: "${params.missing}"')),
        CONFIG, "unresolved_interpolation", "graph.nodes[3].answer", "effect", NODE_EFFECT,
        also=("params.missing",)),
        id="unresolvable_interpolation"),
    # -- the graph is malformed (GraphError, lint.py) --
    pytest.param(Case(
        edit(("  edges:\n", "    - {id: heatmap, op: save}\n  edges:\n")),
        GRAPH, "duplicate_id", "graph.nodes[6].id", "heatmap", "{id: heatmap, op: save}",
        also=("graph.nodes[5].id", "id `heatmap` is used 2 times")),
        id="duplicate_node_id"),
    pytest.param(Case(
        edit(("{src: logits, dst: effect.logits}", "{src: logit, dst: effect.logits}")),
        GRAPH, "dangling_edge", "graph.edges[1].src", "logit", "{src: logit,",
        also=("did you mean `logits`?",), problems=1),
        id="dangling_edge_src"),
    pytest.param(Case(
        edit(("{src: effect, dst: save_effect}", "{src: effect, dst: save_efect}")),
        GRAPH, "dangling_edge", "graph.edges[2].dst", "save_efect", "dst: save_efect",
        also=("did you mean `save_effect`?",), problems=1),
        id="dangling_edge_dst"),
    pytest.param(Case(
        edit(("dst: effect.logits}", "dst: effect.logit}")),
        GRAPH, "unknown_port", "graph.edges[1].dst", "effect", "dst: effect.logit}",
        also=("has no input port `logit`", "its ports: logits"), problems=1),
        id="unknown_port"),
    pytest.param(Case(
        edit(("    - {src: logits, dst: effect.logits}\n", "")),
        GRAPH, "missing_input", "graph.nodes[3]", "effect", NODE_EFFECT,
        also=("input port `logits` is not connected",), problems=1),
        id="missing_required_input_edge"),
    pytest.param(Case(
        edit(("    - {src: effect, dst: heatmap}\n",
              "    - {src: effect, dst: heatmap}\n    - {src: logits, dst: effect.logits}\n")),
        GRAPH, "duplicate_input", "graph.nodes[3]", "effect", NODE_EFFECT,
        also=("port `logits` has 2 edges",), problems=1),
        id="two_edges_into_one_port"),
    pytest.param(Case(
        edit(("{src: logits, dst: effect.logits}", "{src: twice, dst: effect.logits}"),
             ("  edges:\n", "    - {id: twice, op: scale, factor: 2.0}\n  edges:\n"),
             ("    - {src: effect, dst: heatmap}\n",
              "    - {src: effect, dst: heatmap}\n    - {src: effect, dst: twice}\n")),
        GRAPH, "cycle", "graph.nodes[3]", "effect", NODE_EFFECT,
        also=("effect → twice → effect",), problems=1),
        id="cycle_is_named"),
    pytest.param(Case(
        edit(("scope: clean_run}", "scope: clean_rn}")),
        GRAPH, "unknown_scope", "graph.nodes[0].scope", "clean_resid", "{id: clean_resid,",
        also=("scope `clean_rn` does not exist", "did you mean `clean_run`?"), problems=1),
        id="unknown_scope_on_node"),
    pytest.param(Case(
        edit(("parent: patched,", "parent: patchd,")),
        GRAPH, "unknown_scope", "graph.scopes[2].parent", "point", "parent: patchd",
        also=("parent scope `patchd` does not exist", "did you mean `patched`?"), problems=1),
        id="unknown_parent_scope"),
    pytest.param(Case(
        edit(("parent: patched, ", "")),
        GRAPH, "illegal_nesting", "graph.scopes[2].parent", "point", "{id: point,",
        also=("an invoke cannot be at the top level", "put it in a trace or in a generate")),
        id="invoke_at_top_level"),
    pytest.param(Case(
        edit(('{id: clean_run, kind: trace, input:', '{id: clean_run, kind: trace, parent: point, input:')),
        GRAPH, "illegal_nesting", "graph.scopes[0].parent", "clean_run", "{id: clean_run,",
        also=("a trace cannot be inside an invoke", "put it at the top level or in a session"),
        problems=1),
        id="trace_inside_invoke"),
    pytest.param(Case(
        edit(('input: "${params.clean}"}', 'input: "${params.clean}", foreach: {layer: all}}')),
        GRAPH, "illegal_foreach", "graph.scopes[0].foreach", "clean_run", "{id: clean_run,",
        also=("`foreach` is only allowed on an invoke, not a trace",), problems=1),
        id="foreach_on_trace"),
    pytest.param(Case(
        edit(("position: last, scope: point}", "position: last}")),
        GRAPH, "needs_invoke", "graph.nodes[2].scope", "logits", "{id: logits,",
        also=("`read` touches the model but runs in no scope",), problems=1),
        id="read_without_scope"),
    pytest.param(Case(
        edit(("site: layer_output, layer: all,", 'site: "transformer.h.{layer}.mlpp", layer: all,')),
        GRAPH, "unknown_module", "graph.nodes[0].site", "clean_resid", "{id: clean_resid,",
        also=("no module `transformer.h.0.mlpp`", "did you mean `transformer.h.0.mlp`"),
        problems=1),
        id="typod_module_path"),
    pytest.param(Case(
        edit(("{id: logits, op: read, site: logits,", "{id: logits, op: read, site: logit,")),
        GRAPH, "unknown_site", "graph.nodes[2].site", "logits", "{id: logits,",
        also=("did you mean `logits`?",), problems=1),
        id="typod_site_name"),
    pytest.param(Case(
        edit(("layer: all, scope: clean_run", "layer: 7, scope: clean_run")),
        GRAPH, "layer_out_of_range", "graph.nodes[0].layer", "clean_resid", "{id: clean_resid,",
        also=("layer 7 does not exist", "0..1"), problems=1),
        id="layer_out_of_range"),
    pytest.param(Case(
        edit(("layer: all, scope: clean_run", "scope: clean_run")),
        GRAPH, "missing_layer", "graph.nodes[0].layer", "clean_resid", "{id: clean_resid,",
        also=("site `layer_output` needs a `layer`",), problems=1),
        id="per_layer_site_without_layer"),
    pytest.param(Case(
        edit(('layer: "{layer}"', 'layer: "{head}"')),
        GRAPH, "unknown_loop_variable", "graph.nodes[1].layer", "patch", "{id: patch,",
        also=("`{head}` is not a loop variable", "layer, position"), problems=1),
        id="unknown_loop_variable"),
    pytest.param(Case(
        edit(("axes: [layer, position]", "axes: [layer, head]")),
        GRAPH, "axis_mismatch", "graph.nodes[5]", "heatmap", NODE_HEATMAP,
        also=("no axis `head`",), problems=1),
        id="plot_over_missing_axis"),
    # -- found when binding to the tokenizer (ConfigError, bind.py; stage=run) --
    pytest.param(Case(
        edit(('answer: "${params.answer}"', 'answer: " paris france"')),
        CONFIG, "not_one_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage=None,
        also=("' paris france' is 2 tokens, expected 1",), problems=1),
        id="two_word_answer"),
    pytest.param(Case(
        edit(('answer: " paris"', 'answer: " berlin"')),
        CONFIG, "unknown_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage=None,
        also=("not in the model's vocabulary",)),
        id="answer_not_in_vocabulary"),
    # -- found when compiling the schedule (CompileError, schedule.py; stage=run) --
    pytest.param(Case(
        edit(("  edges:\n",
              ("    - {id: late, op: read, site: layer_output, layer: 1, position: last,"
               " scope: clean_run}\n"
               "    - {id: early, op: write, site: layer_output, layer: 0, position: last,"
               " scope: clean_run}\n  edges:\n")),
             ("    - {src: effect, dst: heatmap}\n",
              "    - {src: effect, dst: heatmap}\n    - {src: late, dst: early.value}\n")),
        COMPILE, "out_of_order", "graph.nodes[7]", "early", "{id: early,", stage=None,
        also=("in invoke `clean_run`", "after node `late`"), problems=1),
        id="out_of_order_in_one_invoke"),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_experiment_is_reported(case: Case, request, tmp_path, nnrun_cache):
    name = re.sub(r"\W", "_", request.node.callspec.id)
    result = run_nnrun(tmp_path, nnrun_cache, name, case.yaml, case.stage)
    err = result.stderr
    assert "Traceback" not in err, explain(result)
    assert result.returncode == case.exit, explain(result)
    assert err.startswith("nnrun: ") or "\nnnrun: " in err, explain(result)
    assert f"[{case.code}]" in err, explain(result)
    for code in case.codes:
        assert f"[{code}]" in err, explain(result)
    # the issue's own line: `  [file:line: ]path[ (node id)]: message [code]`
    where = rf"(?:\S*/)?{re.escape(name)}\.yaml:(\d+): " if case.at else "()"
    kind = "scope" if "scopes[" in case.path else "node"
    node = rf" \({kind} {re.escape(case.node)}\)" if case.node else ""
    issue = re.search(rf"^  {where}{re.escape(case.path)}{node}: .*\[{case.code}\]$", err, re.MULTILINE)
    assert issue, f"no issue line with path {case.path!r}, node {case.node!r}, line\n" + \
        explain(result)
    if case.at:
        assert int(issue.group(1)) == line_of(case.yaml, case.at), explain(result)
    for text in case.also:
        assert text in err, explain(result)
    assert not (tmp_path / "run" / "COMPLETED").exists()
    if case.problems is not None:   # last: a wrong count alone is a TooManyIssues failure
        noun = "problem" if case.problems == 1 else "problems"
        if f"has {case.problems} {noun}:" not in err:
            raise TooManyIssues(f"expected exactly {case.problems} {noun}\n" + explain(result))


def test_table_is_large_enough():
    assert len(CASES) >= 24
    assert len({p.id for p in CASES}) == len(CASES)


# --- several mistakes at once: every issue is reported, not just the first ------------------------

MULTI = [
    pytest.param(
        edit(("op: logit_diff,", "op: logit_dif,"),
             ('title: "logit difference"', 'titel: "logit difference"'),
             ("{id: save_effect, op: save}", "{id: save_effect, op: save, scope: 3}")),
        CONFIG,
        [("unknown_op", "graph.nodes[3].op", "{id: effect,"),
         ("invalid_value", "graph.nodes[4].scope", "{id: save_effect,"),
         ("unknown_field", "graph.nodes[5].titel", "{id: heatmap,")],
        id="three_schema_mistakes"),
    pytest.param(
        edit(("scope: clean_run}", "scope: clean_rn}"),
             ('input: "${params.clean}"}', 'input: "${params.clean}", foreach: {layer: all}}'),
             ("  edges:\n", "    - {id: patched, op: save}\n  edges:\n"),  # a scope's id
             ("    - {src: effect, dst: heatmap}\n",
              "    - {src: effect, dst: heatmap}\n    - {src: effect, dst: patched}\n")),
        GRAPH,
        [("illegal_foreach", "graph.scopes[0].foreach", "{id: clean_run,"),
         ("unknown_scope", "graph.nodes[0].scope", "{id: clean_resid,"),
         ("duplicate_id", "graph.nodes[6].id", "{id: patched, op: save}")],
        id="three_graph_mistakes"),
    pytest.param(
        edit(("layer: all, scope: clean_run", "layer: 7, scope: clean_run"),
             ('layer: "{layer}"', 'layer: "{head}"'),
             ("site: logits,", "site: lm_headd,")),
        GRAPH,
        [("layer_out_of_range", "graph.nodes[0].layer", "{id: clean_resid,"),
         ("unknown_loop_variable", "graph.nodes[1].layer", "{id: patch,"),
         ("unknown_site", "graph.nodes[2].site", "{id: logits,")],
        id="three_site_mistakes"),
]


@pytest.mark.parametrize("text, exit_code, issues", MULTI)
def test_all_mistakes_reported_at_once(text, exit_code, issues, request, tmp_path, nnrun_cache):
    name = request.node.callspec.id
    result = run_nnrun(tmp_path, nnrun_cache, name, text, "validate")
    err = result.stderr
    assert "Traceback" not in err, explain(result)
    assert result.returncode == exit_code, explain(result)
    assert f"has {len(issues)} problems:" in err, explain(result)
    for code, path, at in issues:
        line = line_of(text, at)
        assert re.search(rf"{re.escape(name)}\.yaml:{line}: {re.escape(path)}\b.*\[{code}\]", err), \
            explain(result)
    assert not (tmp_path / "run" / "COMPLETED").exists()


def test_full_error_shows_traceback(tmp_path, nnrun_cache):
    text = edit(("op: logit_diff,", "op: logit_dif,"))
    quiet = run_nnrun(tmp_path, nnrun_cache, "full_error", text, "validate")
    assert "Traceback" not in quiet.stderr and quiet.returncode == CONFIG, explain(quiet)
    loud = run_nnrun(tmp_path, nnrun_cache, "full_error", text, "validate",
                     {"NNRUN_FULL_ERROR": "1"})
    assert "Traceback" in loud.stderr, explain(loud)
    assert "ConfigError" in loud.stderr and "unknown_op" in loud.stderr, explain(loud)
    assert loud.returncode != 0, explain(loud)
    assert not (tmp_path / "run" / "COMPLETED").exists()
