"""Property-based tests (hypothesis), bounded and deterministic for CI (`derandomize`, a fixed
example count, no example database):

* a generated valid spec round-trips: validate -> dump (python and YAML) -> validate is equal;
* random graphs and random or mutated YAML files never raise anything but nnrun's own errors
  through the job's path (read the file, resolve, validate, compile);
* for generated valid graphs the scheduler's order obeys nnsight: within an invoke, model
  accesses in the model's firing order at every loop point, each node after its inputs;
* generated names never collide, for adversarial node ids (`r`, `r_0`, keywords, builtins,
  the program's own names).

Compiled against the tiny GPT-2's structure (meta device, no weights) and its tokenizer.
"""

from __future__ import annotations

import ast
import builtins
import keyword
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from nnrun.bind import bind
from nnrun.codegen import generate
from nnrun.emit import LOOP_NAMES, PROGRAM_NAMES, Namespace
from nnrun.errors import CompileError, NnrunError
from nnrun.graph import build_graph
from nnrun.load import load_experiment_file
from nnrun.nodes import REGISTRY
from nnrun.schema import ExperimentSpec
from nnrun.sites import SITES, site_needs_layer

BOUNDED = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.filter_too_much])
REPO = Path(__file__).resolve().parents[2]
WORDS = ["the", "eiffel", "tower", "is", "in", "city", "of", "paris", "rome", "mary", "john",
         "went", "to", "store", "cat", "dog"]


@pytest.fixture(scope="module")
def tiny():
    """The tiny GPT-2's structure and tokenizer (built once per module, no weights)."""
    from nnrun.model_info import info_from_config
    from nnrun.tiny import build_config, build_tokenizer

    return info_from_config(build_config("tiny-gpt2")), build_tokenizer()


# --- strategies -----------------------------------------------------------------------------

ids = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
prompts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
answers = st.sampled_from([" " + w for w in WORDS])
columns = st.builds(lambda c: {"column": c}, st.sampled_from(["clean", "answer", "pos"]))
layers = st.one_of(st.integers(-2, 1), st.just("all"),
                   st.lists(st.integers(0, 1), min_size=1, max_size=2, unique=True))
positions = st.one_of(st.integers(-3, 2), st.sampled_from(["last", "all"]),
                      st.builds(lambda w, o: {"match": " " + w, "occurrence": o},
                                st.sampled_from(WORDS), st.sampled_from(["first", "last"])))
titles = st.one_of(st.none(), st.text(max_size=20))


def node_params(op: str, nid: str, scope: str | None) -> st.SearchStrategy[dict]:
    """Schema-valid parameters of one node (not necessarily a valid graph)."""
    base = {"id": st.just(nid), "op": st.just(op)}
    if scope is not None:
        base["scope"] = st.just(scope)
    extra: dict[str, Any] = {
        "read": {"site": st.sampled_from(sorted(SITES)), "layer": layers, "position": positions},
        "write": {"site": st.sampled_from(["layer_output", "layer_input", "mlp_output"]),
                  "layer": layers, "position": positions,
                  "mode": st.sampled_from(["replace", "add", "patch"])},
        "logit_lens": {"layer": layers, "position": positions},
        "logit_diff": {"answer": st.one_of(answers, columns), "foil": answers},
        "prob": {"token": answers}, "rank": {"token": answers},
        "scale": {"factor": st.floats(-4, 4, allow_nan=False)},
        "mean": {"axis": st.sampled_from(["example", "layer", "position"])},
        "topk": {"k": st.integers(1, 5)},
        "plot_heatmap": {"axes": st.sampled_from([["layer", "position"], ["example", "layer"]]),
                         "title": titles},
        "plot_line": {"x": st.sampled_from(["layer", "position"]), "title": titles},
    }.get(op, {})
    return st.fixed_dictionaries(base, optional=extra)


@st.composite
def specs(draw) -> dict:
    """A dict that ExperimentSpec accepts: random scopes, nodes of every kind, edges."""
    n_scopes = draw(st.integers(0, 3))
    scope_ids = draw(st.lists(ids, min_size=n_scopes, max_size=n_scopes, unique=True))
    scopes = [draw(st.fixed_dictionaries(
        {"id": st.just(s), "kind": st.sampled_from(["trace", "invoke", "session", "generate"])},
        optional={"input": st.one_of(prompts, st.lists(prompts, min_size=1, max_size=2),
                                     columns),
                  "parent": st.sampled_from(scope_ids),
                  "foreach": st.fixed_dictionaries({}, optional={
                      "layer": st.sampled_from(["all", 0, [0, 1]]),
                      "position": st.sampled_from(["all", "last", -1])}),
                  "max_new_tokens": st.integers(1, 3)})) for s in scope_ids]
    node_ids = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    nodes = [draw(node_params(draw(st.sampled_from(REGISTRY.ops())), nid,
                              draw(st.one_of(st.none(), st.sampled_from(scope_ids or ["t"])))))
             for nid in node_ids]
    ports = st.sampled_from(["", ".in", ".logits", ".value", ".a", ".b", ".low", ".high"])
    outputs = st.sampled_from(["", "", "", ".values", ".indices", ".valuez"])  # named outputs
    edges = draw(st.lists(st.builds(lambda s, o, d, p: {"src": s + o, "dst": d + p},
                                    st.sampled_from(node_ids), outputs,
                                    st.sampled_from(node_ids), ports),
                          max_size=6))
    spec = {"format": 1, "name": draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True)
                                      .filter(lambda n: ".." not in n and not n.endswith("."))),
            "description": draw(st.text(max_size=30)),
            "params": draw(st.dictionaries(ids, st.one_of(prompts, st.integers()), max_size=3)),
            "batch_size": draw(st.one_of(st.just("auto"), st.integers(1, 8))),
            "graph": {"scopes": scopes, "nodes": nodes, "edges": edges}}
    if draw(st.booleans()):
        spec["data"] = {"rows": draw(st.lists(st.fixed_dictionaries(
            {"clean": prompts, "answer": answers, "pos": st.integers(-2, 0)}),
            min_size=1, max_size=3))}
    return spec


# --- (a) round trip -------------------------------------------------------------------------

@BOUNDED
@given(specs())
def test_valid_specs_round_trip(data):
    try:
        spec = ExperimentSpec.model_validate(data)
    except Exception:
        assume(False)  # the generator aims at valid specs; the rare invalid one is skipped
    dumped = spec.model_dump(mode="json")
    assert ExperimentSpec.model_validate(dumped) == spec
    text = yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)
    again = ExperimentSpec.model_validate(yaml.safe_load(text))
    assert again == spec
    assert again.model_dump(mode="json") == dumped


# --- (b) nothing escapes nnrun's error tree -------------------------------------------------

TINY_MODEL = yaml.safe_load((REPO / "configs/model/tiny_gpt2.yaml").read_text())
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(allow_nan=True),
                 st.text(max_size=8), st.lists(st.integers(-1, 3), max_size=3),
                 st.dictionaries(st.sampled_from(["match", "column", "x"]), st.text(max_size=4),
                                 max_size=2))
FIELD_NAMES = ["site", "layer", "position", "mode", "constant", "factor", "axis", "axes", "answer",
               "foil", "token", "k", "x", "series", "title", "at", "scope", "coefficient"]


@st.composite
def random_graphs(draw) -> dict:
    """Graphs with random ops, fields, edges and scopes: mostly wrong, sometimes right."""
    pool = draw(st.lists(ids, min_size=2, max_size=5, unique=True))
    scopes = [draw(st.fixed_dictionaries(
        {"id": st.sampled_from(pool),
         "kind": st.sampled_from(["trace", "invoke", "session", "generate", "step", "trase"])},
        optional={"parent": st.sampled_from(pool), "input": st.one_of(prompts, JUNK),
                  "foreach": st.dictionaries(st.sampled_from(["layer", "position", "head"]),
                                             JUNK, max_size=2),
                  "max_new_tokens": JUNK, "steps": JUNK}))
        for _ in range(draw(st.integers(0, 3)))]
    nodes = []
    for _ in range(draw(st.integers(1, 5))):
        node = {"id": draw(st.sampled_from(pool)),
                "op": draw(st.one_of(st.sampled_from(REGISTRY.ops()), st.text(max_size=5)))}
        for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=5, unique=True)):
            node[name] = draw(st.one_of(JUNK, st.sampled_from(sorted(SITES)), layers,
                                        positions, st.sampled_from(pool)))
        nodes.append(node)
    edges = [{"src": draw(st.sampled_from(pool)),
              "dst": draw(st.sampled_from(pool)) + draw(st.sampled_from(["", ".in", ".value",
                                                                         ".logits", ".zz"]))}
             for _ in range(draw(st.integers(0, 5)))]
    return {"format": 1, "name": "g", "graph": {"scopes": scopes, "nodes": nodes,
                                                "edges": edges}}


def through_the_pipeline(config: dict, source: Path | None = None) -> None:
    """What a job does before weights: validate, bind and compile (any NnrunError is fine)."""
    from nnrun.pipeline import compile_program

    try:
        compile_program({**config, "model": TINY_MODEL, "seed": 0}, source)
    except NnrunError:
        pass


@BOUNDED
@given(random_graphs())
def test_random_graphs_raise_only_nnrun_errors(graph):
    through_the_pipeline(graph)


BASE = (REPO / "tests/integration/test_bad_input_corpus.py").read_text().split(
    "BASE = '''\\\n")[1].split("'''")[0]


@st.composite
def mutated_files(draw) -> str:
    """The patching experiment with a few random edits (characters deleted, inserted, lines
    duplicated or swapped), or entirely random text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=200))
    text = BASE
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate_line", "swap_lines"]))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        elif kind == "insert":
            text = text[:at] + draw(st.sampled_from(
                [":", "{", "}", "[", "- ", "\t", "&a ", "*a", "!!str ", "${", "'", '"', "#",
                 "\n", "  ", "0", "-1", "true", "null", "layer: 9", ", foo: 1", "\x00", "é"])) \
                + text[at:]
        else:
            lines = text.splitlines(keepends=True)
            i, j = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            if kind == "duplicate_line":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
    return text


@BOUNDED
@given(text=mutated_files())
def test_random_yaml_raises_only_nnrun_errors(text, tmp_path_factory):
    """The file goes the CLI job's way: checked and parsed (cli._checked_node), refusals
    raised, merged into the primary config, resolved (cli._to_container), compiled."""
    from nnrun import cli

    path = tmp_path_factory.mktemp("yaml") / "exp.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")  # lone surrogates: bad bytes
    try:
        cfg = OmegaConf.merge({"stage": "validate", "seed": 0, "export_path": None},
                              cli._checked_node(path))
        cli._raise_if_refused(cfg)
        config = cli._to_container(cfg, path)
    except NnrunError:
        config = None
    if config is not None:
        through_the_pipeline(config, path)
    try:  # the direct loader (no Hydra) too
        load_experiment_file(path)
    except NnrunError:
        pass


# --- (c) the schedule obeys nnsight's rules ---------------------------------------------------

SITES_IN_ORDER = ["embeddings", "layer_input", "attention_output", "mlp_output", "layer_output",
                  "final_norm", "logits"]


@st.composite
def model_graphs(draw) -> dict:
    """Valid graphs: reads (and writes fed by them) in one or two traces, some in a foreach
    invoke, in random YAML order, with data edges in both directions."""
    n = draw(st.integers(2, 6))
    traces = draw(st.integers(1, 2))
    looped = draw(st.booleans())
    scopes = [{"id": f"t{i}", "kind": "trace", "input": "the eiffel tower is in the city of"}
              for i in range(traces)]
    if looped:
        scopes += [{"id": "loop", "kind": "trace"},
                   {"id": "pt", "kind": "invoke", "parent": "loop",
                    "input": "the colosseum tower is in the city of",
                    "foreach": {"layer": "all"}}]
    nodes, edges = [], []
    reads: list[tuple[str, str]] = []
    for i in range(n):
        scope = draw(st.sampled_from([s["id"] for s in scopes if s["id"] != "loop"]))
        site = draw(st.sampled_from(SITES_IN_ORDER))
        node = {"id": f"n{i}", "op": "read", "site": site, "scope": scope, "position": "last"}
        if site_needs_layer(site):
            node["layer"] = "{layer}" if scope == "pt" and draw(st.booleans()) else \
                draw(st.integers(0, 1))
        if site.endswith("output") and site != "attention_output" and reads \
                and draw(st.booleans()):
            src, src_scope = draw(st.sampled_from(reads))
            node.update(op="write", mode="replace")
            edges.append({"src": src, "dst": f"n{i}.value"})
        else:
            reads.append((node["id"], scope))
        nodes.append(node)
    nodes = draw(st.permutations(nodes))
    return {"name": "s", "graph": {"scopes": scopes, "nodes": list(nodes), "edges": edges}}


@BOUNDED
@given(model_graphs())
def test_schedule_follows_the_forward_pass(tiny, data):
    info, tokenizer = tiny
    spec = ExperimentSpec.model_validate(data)
    try:
        graph = build_graph(spec, info)
        program = generate(graph, bind(graph, tokenizer))
    except CompileError as err:
        event(f"refused: {err.issues[0].code}")
        return  # refusing what nnsight cannot express is allowed; a program must be right
    except NnrunError:
        assume(False)  # the generator aims at valid graphs
    event(f"compiled: {sum(len(t.invokes) for t in program.schedule.traces)} invokes")
    for trace in program.schedule.traces:
        for plan in trace.invokes:
            order = [nid for nid, _ in plan.stmts]
            for nid in dict.fromkeys(order):   # every node after its inputs in this invoke
                first = order.index(nid)
                for src in graph.nodes[nid].sources:
                    if src in order:
                        assert max(i for i, x in enumerate(order) if x == src) < first
            for point in plan.binding.points:
                where = dict(zip(plan.binding.loop_vars, point))
                ranks = [info.rank(s.access.module.replace(
                    "{layer}", str(where.get("layer", 0))), s.access.event)
                    for _, s in plan.stmts if s.access is not None]
                assert ranks == sorted(ranks), (plan.scope.id, where, program.source)


# --- (d) generated names never collide ------------------------------------------------------

ADVERSARIAL = sorted(set(PROGRAM_NAMES) | set(LOOP_NAMES) | set(keyword.kwlist) | {
    "r", "r_0", "r_1", "r_1_1", "x", "x_1", "barrier", "barrier_0", "barrier_0_1", "points",
    "n0_points", "list", "print", "len", "object", "type", "id", "input", "sum", "str", "_",
    "__name__", "__builtins__", "self", "nnsight", "save", "value", "tokens_1"})
adversarial_ids = st.one_of(st.sampled_from(ADVERSARIAL),
                            st.builds(lambda a, n: f"{a}_{n}", st.sampled_from(ADVERSARIAL),
                                      st.integers(0, 3)))


@BOUNDED
@given(st.lists(st.tuples(st.sampled_from(["node", "part", "loop", "points"]), adversarial_ids),
                min_size=1, max_size=30))
def test_namespace_names_are_unique_and_safe(requests):
    names = Namespace()
    given_names = {}
    for kind, base in requests:
        given_names[(kind, base)] = names.name((kind, base), base)
    assert len(set(given_names.values())) == len(given_names)  # one object, one name
    for name in given_names.values():
        assert name.isidentifier() and not keyword.iskeyword(name)
        assert name not in dir(builtins) and name not in PROGRAM_NAMES
    for (kind, base), name in given_names.items():  # asking again gives the same name
        assert names.name((kind, base), base) == name


@BOUNDED
@given(st.lists(adversarial_ids.filter(lambda s: s[:1].isalpha() or s[:1] == "_"),
                min_size=3, max_size=3, unique=True))
def test_program_with_adversarial_node_ids_has_distinct_names(tiny, node_ids):
    info, tokenizer = tiny
    a, b, c = node_ids
    spec = ExperimentSpec.model_validate({"name": "n", "graph": {
        "scopes": [{"id": "t", "kind": "trace", "input": "the eiffel tower"},
                   {"id": "lp", "kind": "trace"},
                   {"id": "pt", "kind": "invoke", "parent": "lp", "input": "the colosseum tower",
                    "foreach": {"layer": "all"}}],
        "nodes": [{"id": a, "op": "read", "site": "layer_output", "layer": "all", "scope": "t"},
                  {"id": b, "op": "write", "site": "layer_output", "layer": "{layer}",
                   "mode": "patch", "scope": "pt"},
                  {"id": c, "op": "read", "site": "logits", "position": "last", "scope": "pt"},
                  {"id": c + "_s", "op": "save"}],
        "edges": [{"src": a, "dst": f"{b}.value"}, {"src": c, "dst": c + "_s"}]}})
    graph = build_graph(spec, info)
    program = generate(graph, bind(graph, tokenizer))
    tree = ast.parse(program.source)   # valid Python whatever the ids
    assigned: dict[str, set[str]] = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Assign) and stmt.lineno in program.line_map:
            node = program.line_map[stmt.lineno]
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(node, set()).add(target.id)
    owners: dict[str, str] = {}
    for node, targets in assigned.items():
        for name in targets:
            assert owners.setdefault(name, node) == node, f"`{name}` names two nodes"
            assert not keyword.iskeyword(name) and name not in dir(builtins)
