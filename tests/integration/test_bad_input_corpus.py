"""The bad-input corpus: broken experiments, each run through the real command line in-process
(`nnrun_inprocess.run_nnrun`: Hydra, the job, error formatting and exit code exactly as
`python -m nnrun`, without a new interpreter per case).

Every case is a valid experiment (`BASE` or `DATA`, checked by `test_the_bases_are_valid`) with
one mistake, or a valid experiment with one bad command-line argument. Each must be reported the
documented way: `nnrun: <summary>` and one located line per issue (`file:line: path (node id):
message [code]`) on stderr, the exit code of README's table, no Python traceback, and no
`COMPLETED` marker in the run directory.

Mistakes that validation catches run `stage=validate` (no tokenizer); those found when binding
the examples to the tokenizer or compiling the schedule run `stage=plan` (no weights); only
runtime failures run the model (`stage=run`, the tiny GPT-2, loaded once per test session).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nnrun_inprocess import Result, run_nnrun

USAGE, CONFIG, GRAPH, COMPILE, MODEL, RUNTIME, OUTPUT = 2, 10, 11, 12, 13, 14, 15

# Activation patching on one prompt pair (a copy, so that edits to the shipped examples do not
# move the line numbers these cases expect). Prompts are 8 tokens of the tiny models' vocabulary.
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

# Patching over a dataset (pairs.jsonl beside the experiment): positions chosen by meaning.
DATA = '''\
# @package _global_
format: 1
name: patching_data
data:
  file: pairs.jsonl
graph:
  scopes:
    - {id: clean_run, kind: trace, input: {column: clean}}
    - {id: patched, kind: trace}
    - {id: point, kind: invoke, parent: patched, input: {column: corrupt},
       foreach: {layer: all}}
  nodes:
    - {id: clean_resid, op: read, site: layer_output, layer: all, position: last,
       scope: clean_run}
    - {id: patch, op: write, site: layer_output, layer: "{layer}", position: last,
       mode: patch, scope: point}
    - {id: logits, op: read, site: logits, position: last, scope: point}
    - {id: effect, op: logit_diff, answer: {column: answer}, foil: {column: foil}}
    - {id: save_effect, op: save}
  edges:
    - {src: clean_resid, dst: patch.value}
    - {src: logits, dst: effect.logits}
    - {src: effect, dst: save_effect}
'''

ROWS = [
    {"clean": "the eiffel tower is in the city of", "corrupt": "the colosseum is in the city of",
     "answer": " paris", "foil": " rome", "pos": 2},
    {"clean": "the kremlin is in the city of", "corrupt": "the louvre is in the city of",
     "answer": " moscow", "foil": " paris", "pos": 1},
    {"clean": "mary went to the store", "corrupt": "john went to the store",
     "answer": " mary", "foil": " john", "pos": 0},
]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


PAIRS = {"pairs.jsonl": jsonl(ROWS)}


def edit(*replacements: tuple[str, str], text: str = BASE) -> str:
    """Apply (old, new) replacements; each `old` must occur exactly once (guards against typos)."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the base file"
        text = text.replace(old, new)
    return text


def data_edit(*replacements: tuple[str, str]) -> str:
    return edit(*replacements, text=DATA)


def add_nodes(text: str, nodes: str, edges: str = "") -> str:
    """Append node lines (and edge lines) to an experiment."""
    text = edit(("  edges:\n", nodes + "  edges:\n"), text=text)
    return text + edges


def line_of(text: str, marker: str) -> int:
    """1-based number of the first line of `text` containing `marker`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert hits, f"{marker!r} not in the experiment"
    return hits[0]


@dataclass
class Case:
    """One broken experiment (or command line) and how nnrun must report it."""

    text: str | bytes               # the experiment file
    exit: int
    code: str                       # the issue code, e.g. `unknown_op`
    path: str                       # YAML path (or `command line`, `model`, ...)
    node: str | None = None         # node or scope id the issue names
    at: str | None = None           # text on the line the issue must point at (None: no line)
    stage: str | None = "validate"  # None: the default stage (run)
    also: tuple[str, ...] = ()      # further text stderr must contain (hints, messages)
    problems: int | None = None     # exact number of issues, where the mistake has one effect
    codes: tuple[str, ...] = ()     # further issue codes expected in the same report
    args: tuple[str, ...] = ()      # further command-line arguments
    files: dict[str, str | bytes] = field(default_factory=dict)  # beside the experiment
    suffix: str = ".yaml"
    model: str = "tiny_gpt2"
    experiment: str | None = "{name}"  # the `experiment=` choice ({name}: this case's file)
    env: dict[str, str] = field(default_factory=dict)


def case(id: str, *args, marks=(), **kwargs):
    return pytest.param(Case(*args, **kwargs), id=id, marks=marks)


NODE_EFFECT, NODE_HEATMAP, NODE_PATCH = "{id: effect,", "{id: heatmap,", "{id: patch,"
NODE_RESID, NODE_LOGITS = "{id: clean_resid,", "{id: logits,"
SCOPE_CLEAN, SCOPE_POINT = "{id: clean_run,", "{id: point,"

# --- YAML syntax: the file cannot be parsed (ConfigError) ---------------------------------------

YAML_SYNTAX = [
    case("yaml_tab_indent", edit(("  nodes:\n    - {id: clean_resid", "  nodes:\n\t- {id: clean_resid")),
         CONFIG, "invalid_yaml", "", at="\t- {id: clean_resid", also=("tab",), problems=1),
    case("yaml_duplicate_top_key", edit(("name: patching\n", "name: patching\nname: other\n")),
         CONFIG, "duplicate_key", "name", at="name: other",
         also=("`name` is given twice", "line 4"), problems=1),
    case("yaml_duplicate_key_in_node", edit(("{id: save_effect, op: save}",
                                             "{id: save_effect, op: save, op: mean}")),
         CONFIG, "duplicate_key", "graph.nodes[4].op", at="{id: save_effect,", problems=1),
    case("yaml_bad_indent", edit(("  nodes:\n", "   nodes:\n")),
         CONFIG, "invalid_yaml", "", at="   nodes:", problems=1),
    case("yaml_unclosed_brace", edit(("{id: save_effect, op: save}\n", "{id: save_effect, op: save\n")),
         CONFIG, "invalid_yaml", "", at=NODE_HEATMAP,
         also=("flow mapping, line 25",), problems=1),
    case("yaml_unclosed_quote", edit(('clean: "the eiffel tower is in the city of"',
                                      'clean: "the eiffel tower is in the city of')),
         CONFIG, "invalid_yaml", "", at="  corrupt:", problems=1),
    case("yaml_latin1_byte", BASE.encode().replace(b"(layer, position) and", b"(layer, position) \xe9t"),
         CONFIG, "invalid_encoding", "", at="(layer, position)",
         also=("UTF-8",), problems=1),
    case("yaml_python_object_tag", edit(('  foil: " rome"',
                                         '  foil: !!python/object/apply:os.system ["true"]')),
         CONFIG, "forbidden_tag", "params.foil", at="  foil:", problems=1),
    case("yaml_custom_tag", edit(('  foil: " rome"', '  foil: !secret " rome"')),
         CONFIG, "forbidden_tag", "params.foil", at="  foil:", problems=1),
    case("yaml_two_documents", BASE + "---\nformat: 1\n",
         CONFIG, "invalid_yaml", "", at="---", also=("single document",), problems=1),
    case("yaml_not_a_mapping", "- format: 1\n- name: x\n",
         CONFIG, "not_a_mapping", "", at="- format: 1", problems=1),
    case("yaml_scalar_file", "patching\n", CONFIG, "not_a_mapping", "", at="patching",
         problems=1),
    case("yaml_empty_file", "", CONFIG, "empty_file", "", problems=1),
    case("yaml_only_comments", "# @package _global_\n# nothing yet\n", CONFIG, "empty_file", "",
         problems=1),
    case("json_syntax_error",
         '{"format": 1, "name": "j",\n "graph": {"nodes": [\n   {"id": "x", "op": "save"}\n }\n}\n',
         CONFIG, "invalid_yaml", "", at=" }", suffix=".json", problems=1),
    case("json_unknown_op",
         '{"format": 1, "name": "j",\n "graph": {\n  "nodes": [\n   {"id": "x", "op": "sav"}\n  ]\n }\n}\n',
         CONFIG, "unknown_op", "graph.nodes[0].op", "x", at='"op": "sav"', suffix=".json",
         also=("did you mean `save`?",), problems=1),
    case("yaml_alias_bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                   for p, c in zip("abcde", "bcdef")),
         CONFIG, "yaml_alias_limit", "", at="e: &e", problems=1),
]

# --- schema: the file parses but does not match the format (ConfigError) -----------------------

SCHEMA = [
    case("unknown_op_typo", edit(("op: logit_diff,", "op: logit_dif,")),
         CONFIG, "unknown_op", "graph.nodes[3].op", "effect", NODE_EFFECT,
         also=("unknown op `logit_dif`", "did you mean `logit_diff`?"), problems=1),
    case("missing_op", edit(("{id: save_effect, op: save}", "{id: save_effect}")),
         CONFIG, "missing_op", "graph.nodes[4]", "save_effect", "{id: save_effect}",
         also=("valid ops:",), problems=1),
    case("unknown_field_typo", edit(('title: "logit difference"', 'titel: "logit difference"')),
         CONFIG, "unknown_field", "graph.nodes[5].titel", "heatmap", NODE_HEATMAP,
         also=("unknown field `titel`", "did you mean `title`?"), problems=1),
    case("unknown_top_level_key", edit(("description: >-", "descripton: >-")),
         CONFIG, "unknown_field", "descripton", None, "descripton:",
         also=("did you mean `description`?",), problems=1),
    case("unknown_scope_field", edit(('{id: clean_run, kind: trace, input:',
                                      '{id: clean_run, kind: trace, inptu:')),
         CONFIG, "unknown_field", "graph.scopes[0].inptu", "clean_run", SCOPE_CLEAN,
         also=("did you mean `input`?",), problems=1),
    case("unknown_edge_field", edit(("{src: effect, dst: save_effect}",
                                     "{src: effect, dst: save_effect, port: in}")),
         CONFIG, "unknown_field", "graph.edges[2].port", None, "port: in", problems=1),
    case("missing_required_field", edit(('answer: "${params.answer}", ', "")),
         CONFIG, "missing_field", "graph.nodes[3].answer", "effect", NODE_EFFECT,
         also=("required field `answer` is missing",), problems=1),
    case("missing_node_id", edit(("{id: save_effect, op: save}", "{op: save}")),
         CONFIG, "missing_field", "graph.nodes[4].id", None, "{op: save}", problems=1),
    case("missing_edge_dst", edit(("{src: effect, dst: save_effect}", "{src: effect}")),
         CONFIG, "missing_field", "graph.edges[2].dst", None, "{src: effect}", problems=1),
    case("missing_name", edit(("name: patching\n", "")),
         CONFIG, "missing_field", "name", problems=1),
    case("missing_graph", BASE.split("graph:\n")[0],
         CONFIG, "missing_field", "graph", also=("required field `graph` is missing",), problems=1),
    case("node_is_a_string", edit(("{id: save_effect, op: save}", "save_effect")),
         CONFIG, "invalid_value", "graph.nodes[4]", None, "- save_effect", problems=1),
    case("nodes_not_a_list", edit(("  nodes:\n    - {id: clean_resid",
                                   "  nodes: {}\n  more_nodes:\n    - {id: clean_resid")),
         CONFIG, "invalid_value", "graph.nodes", None, "  nodes: {}", codes=("unknown_field",)),
    case("bad_node_id", edit(("{id: save_effect, op: save}", "{id: save-effect, op: save}"),
                             ("dst: save_effect}", "dst: save-effect}")),
         CONFIG, "invalid_value", "graph.nodes[4].id", "save-effect", "{id: save-effect,",
         problems=1),
    case("wrong_type_layer_string", edit(("layer: all, scope: clean_run", 'layer: "abc", scope: clean_run')),
         CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", NODE_RESID),
    case("wrong_type_layer_float", edit(("layer: all, scope: clean_run", "layer: 1.5, scope: clean_run")),
         CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", NODE_RESID, problems=1),
    case("wrong_type_layer_bool", edit(("layer: all, scope: clean_run", "layer: true, scope: clean_run")),
         CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", NODE_RESID,
         also=("True",), problems=1),
    case("wrong_type_position_bool", edit(("site: logits, position: last,", "site: logits, position: false,")),
         CONFIG, "invalid_value", "graph.nodes[2].position", "logits", NODE_LOGITS, problems=1),
    case("layer_infinite", edit(("layer: all, scope: clean_run", "layer: .inf, scope: clean_run")),
         CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", NODE_RESID, problems=1),
    case("layer_nan", edit(("layer: all, scope: clean_run", "layer: .nan, scope: clean_run")),
         CONFIG, "invalid_value", "graph.nodes[0].layer", "clean_resid", NODE_RESID, problems=1),
    case("wrong_type_axes_not_a_list", edit(("axes: [layer, position]", "axes: layer")),
         CONFIG, "invalid_value", "graph.nodes[5].axes", "heatmap", NODE_HEATMAP, problems=1),
    case("wrong_type_title", edit(('title: "logit difference"', "title: [a, b]")),
         CONFIG, "invalid_value", "graph.nodes[5].title", "heatmap", NODE_HEATMAP, problems=1),
    case("wrong_type_description", edit(("description: >-", "description: [a, b]\nnotes: >-")),
         CONFIG, "invalid_value", "description", None, "description: [a, b]",
         codes=("unknown_field",)),
    case("wrong_type_name", edit(("name: patching", "name: 123")),
         CONFIG, "invalid_value", "name", None, "name: 123", problems=1),
    case("unsafe_name", edit(("name: patching", "name: ../../etc")),
         CONFIG, "invalid_name", "name", None, "name: ../../etc", problems=1),
    case("unsupported_format_version", edit(("format: 1 ", "format: 2 ")),
         CONFIG, "unsupported_format", "format", None, "format: 2",
         also=("this nnrun reads format 1",), problems=1),
    case("format_true", edit(("format: 1 ", "format: true ")),
         CONFIG, "unsupported_format", "format", None, "format: true", problems=1),
    case("format_string", edit(("format: 1 ", "format: one ")),
         CONFIG, "unsupported_format", "format", None, "format: one", problems=1),
    case("unknown_scope_kind", edit(("{id: patched, kind: trace}", "{id: patched, kind: traec}")),
         CONFIG, "invalid_value", "graph.scopes[1].kind", "patched", "{id: patched,",
         also=("'trace'",), problems=1),
    case("batch_size_zero", edit(("graph:\n", "batch_size: 0\ngraph:\n")),
         CONFIG, "invalid_value", "batch_size", None, "batch_size: 0", problems=1),
    case("batch_size_bool", edit(("graph:\n", "batch_size: true\ngraph:\n")),
         CONFIG, "invalid_value", "batch_size", None, "batch_size: true", problems=1),
    case("topk_k_zero", add_nodes(BASE, "    - {id: top, op: topk, k: 0}\n",
                                  "    - {src: logits, dst: top}\n"),
         CONFIG, "invalid_value", "graph.nodes[6].k", "top", "{id: top,", problems=1),
    case("foreach_unknown_variable", edit(("foreach: {layer: all, position: all}",
                                           "foreach: {layer: all, position: all, neuron: all}")),
         CONFIG, "invalid_value", "graph.scopes[2].foreach.neuron", "point", "foreach:",
         also=("valid: layer, position, head",), problems=1),
    case("foreach_variable_typo", edit(("foreach: {layer: all, position: all}",
                                        "foreach: {layr: all, position: all}")),
         CONFIG, "invalid_value", "graph.scopes[2].foreach.layr", "point", "foreach:",
         also=("(found 'layr')", "hint: did you mean `layer`?"), problems=1),
    case("scale_factor_infinite", add_nodes(BASE, "    - {id: twice, op: scale, factor: .inf}\n",
                                            "    - {src: effect, dst: twice}\n"),
         GRAPH, "invalid_value", "graph.nodes[6].factor", "twice", "{id: twice,",
         also=("finite",), problems=1),
    case("write_constant_nan", edit(("mode: patch, scope: point}", "mode: replace, constant: .nan, scope: point}"),
                                    ("    - {src: clean_resid, dst: patch.value}\n", "")),
         GRAPH, "invalid_value", "graph.nodes[1].constant", "patch", "mode: replace, constant",
         also=("finite",), problems=1),
    case("match_empty_text", edit(("site: logits, position: last,", 'site: logits, position: {match: ""},')),
         CONFIG, "invalid_value", "graph.nodes[2].position.match", "logits", NODE_LOGITS,
         also=("at least 1 character",), problems=1),
    case("match_bad_token_choice", edit(("site: logits, position: last,",
                                         'site: logits, position: {match: " city", token: middle},')),
         CONFIG, "invalid_value", "graph.nodes[2].position.token", "logits", NODE_LOGITS,
         also=("'first' or 'last'",), problems=1),
    case("column_bad_name", data_edit(("foil: {column: foil}", 'foil: {column: "my-foil"}')),
         CONFIG, "invalid_value", "graph.nodes[3].foil.column", "effect", NODE_EFFECT, files=PAIRS,
         also=("^[A-Za-z_]",),
         problems=1),
    case("unresolvable_interpolation", edit(('answer: "${params.answer}"', 'answer: "${params.missing}"')),
         CONFIG, "unresolved_interpolation", "graph.nodes[3].answer", "effect", NODE_EFFECT,
         also=("params.missing",)),
    case("forbidden_env_interpolation", edit(('  foil: " rome"', '  foil: "${oc.env:HOME}"')),
         CONFIG, "forbidden_env", "params.foil", None, "  foil:", problems=1),
    case("forbidden_target", edit(("{id: save_effect, op: save}",
                                   "{id: save_effect, op: save, _target_: os.system}")),
         CONFIG, "forbidden_target", "graph.nodes[4]._target_", None, "{id: save_effect,",
         problems=1),
    case("forbidden_hydra_key", edit(("graph:\n", "hydra:\n  run: {dir: /tmp/x}\ngraph:\n")),
         CONFIG, "forbidden_hydra", "hydra", None, "hydra:", problems=1),
    case("forbidden_model_key", edit(("graph:\n", "model:\n  trust_remote_code: true\ngraph:\n")),
         CONFIG, "forbidden_model_override", "model", None, "model:", problems=1),
    case("forbidden_default", edit(("format: 1 ", "defaults:\n  - override /hydra/launcher: basic\nformat: 1 ")),
         CONFIG, "forbidden_default", "defaults", None, "override /hydra/launcher", problems=1),
]

# --- graph structure, scopes and sites (GraphError) ---------------------------------------------

GRAPH_CASES = [
    case("duplicate_node_id", edit(("  edges:\n", "    - {id: heatmap, op: save}\n  edges:\n")),
         GRAPH, "duplicate_id", "graph.nodes[6].id", "heatmap", "{id: heatmap, op: save}",
         also=("graph.nodes[5].id", "id `heatmap` is used 2 times")),
    case("node_id_is_a_scope_id", edit(("{id: save_effect, op: save}", "{id: point, op: save}"),
                                       ("dst: save_effect}", "dst: point}")),
         GRAPH, "duplicate_id", "graph.nodes[4].id", "point", "{id: point, op: save}",
         problems=1),
    case("duplicate_scope_id", edit(("    - {id: patched, kind: trace}\n",
                                     "    - {id: patched, kind: trace}\n"
                                     "    - {id: patched, kind: trace, input: the}\n")),
         GRAPH, "duplicate_id", "graph.scopes[2].id", "patched", "input: the}"),
    case("dangling_edge_src", edit(("{src: logits, dst: effect.logits}", "{src: logit, dst: effect.logits}")),
         GRAPH, "dangling_edge", "graph.edges[1].src", "logit", "{src: logit,",
         also=("did you mean `logits`?",), problems=1),
    case("dangling_edge_dst", edit(("{src: effect, dst: save_effect}", "{src: effect, dst: save_efect}")),
         GRAPH, "dangling_edge", "graph.edges[2].dst", "save_efect", "dst: save_efect",
         also=("did you mean `save_effect`?",), problems=1),
    case("unknown_port", edit(("dst: effect.logits}", "dst: effect.logit}")),
         GRAPH, "unknown_port", "graph.edges[1].dst", "effect", "dst: effect.logit}",
         also=("has no input port `logit`", "its ports: logits"), problems=1),
    case("edge_from_a_write", add_nodes(BASE, "    - {id: save_patch, op: save}\n",
                                        "    - {src: patch, dst: save_patch}\n"),
         GRAPH, "invalid_edge", "graph.edges[4].src", "patch", "{src: patch,",
         also=("has no output",), problems=1),
    case("missing_required_input_edge", edit(("    - {src: logits, dst: effect.logits}\n", "")),
         GRAPH, "missing_input", "graph.nodes[3]", "effect", NODE_EFFECT,
         also=("input port `logits` is not connected",), problems=1),
    case("two_edges_into_one_port", edit(("    - {src: effect, dst: heatmap}\n",
                                          "    - {src: effect, dst: heatmap}\n    - {src: logits, dst: effect.logits}\n")),
         GRAPH, "duplicate_input", "graph.nodes[3]", "effect", NODE_EFFECT,
         also=("port `logits` has 2 edges",), problems=1),
    case("cycle_is_named", edit(("{src: logits, dst: effect.logits}", "{src: twice, dst: effect.logits}"),
                                ("  edges:\n", "    - {id: twice, op: scale, factor: 2.0}\n  edges:\n"),
                                ("    - {src: effect, dst: heatmap}\n",
                                 "    - {src: effect, dst: heatmap}\n    - {src: effect, dst: twice}\n")),
         GRAPH, "cycle", "graph.nodes[3]", "effect", NODE_EFFECT,
         also=("effect → twice → effect",), problems=1),
    case("self_loop", add_nodes(BASE, "    - {id: twice, op: scale, factor: 2.0}\n",
                                "    - {src: twice, dst: twice}\n"),
         GRAPH, "cycle", "graph.nodes[6]", "twice", "{id: twice,", also=("twice → twice",),
         problems=1),
    case("unknown_scope_on_node", edit(("scope: clean_run}", "scope: clean_rn}")),
         GRAPH, "unknown_scope", "graph.nodes[0].scope", "clean_resid", NODE_RESID,
         also=("scope `clean_rn` does not exist", "did you mean `clean_run`?"), problems=1),
    case("node_scope_is_a_node", edit(("scope: clean_run}", "scope: effect}")),
         GRAPH, "unknown_scope", "graph.nodes[0].scope", "clean_resid", NODE_RESID, problems=1),
    case("unknown_parent_scope", edit(("parent: patched,", "parent: patchd,")),
         GRAPH, "unknown_scope", "graph.scopes[2].parent", "point", "parent: patchd",
         also=("parent scope `patchd` does not exist", "did you mean `patched`?"), problems=1),
    case("invoke_at_top_level", edit(("parent: patched, ", "")),
         GRAPH, "illegal_nesting", "graph.scopes[2].parent", "point", SCOPE_POINT,
         also=("an invoke cannot be at the top level", "put it in a trace or in a generate")),
    case("invoke_inside_itself", edit(("parent: patched,", "parent: point,")),
         GRAPH, "illegal_nesting", "graph.scopes[2].parent", "point", SCOPE_POINT,
         also=("an invoke cannot be inside an invoke",)),
    case("trace_inside_invoke", edit(('{id: clean_run, kind: trace, input:',
                                      '{id: clean_run, kind: trace, parent: point, input:')),
         GRAPH, "illegal_nesting", "graph.scopes[0].parent", "clean_run", SCOPE_CLEAN,
         also=("a trace cannot be inside an invoke", "put it at the top level or in a session"),
         problems=1),
    case("session_inside_trace", edit(("    - {id: patched, kind: trace}\n",
                                       "    - {id: patched, kind: trace}\n"
                                       "    - {id: sess, kind: session, parent: clean_run}\n")),
         GRAPH, "illegal_nesting", "graph.scopes[2].parent", "sess", "{id: sess,", problems=1),
    case("step_at_top_level", edit(("    - {id: patched, kind: trace}\n",
                                    "    - {id: patched, kind: trace}\n"
                                    "    - {id: steps, kind: step, steps: 2}\n")),
         GRAPH, "illegal_nesting", "graph.scopes[2].parent", "steps", "{id: steps,",
         problems=1),
    case("foreach_on_trace", edit(('input: "${params.clean}"}', 'input: "${params.clean}", foreach: {layer: all}}')),
         GRAPH, "illegal_foreach", "graph.scopes[0].foreach", "clean_run", SCOPE_CLEAN,
         also=("`foreach` is only allowed on an invoke, not a trace",), problems=1),
    case("generate_without_max_new_tokens", edit(("{id: clean_run, kind: trace,", "{id: clean_run, kind: generate,")),
         GRAPH, "missing_field", "graph.scopes[0]", "clean_run", SCOPE_CLEAN,
         also=("needs `max_new_tokens`",), problems=1),
    case("max_new_tokens_on_trace", edit(("{id: patched, kind: trace}", "{id: patched, kind: trace, max_new_tokens: 3}")),
         GRAPH, "illegal_field", "graph.scopes[1].max_new_tokens", "patched", "{id: patched,",
         problems=1),
    case("invoke_without_input", edit(('parent: patched, input: "${params.corrupt}",', "parent: patched,")),
         GRAPH, "missing_input", "graph.scopes[2]", "point", SCOPE_POINT,
         also=("has no `input`",), problems=1),
    case("trace_without_input_or_invoke", edit(("    - {id: patched, kind: trace}\n",
                                                "    - {id: patched, kind: trace}\n"
                                                "    - {id: lonely, kind: trace}\n")),
         GRAPH, "missing_input", "graph.scopes[2]", "lonely", "{id: lonely,", problems=1),
    case("read_without_scope", edit(("position: last, scope: point}", "position: last}")),
         GRAPH, "needs_invoke", "graph.nodes[2].scope", "logits", NODE_LOGITS,
         also=("`read` touches the model but runs in no scope",), problems=1),
    case("read_in_trace_without_input", edit(("position: last, scope: point}", "position: last, scope: patched}")),
         GRAPH, "needs_invoke", "graph.nodes[2].scope", "logits", NODE_LOGITS,
         also=("runs in scope `patched`",), problems=1),
    case("write_without_scope", edit(("mode: patch, scope: point}", "mode: patch}")),
         GRAPH, "needs_invoke", "graph.nodes[1].scope", "patch", NODE_PATCH, problems=1),
    case("logit_lens_without_scope", add_nodes(BASE, "    - {id: lens, op: logit_lens}\n"),
         GRAPH, "needs_invoke", "graph.nodes[6].scope", "lens", "{id: lens,", problems=1),
    case("save_with_scope", edit(("{id: save_effect, op: save}", "{id: save_effect, op: save, scope: point}")),
         GRAPH, "illegal_scope", "graph.nodes[4].scope", "save_effect", "{id: save_effect,",
         problems=1),
    case("typod_module_path", edit(("site: layer_output, layer: all,", 'site: "transformer.h.{layer}.mlpp", layer: all,')),
         GRAPH, "unknown_module", "graph.nodes[0].site", "clean_resid", NODE_RESID,
         also=("no module `transformer.h.0.mlpp`", "did you mean `transformer.h.0.mlp`"),
         problems=1),
    case("typod_site_name", edit(("{id: logits, op: read, site: logits,", "{id: logits, op: read, site: logit,")),
         GRAPH, "unknown_site", "graph.nodes[2].site", "logits", NODE_LOGITS,
         also=("did you mean `logits`?",), problems=1),
    case("module_path_with_brackets", edit(("site: layer_output, layer: all,", 'site: "transformer.h[0].mlp",')),
         GRAPH, "unknown_site", "graph.nodes[0].site", "clean_resid", NODE_RESID, problems=1),
    case("module_path_layer_without_layer", edit(("site: layer_output, layer: all,", 'site: "transformer.h.{layer}.mlp",')),
         GRAPH, "missing_layer", "graph.nodes[0].layer", "clean_resid", NODE_RESID, problems=1),
    case("layer_on_a_site_without_layers", edit(("site: logits, position: last,", "site: logits, layer: 0, position: last,")),
         GRAPH, "unexpected_layer", "graph.nodes[2].layer", "logits", NODE_LOGITS, problems=1),
    case("at_input_on_a_named_site", edit(("site: logits, position: last,", "site: logits, at: input, position: last,")),
         GRAPH, "unexpected_at", "graph.nodes[2].at", "logits", NODE_LOGITS,
         also=("module path",), problems=1),
    case("per_layer_site_without_layer", edit(("layer: all, scope: clean_run", "scope: clean_run")),
         GRAPH, "missing_layer", "graph.nodes[0].layer", "clean_resid", NODE_RESID,
         also=("site `layer_output` needs a `layer`",), problems=1),
    case("unknown_loop_variable", edit(('layer: "{layer}"', 'layer: "{head}"')),
         GRAPH, "unknown_loop_variable", "graph.nodes[1].layer", "patch", NODE_PATCH,
         also=("`{head}` is not a loop variable", "foreach variables in scope: layer, position"),
         problems=1),
    case("loop_variable_typo", edit(('layer: "{layer}"', 'layer: "{layr}"')),
         GRAPH, "unknown_loop_variable", "graph.nodes[1].layer", "patch", NODE_PATCH,
         also=("`{layr}` is not a loop variable", "hint: did you mean `layer`?"), problems=1),
    case("loop_variable_outside_a_loop", edit(("layer: all, scope: clean_run", 'layer: "{layer}", scope: clean_run')),
         GRAPH, "unknown_loop_variable", "graph.nodes[0].layer", "clean_resid", NODE_RESID,
         problems=1),
    case("plot_over_missing_axis", edit(("axes: [layer, position]", "axes: [layer, head]")),
         GRAPH, "axis_mismatch", "graph.nodes[5]", "heatmap", NODE_HEATMAP,
         also=("no axis `head`",), problems=1),
    case("plot_same_axis_twice", edit(("axes: [layer, position]", "axes: [layer, layer]")),
         GRAPH, "axis_mismatch", "graph.nodes[5]", "heatmap", NODE_HEATMAP, problems=1),
    case("plot_line_x_equals_series", add_nodes(BASE, "    - {id: lines, op: plot_line, x: layer, series: layer}\n",
                                                "    - {src: effect, dst: lines}\n"),
         GRAPH, "axis_mismatch", "graph.nodes[6]", "lines", "{id: lines,", problems=1),
    case("mean_over_missing_axis", add_nodes(BASE, "    - {id: avg, op: mean, axis: head}\n",
                                             "    - {src: effect, dst: avg}\n"),
         GRAPH, "axis_mismatch", "graph.nodes[6]", "avg", "{id: avg,", also=("no axis `head`",),
         problems=1),
    case("subtract_incompatible_axes", add_nodes(BASE, "    - {id: diff, op: subtract}\n",
                                                 "    - {src: effect, dst: diff.a}\n"
                                                 "    - {src: clean_resid, dst: diff.b}\n"),
         GRAPH, "axis_mismatch", "graph.nodes[6]", "diff", "{id: diff,", problems=1),
    case("metric_on_hidden_states", edit(("{src: logits, dst: effect.logits}",
                                          "{src: clean_resid, dst: effect.logits}")),
         GRAPH, "axis_mismatch", "graph.nodes[3]", "effect", NODE_EFFECT,
         also=("`vocab` axis",), problems=1),
    case("select_position_without_position_axis",
         add_nodes(BASE, "    - {id: last_resid, op: read, site: layer_output, layer: 0,"
                         " position: last, scope: clean_run}\n"
                         "    - {id: pick, op: select_position, position: 0}\n"
                         "    - {id: save_pick, op: save}\n",
                   "    - {src: last_resid, dst: pick}\n    - {src: pick, dst: save_pick}\n"),
         GRAPH, "axis_mismatch", "graph.nodes[7]", "pick", "{id: pick,",
         also=("no axis `position`",), problems=1),
]

# --- the graph against the model: layers, modules, shapes of written values -------------------

MODEL_MISMATCH = [
    case("layer_out_of_range", edit(("layer: all, scope: clean_run", "layer: 7, scope: clean_run")),
         GRAPH, "layer_out_of_range", "graph.nodes[0].layer", "clean_resid", NODE_RESID,
         also=("layer 7 does not exist", "0..1"), problems=1),
    case("negative_layer_out_of_range", edit(("layer: all, scope: clean_run", "layer: -3, scope: clean_run")),
         GRAPH, "layer_out_of_range", "graph.nodes[0].layer", "clean_resid", NODE_RESID,
         also=("layer -3 does not exist",), problems=1),
    case("layer_list_out_of_range", edit(("layer: all, scope: clean_run", "layer: [0, 2], scope: clean_run")),
         GRAPH, "layer_out_of_range", "graph.nodes[0].layer", "clean_resid", NODE_RESID,
         also=("layer 2 does not exist",), problems=1),
    case("logit_lens_layer_out_of_range", add_nodes(BASE, "    - {id: lens, op: logit_lens, layer: 5, scope: clean_run}\n"),
         GRAPH, "layer_out_of_range", "graph.nodes[6].layer", "lens", "{id: lens,", problems=1),
    case("foreach_layer_out_of_range", edit(("foreach: {layer: all, position: all}",
                                             "foreach: {layer: [0, 5], position: all}")),
         GRAPH, "layer_out_of_range", "graph.scopes[2].foreach.layer", "point", "foreach:",
         also=("layer 5 does not exist",), problems=1),
    case("foreach_layer_not_a_layer", edit(("foreach: {layer: all, position: all}",
                                            "foreach: {layer: every, position: all}")),
         GRAPH, "invalid_value", "graph.scopes[2].foreach.layer", "point", "foreach:",
         problems=1),
    case("foreach_position_not_a_position", edit(("foreach: {layer: all, position: all}",
                                                  "foreach: {layer: all, position: first}")),
         GRAPH, "invalid_value", "graph.scopes[2].foreach.position", "point", "foreach:",
         problems=1),
    case("gpt2_module_on_llama", edit(("site: layer_output, layer: all,", 'site: "transformer.h.{layer}.mlp", layer: all,')),
         GRAPH, "unknown_module", "graph.nodes[0].site", "clean_resid", NODE_RESID,
         model="tiny_llama", also=("model.layers.0.mlp",), problems=1),
    case("placeholder_typo_in_a_module_path",
         edit(("site: layer_output, layer: all,", 'site: "transformer.h.{layr}.mlp", layer: all,')),
         GRAPH, "unknown_placeholder", "graph.nodes[0].site", "clean_resid", NODE_RESID,
         also=("has `{layr}`", "hint: did you mean `layer`?"), problems=1),
    case("typod_submodule", edit(("site: layer_output, layer: all,", 'site: "transformer.h.{layer}.mlp.c_fcc", layer: all,')),
         GRAPH, "unknown_module", "graph.nodes[0].site", "clean_resid", NODE_RESID,
         also=("did you mean `transformer.h.0.mlp.c_fc`",), problems=1),
    case("write_logits_into_the_residual_stream",
         edit(("    - {src: clean_resid, dst: patch.value}\n", ""),
              ("mode: patch, scope: point}", "mode: add, scope: point}"),
              ("  edges:\n", "    - {id: clean_logits, op: read, site: logits, position: last,"
                             " scope: clean_run}\n  edges:\n")) +
         "    - {src: clean_logits, dst: patch.value}\n",
         GRAPH, "axis_mismatch", "graph.nodes[1]", "patch", NODE_PATCH,
         also=("vocab",), problems=1),
    case("over_long_prompt", edit(('clean: "the eiffel tower is in the city of"',
                                   'clean: "' + "the " * 130 + 'city of"'),
                                  ('corrupt: "the colosseum tower is in the city of"',
                                   'corrupt: "' + "a " * 130 + 'city of"')),
         CONFIG, "prompt_too_long", "graph.scopes[0]", "clean_run", SCOPE_CLEAN, stage="plan",
         also=("132 tokens", "128 positions"), codes=("prompt_too_long",), problems=2),
    case("model_not_in_offline_cache", BASE, MODEL, "model_unavailable", "model.path",
         args=("model.path=nnrun-test/no-such-model",), also=("offline",), problems=1),
    case("model_path_missing", BASE, MODEL, "model_not_found", "model.path",
         args=("model.path=/nonexistent/checkpoint",), also=("/nonexistent/checkpoint",),
         problems=1),
]

# --- tokens: answers and prompts against the tokenizer (ConfigError, stage=plan) ---------------

TOKENS = [
    case("two_word_answer", edit(('answer: "${params.answer}"', 'answer: " paris france"')),
         CONFIG, "not_one_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage="plan",
         also=("' paris france' is 2 tokens, expected 1",), problems=1),
    case("answer_not_in_vocabulary", edit(('answer: " paris"', 'answer: " berlin"')),
         CONFIG, "unknown_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage="plan",
         also=("not in the model's vocabulary",), problems=1),
    case("answer_is_pad_token", edit(('answer: " paris"', 'answer: "<pad>"')),
         CONFIG, "special_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage="plan",
         problems=1),
    case("foil_is_eos_token", edit(('foil: " rome"', 'foil: "<eos>"')),
         CONFIG, "special_token", "graph.nodes[3].foil", "effect", NODE_EFFECT, stage="plan",
         problems=1),
    case("empty_answer", edit(('answer: " paris"', 'answer: ""')),
         CONFIG, "not_one_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage="plan",
         also=("0 tokens",), problems=1),
    case("blank_answer", edit(('answer: " paris"', 'answer: "   "')),
         CONFIG, "not_one_token", "graph.nodes[3].answer", "effect", NODE_EFFECT, stage="plan",
         problems=1),
    case("answer_is_a_number", edit(('answer: " paris"', "answer: 5")),
         CONFIG, "invalid_value", "graph.nodes[3].answer", "effect", NODE_EFFECT, problems=1),
    case("prob_token_two_words", add_nodes(BASE, '    - {id: p, op: prob, token: " paris france"}\n',
                                           "    - {src: logits, dst: p.logits}\n"),
         CONFIG, "not_one_token", "graph.nodes[6].token", "p", "{id: p,", stage="plan",
         problems=1),
    case("empty_prompt", edit(('clean: "the eiffel tower is in the city of"', 'clean: ""')),
         CONFIG, "bad_input", "graph.scopes[0]", "clean_run", SCOPE_CLEAN, stage="plan",
         also=("non-empty",), problems=1),
    case("blank_prompt", edit(('corrupt: "the colosseum tower is in the city of"', 'corrupt: "   "')),
         CONFIG, "bad_input", "graph.scopes[2]", "point", SCOPE_POINT, stage="plan",
         problems=1),
    case("unknown_word_in_prompt", edit(('corrupt: "the colosseum tower', 'corrupt: "the pantheon tower')),
         CONFIG, "unknown_token", "graph.scopes[2]", "point", SCOPE_POINT, stage="plan",
         also=("'pantheon' is not in",), problems=1),
    case("two_unknown_words_in_prompt",
         edit(('corrupt: "the colosseum tower', 'corrupt: "the pantheon zeppelin')),
         CONFIG, "unknown_token", "graph.scopes[2]", "point", SCOPE_POINT, stage="plan",
         also=("'pantheon', 'zeppelin' are not in the model's vocabulary",), problems=1),
    case("prompt_is_a_list_of_numbers", edit(('input: "${params.clean}"}', "input: [1, 2]}")),
         CONFIG, "invalid_value", "graph.scopes[0].input[0]", "clean_run", SCOPE_CLEAN,
         codes=("invalid_value",), problems=2),
]

# --- datasets (ConfigError) --------------------------------------------------------------------

DATASETS = [
    case("missing_column", data_edit(("answer: {column: answer}", "answer: {column: answr}")),
         CONFIG, "unknown_column", "graph.nodes[3].answer", "effect", NODE_EFFECT, files=PAIRS,
         also=("did you mean `answer`?",), problems=1),
    case("missing_input_column", data_edit(("input: {column: clean}", "input: {column: clear}")),
         CONFIG, "unknown_column", "graph.scopes[0].input", "clean_run", SCOPE_CLEAN,
         files=PAIRS, also=("did you mean `clean`?",), problems=1),
    case("bad_jsonl_line", DATA, CONFIG, "data_row_invalid", "data.file", None, "file: pairs.jsonl",
         files={"pairs.jsonl": jsonl(ROWS[:1]) + '{"clean": "the kremlin",\n' + jsonl(ROWS[2:])},
         also=("pairs.jsonl:2", "not valid JSON"), problems=1),
    case("jsonl_row_not_an_object", DATA, CONFIG, "data_row_invalid", "data.file", None,
         "file: pairs.jsonl", files={"pairs.jsonl": jsonl(ROWS[:2]) + '["a", "b"]\n'},
         also=("pairs.jsonl:3", "JSON object"), problems=1),
    case("cell_wrong_type", DATA, CONFIG, "data_row_invalid", "graph.nodes[3].foil", "effect",
         NODE_EFFECT, files={"pairs.jsonl": jsonl(ROWS[:1] + [{**ROWS[1], "foil": 7}])},
         also=("pairs.jsonl:2", "non-empty string"), problems=1),
    case("cell_bool", DATA, CONFIG, "data_row_invalid", "graph.nodes[3].answer", "effect",
         NODE_EFFECT, files={"pairs.jsonl": jsonl([{**ROWS[0], "answer": True}])},
         also=("pairs.jsonl:1",), problems=1),
    case("cell_empty_prompt", DATA, CONFIG, "data_row_invalid", "graph.scopes[2].input", "point",
         SCOPE_POINT, files={"pairs.jsonl": jsonl(ROWS[:2] + [{**ROWS[2], "corrupt": ""}])},
         also=("pairs.jsonl:3",), problems=1),
    case("cell_missing_in_a_row", DATA, CONFIG, "data_row_invalid", "graph.nodes[3].foil",
         "effect", NODE_EFFECT,
         files={"pairs.jsonl": jsonl(ROWS[:1] + [{k: v for k, v in ROWS[1].items() if k != "foil"}])},
         also=("pairs.jsonl:2", "is missing"), problems=1),
    case("position_column_not_an_integer",
         data_edit(("layer: all, position: last,\n", "layer: all, position: {column: pos},\n")),
         CONFIG, "data_row_invalid", "graph.nodes[0].position", "clean_resid", NODE_RESID,
         files={"pairs.jsonl": jsonl([{**ROWS[0], "pos": "two"}])},
         also=("must be an integer",), problems=1),
    case("data_file_missing", data_edit(("file: pairs.jsonl", "file: pears.jsonl")),
         CONFIG, "data_not_found", "data.file", None, "file: pears.jsonl", files=PAIRS,
         problems=1),
    case("data_file_is_a_directory", DATA, CONFIG, "data_not_found", "data.file", None,
         "file: pairs.jsonl", files={"pairs.jsonl/row.jsonl": jsonl(ROWS)}, problems=1),
    case("data_file_empty", DATA, CONFIG, "data_empty", "data.file", None, "file: pairs.jsonl",
         files={"pairs.jsonl": ""}, problems=1),
    case("data_file_blank_lines", DATA, CONFIG, "data_empty", "data.file", None,
         "file: pairs.jsonl", files={"pairs.jsonl": "\n\n  \n"}, problems=1),
    case("data_file_unknown_format", data_edit(("file: pairs.jsonl", "file: pairs.txt")),
         CONFIG, "data_format", "data.file", None, "file: pairs.txt",
         files={"pairs.txt": jsonl(ROWS)}, problems=1),
    case("data_file_latin1", DATA, CONFIG, "data_unreadable", "data.file", None,
         "file: pairs.jsonl", files={"pairs.jsonl": jsonl(ROWS).replace("tower", "t\xe9").encode("latin-1")},
         problems=1),
    case("csv_ragged_row", data_edit(("file: pairs.jsonl", "file: pairs.csv")),
         CONFIG, "data_row_invalid", "data.file", None, "file: pairs.csv",
         files={"pairs.csv": "clean,corrupt,answer,foil\n"
                             "the eiffel tower,the colosseum, paris, rome\n"
                             "the kremlin,the louvre, moscow\n"},
         also=("pairs.csv:3", "fewer fields"), problems=1),
    case("csv_header_only", data_edit(("file: pairs.jsonl", "file: pairs.csv")),
         CONFIG, "data_empty", "data.file", None, "file: pairs.csv",
         files={"pairs.csv": "clean,corrupt,answer,foil\n"}, problems=1),
    case("data_file_and_rows", data_edit(("  file: pairs.jsonl\n", "  file: pairs.jsonl\n  rows: []\n")),
         CONFIG, "invalid_value", "data", None, "data:", files=PAIRS,
         also=("exactly one of `file` or `rows`",), problems=1),
    case("data_limit_zero", data_edit(("  file: pairs.jsonl\n", "  file: pairs.jsonl\n  limit: 0\n")),
         CONFIG, "invalid_value", "data.limit", None, "limit: 0", files=PAIRS, problems=1),
    case("inline_rows_empty", data_edit(("  file: pairs.jsonl\n", "  rows: []\n")),
         CONFIG, "data_empty", "data.rows", None, "rows: []", problems=1),
    case("inline_row_missing_a_column",
         data_edit(("  file: pairs.jsonl\n", "  rows:\n" + "".join(
             f"    - {json.dumps({k: v for k, v in r.items() if (i, k) != (1, 'answer')})}\n"
             for i, r in enumerate(ROWS)))),
         CONFIG, "data_row_invalid", "graph.nodes[3].answer", "effect", NODE_EFFECT,
         also=("data.rows[1]", "is missing"), problems=1),
    case("inline_row_not_a_mapping", data_edit(("  file: pairs.jsonl\n", "  rows: [clean]\n")),
         CONFIG, "invalid_value", "data.rows[0]", None, "rows: [clean]", problems=1),
    case("column_without_data", data_edit(("data:\n  file: pairs.jsonl\n", "")),
         CONFIG, "no_data", "graph.scopes[0].input", "clean_run", SCOPE_CLEAN,
         also=("`data`",)),
    case("input_list_longer_than_dataset",
         data_edit(("input: {column: clean}}", 'input: ["the cat sat", "the dog ran", "a cat", "a dog"]}')),
         CONFIG, "bad_input", "graph.scopes[0]", "clean_run", SCOPE_CLEAN, stage="plan",
         files=PAIRS, also=("4 prompts", "3 examples"), problems=1),
    case("unknown_word_in_a_row", DATA, CONFIG, "unknown_token", "graph.scopes[2]", "point",
         SCOPE_POINT, stage="plan",
         files={"pairs.jsonl": jsonl(ROWS[:1] + [{**ROWS[1], "corrupt": "the pantheon is in the city of"}])},
         also=("pairs.jsonl:2 (row 1)", "'pantheon'"), problems=1),
    case("two_token_answer_in_a_row", DATA, CONFIG, "not_one_token", "graph.nodes[3].answer",
         "effect", NODE_EFFECT, stage="plan",
         files={"pairs.jsonl": jsonl(ROWS[:2] + [{**ROWS[2], "answer": " mary john"}])},
         also=("pairs.jsonl:3 (row 2)",), problems=1),
]

# --- positions (ConfigError when bound, stage=plan) ---------------------------------------------

POSITIONS = [
    case("position_at_the_end", edit(("site: logits, position: last,", "site: logits, position: 8,")),
         CONFIG, "position_out_of_range", "graph.nodes[2].position", "logits", NODE_LOGITS,
         stage="plan", also=("position 8 is outside the prompt's 8 tokens",), problems=1),
    case("position_past_the_end", edit(("site: logits, position: last,", "site: logits, position: 100,")),
         CONFIG, "position_out_of_range", "graph.nodes[2].position", "logits", NODE_LOGITS,
         stage="plan", problems=1),
    case("negative_position_before_the_start", edit(("site: logits, position: last,", "site: logits, position: -9,")),
         CONFIG, "position_out_of_range", "graph.nodes[2].position", "logits", NODE_LOGITS,
         stage="plan", also=("-8..-1",), problems=1),
    case("match_not_found", edit(("site: logits, position: last,", 'site: logits, position: {match: " paris"},')),
         CONFIG, "no_match", "graph.nodes[2].position", "logits", NODE_LOGITS, stage="plan",
         also=("' paris' does not occur",), problems=1),
    case("match_ambiguous", edit(("site: logits, position: last,", 'site: logits, position: {match: "the"},')),
         CONFIG, "ambiguous_match", "graph.nodes[2].position", "logits", NODE_LOGITS,
         stage="plan", also=("occurs 2 times", "occurrence: first"), problems=1),
    case("match_column_missing_in_a_row",
         data_edit(("layer: all, position: last,\n", "layer: all, position: {match: {column: subject}},\n")),
         CONFIG, "unknown_column", "graph.nodes[0].position", "clean_resid", NODE_RESID,
         files=PAIRS, also=("`subject`",), problems=1),
    case("match_from_column_not_found",
         data_edit(("layer: all, position: last,\n", "layer: all, position: {match: {column: answer}},\n")),
         CONFIG, "no_match", "graph.nodes[0].position", "clean_resid", NODE_RESID, stage="plan",
         files=PAIRS, also=("pairs.jsonl:1 (row 0)",), problems=1),
    case("position_column_out_of_range",
         data_edit(("layer: all, position: last,\n", "layer: all, position: {column: pos},\n")),
         CONFIG, "position_out_of_range", "graph.nodes[0].position", "clean_resid", NODE_RESID,
         stage="plan", files={"pairs.jsonl": jsonl(ROWS[:2] + [{**ROWS[2], "pos": 40}])},
         also=("pairs.jsonl:3 (row 2)",), problems=1),
    case("misaligned_clean_corrupt", edit(('corrupt: "the colosseum tower is in the city of"',
                                           'corrupt: "the colosseum tower is in the big city of"')),
         CONFIG, "misaligned_patch", "graph.nodes[1]", "patch", NODE_PATCH, stage="plan",
         also=("8 tokens", "9 tokens"), problems=1),
    case("misaligned_rows", data_edit(("layer: all, position: last,\n", "layer: all,\n"),
                                      ('position: last,\n       mode: patch', 'position: all,\n       mode: patch')),
         CONFIG, "misaligned_patch", "graph.nodes[1]", "patch", NODE_PATCH, stage="plan",
         files={"pairs.jsonl": jsonl(ROWS[:2])}, also=("pairs.jsonl:1 (row 0)",), problems=1),
    case("foreach_position_past_the_end", edit(("foreach: {layer: all, position: all}",
                                                "foreach: {layer: all, position: [8]}")),
         CONFIG, "position_out_of_range", "graph.scopes[2]", "point", SCOPE_POINT, stage="plan",
         problems=1),
    case("foreach_position_over_ragged_rows",
         data_edit(("foreach: {layer: all}", "foreach: {layer: all, position: all}")),
         CONFIG, "ragged_positions", "graph.scopes[2]", "point", SCOPE_POINT, stage="plan",
         files=PAIRS, problems=1),
]

# --- the command line (Hydra) -------------------------------------------------------------------

HYDRA = [
    case("experiment_name_typo", BASE, CONFIG, "unknown_experiment", "experiment",
         experiment="{name}x", also=("did you mean `{name}`?",), problems=1),
    case("experiment_given_as_a_path", BASE, CONFIG, "unknown_experiment", "experiment",
         experiment="experiments/{name}.yaml", also=("experiment={name}",), problems=1),
    case("bad_override_syntax", BASE, USAGE, "bad_override", "command line",
         args=("seed=abc=",), problems=1),
    case("unknown_model_option", BASE, USAGE, "unknown_option", "model", args=("model=gpt3",),
         also=("did you mean `gpt2`?",), problems=1),
    case("unknown_launcher_option", BASE, USAGE, "unknown_option", "hydra/launcher",
         args=("hydra/launcher=nope",), problems=1),
    case("unknown_config_key", BASE, USAGE, "hydra_error", "command line",
         args=("stgae=validate",), also=("stgae",), problems=1),
    case("seed_not_an_integer", BASE, CONFIG, "invalid_seed", "seed", args=("seed=abc",),
         problems=1),
    case("device_banana", BASE, CONFIG, "invalid_model_config", "model.device",
         args=("model.device=banana",), problems=1),
    case("dtype_unknown", BASE, CONFIG, "invalid_model_config", "model.dtype",
         args=("model.dtype=float8",), problems=1),
    case("unknown_stage", BASE, CONFIG, "unknown_stage", "stage", stage="banana", problems=1),
    case("no_experiment_selected", BASE, CONFIG, "no_experiment", "graph", experiment=None,
         problems=1),
    case("batch_size_on_the_command_line", BASE, CONFIG, "invalid_value", "batch_size",
         args=("+batch_size=0",), problems=1),
    case("bad_answer_on_the_command_line", BASE, CONFIG, "not_one_token", "graph.nodes[3].answer",
         "effect", NODE_EFFECT, stage="plan", args=('params.answer=" paris france"',),
         problems=1),
    case("missing_param_on_the_command_line", BASE, CONFIG, "unresolved_interpolation",
         "graph.nodes[3].answer", "effect", NODE_EFFECT, args=("~params.answer",)),
]

# --- options that contradict each other ---------------------------------------------------------

CONFLICTS = [
    case("write_constant_and_edge", edit(("mode: patch, scope: point}", "mode: replace, constant: 0.0, scope: point}")),
         GRAPH, "axis_mismatch", "graph.nodes[1]", "patch", NODE_PATCH,
         also=("exactly one of an edge into `value` or `constant`",), problems=1),
    case("write_neither_constant_nor_edge", edit(("mode: patch, scope: point}", "mode: replace, scope: point}"),
                                                 ("    - {src: clean_resid, dst: patch.value}\n", "")),
         GRAPH, "axis_mismatch", "graph.nodes[1]", "patch", NODE_PATCH,
         also=("exactly one of an edge into `value` or `constant`",), problems=1),
    case("patch_with_a_constant", edit(("mode: patch, scope: point}", "mode: patch, constant: 1.0, scope: point}")),
         GRAPH, "invalid_value", "graph.nodes[1].constant", "patch", "mode: patch, constant",
         also=("patch mode takes its value from an edge",), problems=1),
    case("export_path_in_the_file", edit(("graph:\n", "export_path: /tmp/x.py\ngraph:\n")),
         CONFIG, "forbidden_path", "export_path", None, "export_path:", problems=1),
    case("match_occurrence_with_unique_text", edit(("site: logits, position: last,",
                                                    'site: logits, position: {match: " eiffel", occurrence: second},')),
         CONFIG, "invalid_value", "graph.nodes[2].position.occurrence", "logits", NODE_LOGITS,
         also=("'first', 'last' or 'only'",), problems=1),
]

# --- what nnsight cannot express (CompileError, stage=plan) -------------------------------------

COMPILE_CASES = [
    case("out_of_order_in_one_invoke",
         add_nodes(BASE, "    - {id: late, op: read, site: layer_output, layer: 1, position: last, scope: clean_run}\n"
                         "    - {id: early, op: write, site: layer_output, layer: 0, position: last, scope: clean_run}\n",
                   "    - {src: late, dst: early.value}\n"),
         COMPILE, "out_of_order", "graph.nodes[7]", "early", "{id: early,", stage="plan",
         also=("in invoke `clean_run`", "after node `late`"), problems=1),
    case("post_node_feeds_the_model",
         add_nodes(edit(("{src: clean_resid, dst: patch.value}", "{src: twice, dst: patch.value}")),
                   "    - {id: twice, op: scale, factor: 2.0}\n", "    - {src: clean_resid, dst: twice}\n"),
         COMPILE, "post_feeds_model", "graph.nodes[6]", "twice", "{id: twice,", stage="plan",
         problems=1),
    case("statistic_along_examples", add_nodes(BASE, "    - {id: sm, op: softmax, axis: example}\n"
                                                     "    - {id: save_sm, op: save}\n",
                                               "    - {src: effect, dst: sm}\n    - {src: sm, dst: save_sm}\n"),
         COMPILE, "example_axis", "graph.nodes[6].axis", "sm", "{id: sm,", stage="plan",
         problems=1),
    case("mixes_examples_and_their_mean",
         add_nodes(BASE, "    - {id: clean_logits, op: read, site: logits, position: last,"
                         " scope: clean_run}\n"
                         '    - {id: clean_diff, op: logit_diff, answer: " paris", foil: " rome"}\n'
                         "    - {id: avg, op: mean, axis: example}\n"
                         "    - {id: centred, op: subtract}\n    - {id: save_centred, op: save}\n",
                   "    - {src: clean_logits, dst: clean_diff.logits}\n"
                   "    - {src: clean_diff, dst: avg}\n    - {src: clean_diff, dst: centred.a}\n"
                   "    - {src: avg, dst: centred.b}\n    - {src: centred, dst: save_centred}\n"),
         COMPILE, "mixes_examples", "graph.nodes[9]", "centred", "{id: centred,", stage="plan",
         problems=1),
    case("value_crosses_looping_invokes",
         edit(("    - {id: patched, kind: trace}\n",
               "    - {id: patched, kind: trace}\n"
               "    - {id: other, kind: invoke, parent: patched, input: \"${params.clean}\"}\n"),
              ("{src: clean_resid, dst: patch.value}", "{src: other_resid, dst: patch.value}"),
              ("  edges:\n", "    - {id: other_resid, op: read, site: layer_output, layer: all,"
                             " scope: other}\n  edges:\n")),
         COMPILE, "loop_crossing", "graph.nodes[1]", "patch", NODE_PATCH, stage="plan",
         also=("uses `other_resid` from another invoke",), problems=1),
]

# --- failures while the model runs (RunError, stage=run) ----------------------------------------

RUNTIME_CASES = [
    case("select_position_past_the_end",
         "format: 1\nname: broken\ngraph:\n"
         "  scopes: [{id: t, kind: trace, input: the eiffel tower}]\n"
         "  nodes:\n"
         "    - {id: resid, op: read, site: layer_output, layer: 0, scope: t}\n"
         "    - {id: pick, op: select_position, position: 50}\n"
         "    - {id: out, op: save}\n"
         "  edges: [{src: resid, dst: pick}, {src: pick, dst: out}]\n",
         RUNTIME, "runtime_error", "graph.nodes[1]", "pick", "{id: pick,", stage=None,
         also=("while executing node `pick`", "index 50 out of range", "program.py"), problems=1),
]

OUTPUT_CASES = [
    case("run_directory_under_a_file", BASE, OUTPUT, "output_not_writable", "hydra.run.dir",
         stage=None, args=("hydra.run.dir={tmp}/a_file/run",), files={"../a_file": "x"},
         also=("is not a directory",), problems=1),
]

CASES = (YAML_SYNTAX + SCHEMA + GRAPH_CASES + MODEL_MISMATCH + TOKENS + DATASETS + POSITIONS
         + HYDRA + CONFLICTS + COMPILE_CASES + RUNTIME_CASES + OUTPUT_CASES)


# --- running a case -------------------------------------------------------------------------------


def run_case(c: Case, name: str, tmp_path: Path) -> Result:
    folder = tmp_path / "experiments"
    folder.mkdir()
    text = c.text if isinstance(c.text, bytes) else c.text.encode()
    (folder / f"{name}{c.suffix}").write_bytes(text)
    for relative, content in c.files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = [a.format(tmp=tmp_path) for a in c.args]
    if c.experiment is not None:
        args.insert(0, "experiment=" + c.experiment.format(name=name))
    args.insert(1, f"model={c.model}")
    if c.stage:
        args.append(f"stage={c.stage}")
    explicit_dir = any(a.startswith("hydra.run.dir=") for a in args)
    return run_nnrun(args, cwd=tmp_path, env={"NNRUN_EXPERIMENTS": str(folder), **c.env},
                     run_dir=None if explicit_dir else tmp_path / "run")


def check_report(c: Case, name: str, result: Result) -> None:
    """Assert the documented report: exit code, `nnrun:` summary, located issue line, no
    traceback, nothing marked complete."""
    err = result.stderr
    assert "Traceback" not in err + result.stdout, result.explain()
    assert result.code == c.exit, result.explain()
    assert err.startswith("nnrun: "), result.explain()
    for code in (c.code, *c.codes):
        assert f"[{code}]" in err, result.explain()
    # the issue's own line: `  [file:line: ]path[ (node id)]: message [code]`
    suffix = re.escape(c.suffix)
    where = rf"\S*/{re.escape(name)}{suffix}:(\d+): " if c.at else \
        rf"(?:\S*/{re.escape(name)}{suffix}: )?"  # no line: the value is not in the file
    kind = "scope" if "scopes[" in c.path else "node"
    node = rf" \({kind} {re.escape(c.node)}\)" if c.node else ""
    path = re.escape(c.path) if c.path else "experiment"
    issue = re.search(rf"^  {where}{path}{node}: .*\[{re.escape(c.code)}\]$", err, re.MULTILINE)
    assert issue, (f"no issue line with path {c.path!r}, node {c.node!r}, "
                   f"{'a' if c.at else 'no'} line number\n" + result.explain())
    if c.at:
        text = c.text.decode("latin-1") if isinstance(c.text, bytes) else c.text
        assert int(issue.group(1)) == line_of(text, c.at), result.explain()
    for text in c.also:
        assert text.replace("{name}", name) in err, result.explain()
    assert not (result.run_dir / "COMPLETED").exists(), result.explain()
    manifest = result.run_dir / "manifest.json"
    if manifest.exists():
        assert json.loads(manifest.read_text())["status"] != "completed", result.explain()
    if c.problems is not None:  # one mistake, one issue: its consequences are not reported
        assert len(ISSUE_LINE.findall(err)) == c.problems, result.explain()


ISSUE_LINE = re.compile(r"^  \S.*\[[a-z_]+\]$", re.MULTILINE)


def case_name(request) -> str:
    return re.sub(r"\W", "_", request.node.callspec.id)


@pytest.mark.parametrize("c", CASES)
def test_bad_input_is_reported(c: Case, request, tmp_path):
    name = case_name(request)
    check_report(c, name, run_case(c, name, tmp_path))


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 110
    assert len({p.id for p in CASES}) == len(CASES)
    assert {p.values[0].exit for p in CASES} >= {USAGE, CONFIG, GRAPH, COMPILE, MODEL, RUNTIME,
                                                 OUTPUT}


@pytest.mark.parametrize("text, files, stage", [
    pytest.param(BASE, {}, "plan", id="base"),
    pytest.param(DATA, PAIRS, "plan", id="data"),
    pytest.param(BASE, {}, None, id="base_runs"),
])
def test_the_bases_are_valid(text, files, stage, tmp_path):
    """Every case is one of these with one mistake: they must pass, so each failure above is
    caused by its mistake alone."""
    c = Case(text, 0, "", "", stage=stage, files=files)
    result = run_case(c, "base", tmp_path)
    assert result.code == 0 and "Traceback" not in result.stderr, result.explain()
    assert "warning" not in result.stderr, result.explain()  # a write and sinks are used
    if stage is None:
        assert (tmp_path / "run" / "COMPLETED").exists(), result.explain()


# --- warnings: what runs but is almost surely a mistake ------------------------------------------

UNUSED = add_nodes(BASE, "    - {id: extra, op: read, site: logits, position: last, scope: clean_run}\n"
                         "    - {id: twice, op: scale, factor: 2.0}\n"
                         "    - {id: top, op: topk, k: 2}\n",
                   "    - {src: effect, dst: twice}\n    - {src: logits, dst: top}\n")


@pytest.mark.parametrize("stage", ["validate", None])
def test_a_node_nothing_consumes_is_a_located_warning(stage, request, tmp_path):
    """A read, a compute node and a node with named outputs whose values go nowhere (a
    forgotten edge): each is named with its file, line, path, id, code and hint on stderr, and
    the run goes on (exit 0; the manifest keeps the warnings). `effect`, consumed by `twice`,
    the write `patch` and the sinks are not named."""
    name = case_name(request)
    result = run_case(Case(UNUSED, 0, "", "", stage=stage), name, tmp_path)
    assert result.code == 0 and "Traceback" not in result.stderr, result.explain()
    warned = re.findall(rf"^nnrun: warning: \S*/{name}\.yaml:(\d+): (graph\.nodes\[\d+\]) "
                        r"\(node (\w+)\): .* \[unused_node\]$", result.stderr, re.MULTILINE)
    assert [(int(line), path, node) for line, path, node in warned] == [
        (line_of(UNUSED, "{id: extra,"), "graph.nodes[6]", "extra"),
        (line_of(UNUSED, "{id: twice,"), "graph.nodes[7]", "twice"),
        (line_of(UNUSED, "{id: top,"), "graph.nodes[8]", "top")], result.explain()
    assert result.stderr.count("hint: connect its output to a save/plot node, or remove it") == 3
    if stage is None:
        manifest = json.loads((tmp_path / "run" / "COMPLETED").read_text())
        assert [w.split(" (node ")[1].split(")")[0] for w in manifest["warnings"]] == \
            ["extra", "twice", "top"]


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
def test_all_mistakes_reported_at_once(text, exit_code, issues, request, tmp_path):
    name = case_name(request)
    result = run_case(Case(text, exit_code, "", ""), name, tmp_path)
    err = result.stderr
    assert "Traceback" not in err and result.code == exit_code, result.explain()
    assert f"has {len(issues)} problems:" in err, result.explain()
    for code, path, at in issues:
        line = line_of(text, at)
        assert re.search(rf"{re.escape(name)}\.yaml:{line}: {re.escape(path)}\b.*\[{code}\]", err), \
            result.explain()
    assert not (tmp_path / "run" / "COMPLETED").exists()


# --- where a failed run lands: named even when the file gave no name ----------------------------


@pytest.mark.parametrize("text, code", [
    pytest.param(edit(("{id: save_effect, op: save}\n", "{id: save_effect, op: save\n")),
                 "invalid_yaml", id="not_yaml"),
    pytest.param(edit(("name: patching\n", "")), "missing_field", id="no_name"),
])
def test_a_nameless_failed_run_is_named_after_its_experiment_choice(text, code, tmp_path):
    """The run directory (Hydra's default, no `hydra.run.dir`) takes the experiment's `name`;
    a file that does not parse or has no `name` gives none, so the `experiment=` choice (the
    file's stem) names it instead of `none`, and the run stays marked failed."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "my_broken.yaml").write_text(text)
    result = run_nnrun(["experiment=my_broken", "model=tiny_gpt2"], cwd=tmp_path,
                       env={"NNRUN_EXPERIMENTS": str(folder)})
    assert result.code == CONFIG and f"[{code}]" in result.stderr, result.explain()
    made = list((tmp_path / "outputs").glob("*/*"))
    assert len(made) == 1 and made[0].name.endswith("_my_broken"), made
    assert f"(run directory, incomplete: {made[0]})" in result.stderr, result.explain()
    assert json.loads((made[0] / "manifest.json").read_text())["status"] == "failed"
    assert not (made[0] / "COMPLETED").exists()
