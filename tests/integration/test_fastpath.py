"""The compiler's fast paths (nnrun.fastpath) give the same numbers as the plain program, and are
not taken where they could change them.

The plain form (`fast_paths: false`) is itself checked against plain torch hooks in
test_numerics.py and the method tests; here both forms run on the same model and must agree.
"""

from __future__ import annotations

import copy

import pytest
import torch

from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute

CLEAN = "the eiffel tower is in the city of"
CORRUPT = "the colosseum tower is in the city of"
# Three examples of one token count: folded rows must pair each point with every example.
CLEANS = [CLEAN, "the louvre tower is in the city of", "a big red dog sat on the mat"]
CORRUPTS = [CORRUPT, "the kremlin tower is in the city of", "a small blue cat sat on the mat"]


@pytest.fixture
def prefix_always(monkeypatch):
    """Prefix reuse whenever it is exact, however little it saves (tiny models)."""
    monkeypatch.setattr("nnrun.fastpath.TRACE_COST_FLOPS", 0.0)
    monkeypatch.setattr("nnrun.fastpath.WEIGHT_READ_FLOPS", 0.0)


@pytest.fixture
def own_trace_always(monkeypatch):
    """A folded foreach always leaves a shared trace, however few points it has."""
    monkeypatch.setattr("nnrun.fastpath.INVOKE_COST_FLOPS", float("inf"))


@pytest.fixture
def prefix_never(monkeypatch):
    monkeypatch.setattr("nnrun.fastpath.TRACE_COST_FLOPS", float("inf"))


def sweep(model: str, site: str = "layer_output", foreach=None, extra_nodes=(),
          logits_position="last", examples: int = 1) -> dict:
    """Patch the clean run's `site` into the corrupt run at every point of `foreach`."""
    foreach = foreach or {"layer": "all", "position": "all"}
    head = {"head": "{head}"} if "head" in foreach else {}
    clean, corrupt = (CLEAN, CORRUPT) if examples == 1 else (CLEANS[:examples],
                                                             CORRUPTS[:examples])
    graph = {
        "scopes": [{"id": "clean_run", "kind": "trace", "input": clean},
                   {"id": "patched", "kind": "trace"},
                   {"id": "point", "kind": "invoke", "parent": "patched", "input": corrupt,
                    "foreach": foreach}],
        "nodes": [{"id": "clean", "op": "read", "site": site, "layer": "all",
                   "scope": "clean_run"},
                  {"id": "patch", "op": "write", "site": site, "layer": "{layer}",
                   "position": "{position}" if "position" in foreach else "all",
                   "mode": "patch", "scope": "point", **head},
                  *extra_nodes,
                  {"id": "logits", "op": "read", "site": "logits", "position": logits_position,
                   "scope": "point"},
                  {"id": "out", "op": "save"}],
        "edges": [{"src": "clean", "dst": "patch.value"}, {"src": "logits", "dst": "out"}]}
    return {"format": 1, "name": "fast", "graph": graph,
            "model": {"name": model, "path": f"builtin:{model}"}}


def both(config: dict):
    """The experiment compiled with and without the fast paths."""
    fast = compile_program(copy.deepcopy(config))
    plain = compile_program({**copy.deepcopy(config), "fast_paths": False})
    return fast, plain


def every_model_and_site(test):
    """The test over the three tiny models × the four residual and block-output sites."""
    sites = ["layer_output", "layer_input", "attention_output", "mlp_output"]
    test = pytest.mark.parametrize("site", sites)(test)
    return pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-neox"])(test)


def same_logits(fast, plain) -> torch.Tensor:
    """Both programs' logits on one model: the same shape and values (≤ 1e-5); the fast's."""
    lm = load_model(fast.model)
    got, want = execute(fast, lm)["logits"], execute(plain, lm)["logits"]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    return got


@every_model_and_site
def test_prefix_reuse_equals_the_plain_program(model, site, prefix_always):
    fast, plain = both(sweep(model, site, examples=3))
    trace = fast.program.schedule.traces[-1]
    assert trace.prefix is not None and trace.last_logits and trace.fold is not None
    assert "skip(" in fast.program.source and "skip(" not in plain.program.source
    assert same_logits(fast, plain).shape == (2, 8, 3, 67)   # layer, position, example, vocab


@every_model_and_site
def test_folded_points_equal_the_plain_program(model, site, prefix_never):
    """Without prefix reuse: one invoke of every point's rows, one indexed write per layer."""
    fast, plain = both(sweep(model, site, examples=3))
    trace = fast.program.schedule.traces[-1]
    assert trace.prefix is None and trace.fold is not None and trace.fold.by_layer
    assert fast.program.source.count("tracer.invoke(") == 2   # clean run + the folded points
    assert same_logits(fast, plain).shape == (2, 8, 3, 67)


def test_folded_points_over_positions_only(prefix_never):
    config = _with_layer(sweep("tiny-gpt2", "layer_input", {"position": "all"}, examples=3), 1)
    fast, plain = both(config | {"batch_size": 2})   # chunks of 2 examples and of 1
    trace = fast.program.schedule.traces[-1]
    assert trace.fold is not None and not trace.fold.by_layer
    assert same_logits(fast, plain).shape == (8, 3, 67)


def _with_layer(config: dict, layer: int) -> dict:
    for node in config["graph"]["nodes"]:
        if node["id"] == "patch":
            node["layer"] = layer
    return config


@pytest.mark.parametrize("prefix", ["prefix_always", "prefix_never"])
def test_folded_points_read_the_patched_layer_and_steer(prefix, request):
    """A read at the looped layer and position (collected per point), a steering vector added
    at the looped position (no example axis) and a zero-ablation there, folded or not."""
    request.getfixturevalue(prefix)
    nodes = [{"id": "after", "op": "read", "site": "layer_output", "layer": "{layer}",
              "position": "{position}", "scope": "point"},
             {"id": "vector", "op": "read", "site": "layer_output", "layer": 0,
              "position": -1, "scope": "vector_run"},
             {"id": "mean_vector", "op": "mean", "axis": "example"},
             {"id": "steer", "op": "write", "site": "mlp_output", "layer": "{layer}",
              "position": "{position}", "mode": "add", "coefficient": 2.0, "scope": "point"},
             {"id": "ablate", "op": "write", "site": "attention_output", "layer": "{layer}",
              "position": "{position}", "constant": 0.0, "scope": "point"},
             {"id": "save_after", "op": "save"}]
    config = sweep("tiny-gpt2", "layer_input", extra_nodes=nodes, examples=3)
    config["graph"]["scopes"].insert(0, {"id": "vector_run", "kind": "trace", "input": CLEANS})
    config["graph"]["edges"] += [{"src": "after", "dst": "save_after"},
                                 {"src": "vector", "dst": "mean_vector"},
                                 {"src": "mean_vector", "dst": "steer.value"}]
    fast, plain = both(config)
    assert fast.program.schedule.traces[-1].fold is not None
    lm = load_model(fast.model)
    got, want = execute(fast, lm), execute(plain, lm)
    for name in ("logits", "after"):
        assert got[name].shape == want[name].shape
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5)


def test_no_fold_when_a_point_writes_a_value_computed_in_the_point():
    own = {"id": "own", "op": "read", "site": "layer_input", "layer": 0, "position": "all",
           "scope": "point"}
    config = _with_layer(sweep("tiny-gpt2", "layer_output", {"position": "all"},
                               extra_nodes=[own]), 1)
    config["graph"]["edges"] = [{"src": "own", "dst": "patch.value"},
                                {"src": "logits", "dst": "out"}]
    config["graph"]["nodes"] = [n for n in config["graph"]["nodes"] if n["id"] != "clean"]
    assert compile_program(config).program.schedule.traces[-1].fold is None


@pytest.mark.parametrize("prefix", ["prefix_always", "prefix_never"])
@pytest.mark.parametrize("foreach", [{"layer": "all", "head": "all"},
                                     {"layer": "all", "head": "all", "position": [2, -1]},
                                     {"head": "all", "position": "all"}])
def test_folded_heads_equal_the_plain_program(foreach, prefix, request):
    """Per-head patching folded: the head (and position) of every row as index tensors."""
    request.getfixturevalue(prefix)
    config = sweep("tiny-gpt2", "attention_heads", foreach, examples=3)
    if "layer" not in foreach:
        config = _with_layer(config, 1)
    fast, plain = both(config)
    assert fast.program.schedule.traces[-1].fold is not None
    assert same_logits(fast, plain).shape[-2:] == (3, 67)


def test_a_dataset_value_a_looped_head_picks_from_is_not_folded():
    """Mean ablation per head: the value has no example axis but a head axis the loop picks
    from; per row that would put the rows after the positions, so the points stay invokes."""
    config = sweep("tiny-gpt2", "attention_heads", {"layer": "all", "head": "all"}, examples=3)
    patch = next(n for n in config["graph"]["nodes"] if n["id"] == "patch")
    patch["mode"] = "replace"
    config["graph"]["nodes"].append({"id": "mean", "op": "mean", "axis": "example"})
    config["graph"]["scopes"].insert(0, {"id": "reference", "kind": "trace", "input": CLEANS})
    next(n for n in config["graph"]["nodes"] if n["id"] == "clean")["scope"] = "reference"
    config["graph"]["edges"] = [{"src": "clean", "dst": "mean"},
                                {"src": "mean", "dst": "patch.value"},
                                {"src": "logits", "dst": "out"}]
    fast, plain = both(config)
    assert fast.program.schedule.traces[-1].fold is None
    same_logits(fast, plain)


@pytest.mark.parametrize("prefix", ["prefix_always", "prefix_never"])
@pytest.mark.parametrize("foreach", [{"layer": "all", "position": "all"},
                                     {"head": "all", "position": "all"}])
def test_folded_points_in_pieces_under_a_memory_cap_equal_the_plain_program(foreach, prefix,
                                                                             request):
    """When a grid's points at once would not fit, a folded invoke runs them a few at a
    time (a trace per piece; under prefix reuse, pieces of one layer's points)."""
    request.getfixturevalue(prefix)
    site = "attention_heads" if "head" in foreach else "layer_output"
    config = sweep("tiny-gpt2", site, foreach, examples=3)
    if "layer" not in foreach:
        config = _with_layer(config, 1)
    fast, plain = both(config)
    fast.max_points = 3   # 16 or 32 points: pieces of 3 (and a last, smaller one)
    same_logits(fast, plain)


def test_the_memory_cap_splits_only_grids_that_do_not_fit(monkeypatch):
    from nnrun.chunks import forward_bytes_per_example, max_points_per_forward

    compiled = compile_program(_with_layer(sweep("tiny-gpt2", "layer_output",
                                                 {"position": "all"}, examples=3), 1))
    schedule, binding, info = compiled.program.schedule, compiled.binding, compiled.graph.info
    row = forward_bytes_per_example(binding, info, 4, rows=1)
    assert compiled.max_points is None   # 8 points of 3 examples fit in 1 GiB
    assert max_points_per_forward(schedule, binding, info, 4, 3, budget=8 * 3 * row) is None
    assert max_points_per_forward(schedule, binding, info, 4, 3, budget=5 * 3 * row) == 5
    assert max_points_per_forward(schedule, binding, info, 4, 3, budget=row) == 1


def test_no_fold_in_generation():
    config = _with_layer(sweep("tiny-gpt2", "layer_output", {"position": "all"}), 1)
    config["graph"]["scopes"][1] = {"id": "patched", "kind": "generate", "max_new_tokens": 2}
    assert compile_program(config).program.schedule.traces[-1].fold is None


def test_prefix_reuse_of_heads_equals_the_plain_program(prefix_always):
    fast, plain = both(sweep("tiny-gpt2", "attention_heads",
                             {"layer": "all", "head": "all", "position": "all"}))
    assert fast.program.schedule.traces[-1].prefix is not None
    same_logits(fast, plain)


def test_last_logits_only_changes_nothing_for_a_single_run():
    config = {"format": 1, "name": "one", "model": {"name": "tiny-gpt2",
                                                     "path": "builtin:tiny-gpt2"},
              "graph": {"scopes": [{"id": "run", "kind": "trace", "input": CORRUPT}],
                        "nodes": [{"id": "logits", "op": "read", "site": "logits",
                                   "position": "last", "scope": "run"},
                                  {"id": "out", "op": "save"}],
                        "edges": [{"src": "logits", "dst": "out"}]}}
    fast, plain = both(config)
    assert "logits_to_keep=1" in fast.program.source
    assert "logits_to_keep" not in plain.program.source
    lm = load_model(fast.model)
    # the same unembedding of the same vector; a one-row matmul may round differently
    torch.testing.assert_close(execute(fast, lm)["logits"], execute(plain, lm)["logits"],
                               rtol=0, atol=1e-6)


def _fast_flags(config: dict) -> tuple[bool, bool]:
    trace = compile_program(config).program.schedule.traces[-1]
    return trace.prefix is not None, trace.last_logits


def test_prefix_reuse_is_left_out_where_traces_cost_more_than_it_saves():
    """A tiny model and one prompt: a trace per layer would cost more than the blocks saved;
    the points are folded into one invoke instead."""
    trace = compile_program(sweep("tiny-gpt2")).program.schedule.traces[-1]
    assert trace.prefix is None and trace.fold is not None


def test_no_prefix_reuse_when_the_point_edits_an_earlier_block(prefix_always):
    ablate = {"id": "ablate", "op": "write", "site": "mlp_output", "layer": 0, "constant": 0.0,
              "scope": "point"}
    assert _fast_flags(sweep("tiny-gpt2", extra_nodes=[ablate])) == (False, True)


def test_no_prefix_reuse_when_layer_is_not_the_outer_loop(prefix_always):
    config = sweep("tiny-gpt2", foreach={"position": "all", "layer": "all"})
    assert _fast_flags(config) == (False, True)


def test_all_logits_are_computed_when_a_read_needs_every_position(prefix_always):
    assert _fast_flags(sweep("tiny-gpt2", logits_position="all")) == (True, False)


def test_no_prefix_reuse_when_the_sweep_skips_too_little(prefix_always):
    # one position at layer 1 of 2: the prefix run would cost more than the blocks it skips
    config = sweep("tiny-gpt2", foreach={"layer": [1], "position": [-1]})
    assert _fast_flags(config) == (False, True)


def test_fast_paths_false_compiles_the_plain_form():
    config = {**sweep("tiny-gpt2"), "fast_paths": False}
    assert _fast_flags(config) == (False, False)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("site", ["attention_output", "mlp_output"])
def test_a_layer_only_sweep_folds_into_one_invoke(model, site, prefix_never):
    """Points that differ only in layer (a whole site patched at every position): one invoke
    of every point's rows, one indexed write per layer."""
    fast, plain = both(sweep(model, site, {"layer": "all"}, examples=3))
    trace = fast.program.schedule.traces[-1]
    assert trace.fold is not None and trace.fold.by_layer and trace.prefix is None
    assert fast.program.source.count("tracer.invoke(") == 2   # clean run + the folded points
    assert same_logits(fast, plain).shape == (2, 3, 67)       # layer, example, vocab


def shared_trace(model: str) -> dict:
    """One trace of three invokes: the corrupt prompts unedited, and the clean run's attention
    and MLP outputs patched in at every layer (two foreach invokes)."""
    scopes = [{"id": "clean_run", "kind": "trace", "input": CLEANS},
              {"id": "sites", "kind": "trace"},
              {"id": "base", "kind": "invoke", "parent": "sites", "input": CORRUPTS}]
    nodes = [{"id": "base_logits", "op": "read", "site": "logits", "position": "last",
              "scope": "base"}, {"id": "save_base", "op": "save"}]
    edges = [{"src": "base_logits", "dst": "save_base"}]
    for site in ("attention", "mlp"):
        scopes.append({"id": f"{site}_point", "kind": "invoke", "parent": "sites",
                       "input": CORRUPTS, "foreach": {"layer": "all"}})
        nodes += [{"id": f"clean_{site}", "op": "read", "site": f"{site}_output", "layer": "all",
                   "scope": "clean_run"},
                  {"id": f"{site}_patch", "op": "write", "site": f"{site}_output",
                   "layer": "{layer}", "mode": "patch", "scope": f"{site}_point"},
                  {"id": f"{site}_logits", "op": "read", "site": "logits", "position": "last",
                   "scope": f"{site}_point"}, {"id": f"save_{site}", "op": "save"}]
        edges += [{"src": f"clean_{site}", "dst": f"{site}_patch.value"},
                  {"src": f"{site}_logits", "dst": f"save_{site}"}]
    return {"format": 1, "name": "shared", "graph": {"scopes": scopes, "nodes": nodes,
                                                    "edges": edges},
            "model": {"name": model, "path": f"builtin:{model}"}}


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_foreach_invokes_sharing_a_trace_run_alone_and_equal_the_plain_program(
        model, own_trace_always):
    """Each foreach invoke of a shared trace moves to a trace of its own and is folded; the
    unedited invoke keeps the shared trace; every value equals the plain program's."""
    fast, plain = both(shared_trace(model))
    traces = fast.program.schedule.traces
    assert [(t.scope.id, [p.scope.id for p in t.invokes]) for t in traces] == [
        ("clean_run", ["clean_run"]), ("sites", ["base"]), ("sites", ["attention_point"]),
        ("sites", ["mlp_point"])]
    assert traces[1].fold is None and traces[2].fold is not None and traces[3].fold is not None
    assert [len(t.invokes) for t in plain.program.schedule.traces] == [1, 3]
    lm = load_model(fast.model)
    got, want = execute(fast, lm), execute(plain, lm)
    for name in ("base_logits", "attention_logits", "mlp_logits"):
        assert got[name].shape == want[name].shape
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5)


def test_few_points_keep_their_shared_trace():
    """Two points per foreach: folding them saves less than another forward pass costs."""
    fast, plain = both(shared_trace("tiny-gpt2"))
    traces = fast.program.schedule.traces
    assert [[p.scope.id for p in t.invokes] for t in traces] == [
        ["clean_run"], ["base", "attention_point", "mlp_point"]]
    assert traces[1].fold is None and "fold_points" not in fast.program.source
    lm = load_model(fast.model)
    got, want = execute(fast, lm), execute(plain, lm)
    for name in ("base_logits", "attention_logits", "mlp_logits"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5)


def test_a_foreach_invoke_without_a_fast_path_keeps_its_shared_trace(own_trace_always):
    """A point that writes a value it computes itself cannot be folded: it stays batched with
    the other invokes of its trace."""
    config = shared_trace("tiny-gpt2")
    own = {"id": "own", "op": "read", "site": "layer_input", "layer": 0, "position": "all",
           "scope": "mlp_point"}
    config["graph"]["nodes"].append(own)
    config["graph"]["nodes"] = [n for n in config["graph"]["nodes"] if n["id"] != "clean_mlp"]
    config["graph"]["edges"] = [e for e in config["graph"]["edges"] if e["src"] != "clean_mlp"]
    config["graph"]["edges"].append({"src": "own", "dst": "mlp_patch.value"})
    traces = compile_program(config).program.schedule.traces
    assert [[p.scope.id for p in t.invokes] for t in traces] == [
        ["clean_run"], ["base", "mlp_point"], ["attention_point"]]


@pytest.mark.parametrize("position", ["all", -1])
def test_a_coefficient_sweep_folds_and_equals_the_plain_program(position):
    """A steering vector added with every coefficient of the sweep: one invoke whose rows
    each take their point's coefficient."""
    graph = {"scopes": [{"id": "vector_run", "kind": "trace", "input": CLEANS},
                        {"id": "steered", "kind": "trace"},
                        {"id": "point", "kind": "invoke", "parent": "steered",
                         "input": CORRUPTS, "foreach": {"coefficient": [0, 0.5, 2, -3]}}],
             "nodes": [{"id": "vector", "op": "read", "site": "layer_output", "layer": 0,
                        "position": -1, "scope": "vector_run"},
                       {"id": "mean_vector", "op": "mean", "axis": "example"},
                       {"id": "steer", "op": "write", "site": "mlp_output", "layer": 0,
                        "position": position, "mode": "add", "coefficient": "{coefficient}",
                        "scope": "point"},
                       {"id": "logits", "op": "read", "site": "logits", "position": "last",
                        "scope": "point"},
                       {"id": "out", "op": "save"}],
             "edges": [{"src": "vector", "dst": "mean_vector"},
                       {"src": "mean_vector", "dst": "steer.value"},
                       {"src": "logits", "dst": "out"}]}
    fast, plain = both({"format": 1, "name": "steer", "graph": graph,
                        "model": {"name": "tiny-gpt2", "path": "builtin:tiny-gpt2"}})
    assert fast.program.schedule.traces[-1].fold is not None
    assert "fold_coefficient[:, None" in fast.program.source
    got = same_logits(fast, plain)                              # (coefficient, example, vocab)
    assert got.shape == (4, 3, 67) and (got[0] - got[-1]).abs().max() > 1e-3
