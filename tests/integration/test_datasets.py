"""Experiments over datasets: chunking never changes a result, ragged batches equal rows run alone,
per-example positions and answers are right, and one compiled program serves every chunk.

The references never touch nnrun or nnsight: transformers with plain forward hooks, one example
at a time (fp32, eager attention), on tiny GPT-2 (learned absolute positions) and tiny Llama.
"""

from __future__ import annotations

import pytest
import torch

from nnrun.errors import ConfigError
from nnrun.models import load_model
from nnrun.pipeline import compile_program
from nnrun.run import execute
from nnrun.tiny import reference_model

BLOCKS = {"tiny-gpt2": "transformer.h", "tiny-llama": "model.layers"}
SUBJECTS = [("eiffel", " paris", "colosseum", " rome"), ("colosseum", " rome", "kremlin", " moscow"),
            ("kremlin", " moscow", "louvre", " paris"), ("louvre", " paris", "eiffel", " london"),
            ("eiffel", " france", "kremlin", " russia"), ("colosseum", " italy", "eiffel", " france")]
PAIRS = [{"clean": f"the {a} tower is in the city of", "corrupt": f"the {c} tower is in the city of",
          "answer": ans, "foil": foil} for a, ans, c, foil in SUBJECTS]
# Different lengths (3 to 9 tokens), " city" somewhere in each: a ragged batch.
RAGGED = ["the city of paris", "a big red cat sat on the mat in the city",
          "the city", "mary and john went to the city of rome",
          "the eiffel tower is in the city of paris"]


def config(model: str, graph: dict, rows: list[dict], batch_size="auto") -> dict:
    return {"format": 1, "name": "t", "data": {"rows": rows}, "batch_size": batch_size,
            "graph": graph, "model": {"name": model, "path": f"builtin:{model}"}}


def run(cfg: dict) -> dict:
    compiled = compile_program(cfg)
    return execute(compiled, load_model(compiled.model))


def hf_model(model: str):
    return reference_model(model)


PATCHING = {
    "scopes": [{"id": "clean", "kind": "trace", "input": {"column": "clean"}},
               {"id": "patched", "kind": "trace"},
               {"id": "point", "kind": "invoke", "parent": "patched",
                "input": {"column": "corrupt"}, "foreach": {"layer": "all", "position": "all"}}],
    "nodes": [{"id": "resid", "op": "read", "site": "layer_output", "layer": "all",
               "scope": "clean"},
              {"id": "patch", "op": "write", "site": "layer_output", "layer": "{layer}",
               "position": "{position}", "mode": "patch", "scope": "point"},
              {"id": "logits", "op": "read", "site": "logits", "position": "last",
               "scope": "point"},
              {"id": "diff", "op": "logit_diff", "answer": {"column": "answer"},
               "foil": {"column": "foil"}},
              {"id": "avg", "op": "mean", "axis": "example"},
              {"id": "spread", "op": "sem", "axis": "example"},
              {"id": "out", "op": "save"}, {"id": "out_avg", "op": "save"},
              {"id": "out_sem", "op": "save"}],
    "edges": [{"src": "resid", "dst": "patch.value"}, {"src": "logits", "dst": "diff.logits"},
              {"src": "diff", "dst": "out"}, {"src": "diff", "dst": "avg"},
              {"src": "diff", "dst": "spread"}, {"src": "avg", "dst": "out_avg"},
              {"src": "spread", "dst": "out_sem"}]}


def reference_patching(model: str) -> torch.Tensor:
    """Per example, per (layer, position): one patched forward pass with plain hooks."""
    hf, tok = hf_model(model)
    blocks = hf.get_submodule(BLOCKS[model])
    out = []
    for row in PAIRS:
        cache = {}
        hooks = [b.register_forward_hook(lambda m, i, o, k=k: cache.__setitem__(k, o.detach()))
                 for k, b in enumerate(blocks)]
        with torch.no_grad():
            hf(tok(row["clean"], return_tensors="pt")["input_ids"])
        for h in hooks:
            h.remove()
        ids = tok(row["corrupt"], return_tensors="pt")["input_ids"]
        a, f = (tok(row[k], add_special_tokens=False)["input_ids"][0] for k in ("answer", "foil"))
        grid = torch.zeros(len(blocks), ids.shape[1])
        for layer in range(len(blocks)):
            for pos in range(ids.shape[1]):
                def patch(m, i, o, layer=layer, pos=pos):
                    o = o.clone()
                    o[:, pos] = cache[layer][:, pos]
                    return o
                h = blocks[layer].register_forward_hook(patch)
                with torch.no_grad():
                    logits = hf(ids).logits[0, -1]
                h.remove()
                grid[layer, pos] = logits[a] - logits[f]
        out.append(grid)
    return torch.stack(out, -1)  # (layer, position, example)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_chunking_does_not_change_results_and_equals_hooks(model):
    one = run(config(model, PATCHING, PAIRS, batch_size=1))
    many = run(config(model, PATCHING, PAIRS, batch_size=4))   # chunks of 4 + 2
    whole = run(config(model, PATCHING, PAIRS, batch_size=32))
    assert one["diff"].shape == (2, 8, len(PAIRS))             # (layer, position, example)
    assert (one["diff"] - many["diff"]).abs().max() <= 1e-6
    assert (one["diff"] - whole["diff"]).abs().max() <= 1e-6
    want = reference_patching(model)
    assert (whole["diff"] - want).abs().max() <= 1e-5
    assert want.std() > 0
    # statistics over examples computed across chunks equal those of the whole tensor
    for got in (one, many, whole):
        assert torch.allclose(got["avg"], want.mean(-1), atol=1e-5)
        assert torch.allclose(got["spread"], want.std(-1) / len(PAIRS) ** 0.5, atol=1e-5)


POSITIONS = {"pos2": 1, "neg": -2, "last": "last", "city": {"match": " city"},
             "first_tok": 0, "all": "all"}


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_ragged_batch_equals_each_row_alone(model):
    """Prompts of 2 to 11 tokens in one batch: every position kind reads what that prompt alone
    gives (left padding and position ids cannot shift anything)."""
    nodes = [{"id": k, "op": "read", "site": "layer_output", "layer": 1, "position": p,
              "scope": "t"} for k, p in POSITIONS.items()]
    nodes.append({"id": "logits", "op": "read", "site": "logits", "position": "last",
                  "scope": "t"})
    nodes += [{"id": f"s_{n['id']}", "op": "save"} for n in list(nodes)]
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "text"}}],
             "nodes": nodes, "edges": [{"src": n["id"], "dst": f"s_{n['id']}"}
                                       for n in nodes if n["op"] == "read"]}
    rows = [{"text": t} for t in RAGGED]
    got = run(config(model, graph, rows, batch_size=len(rows)))
    hf, tok = hf_model(model)
    block = hf.get_submodule(BLOCKS[model])[1]
    for i, text in enumerate(RAGGED):
        cap = {}
        h = block.register_forward_hook(lambda m, a, o: cap.__setitem__("x", o[0]))
        with torch.no_grad():
            logits = hf(tok(text, return_tensors="pt")["input_ids"]).logits[0, -1]
        h.remove()
        x = cap["x"]                                           # (position, hidden)
        words = tok.convert_ids_to_tokens(tok(text)["input_ids"])
        city = words.index("city")
        for key, pos in (("pos2", 1), ("neg", -2), ("last", -1), ("city", city),
                         ("first_tok", 0)):
            assert (got[key][i] - x[pos]).abs().max() <= 1e-5, (key, text)
        assert (got["logits"][i] - logits).abs().max() <= 1e-5, text
        n = x.shape[0]
        assert (got["all"][i, :n] - x).abs().max() <= 1e-5, text   # every real token ...
        assert torch.isnan(got["all"][i, n:]).all(), text          # ... and padding is NaN


def test_position_out_of_range_names_the_row():
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "text"}}],
             "nodes": [{"id": "r", "op": "read", "site": "embeddings", "position": 3,
                        "scope": "t"}, {"id": "s", "op": "save"}],
             "edges": [{"src": "r", "dst": "s"}]}
    rows = [{"text": "the city of paris"}, {"text": "the city"}]
    with pytest.raises(ConfigError) as err:
        compile_program(config("tiny-gpt2", graph, rows))
    issue = err.value.issues[0]
    assert issue.code == "position_out_of_range" and issue.node == "r"
    assert "data.rows[1]" in issue.message and "2 tokens" in issue.message


def test_ambiguous_and_missing_matches_name_the_row():
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "text"}}],
             "nodes": [{"id": "r", "op": "read", "site": "embeddings",
                        "position": {"match": {"column": "word"}}, "scope": "t"},
                       {"id": "s", "op": "save"}], "edges": [{"src": "r", "dst": "s"}]}
    rows = [{"text": "the city of the city", "word": " city"},
            {"text": "the city", "word": "paris"}]
    with pytest.raises(ConfigError) as err:
        compile_program(config("tiny-gpt2", graph, rows))
    codes = {i.code for i in err.value.issues}
    assert codes == {"ambiguous_match", "no_match"} or "ambiguous_match" in codes
    assert any("data.rows[0]" in i.message for i in err.value.issues)
    rows[0]["text"], graph["nodes"][0]["position"]["occurrence"] = "the city of the city", "last"
    rows[1]["word"] = "city"
    compiled = compile_program(config("tiny-gpt2", graph, rows))
    assert compiled.binding.positions["r"].labels == ("4:city", "1:city")


def test_misaligned_clean_and_corrupt_is_an_error_not_a_shifted_patch():
    rows = [dict(PAIRS[0]), dict(PAIRS[1], corrupt="the colosseum tower is in the city of rome")]
    graph = {**PATCHING, "scopes": [PATCHING["scopes"][0], PATCHING["scopes"][1],
                                    {**PATCHING["scopes"][2], "foreach": {"layer": "all"}}]}
    graph["nodes"] = [dict(n, position="last") if n["id"] == "patch" else n
                      for n in PATCHING["nodes"]]
    with pytest.raises(ConfigError) as err:
        compile_program(config("tiny-gpt2", graph, rows))
    issue = next(i for i in err.value.issues if i.code == "misaligned_patch")
    assert issue.node == "patch" and "data.rows[1]" in issue.message


def test_one_compiled_program_serves_every_chunk(monkeypatch):
    import nnrun.run as runner

    imports, calls = [], []
    real_import = runner.import_program

    def counting_import(path):
        imports.append(path)
        module = real_import(path)

        def counted(run):
            def call(*args):
                calls.append(1)
                return run(*args)
            return call

        class Counted:  # wraps the module so that every chunk's call is counted
            PASSES = [(counted(run), finish, given) for run, finish, given in module.PASSES]

            def __getattr__(self, name):
                return getattr(module, name)
        return Counted()

    monkeypatch.setattr(runner, "import_program", counting_import)
    compiled = compile_program(config("tiny-gpt2", PATCHING, PAIRS, batch_size=2))
    assert "the eiffel" not in compiled.program.source     # the examples are data, not source
    execute(compiled, load_model(compiled.model))
    assert len(imports) == 1 and len(calls) == 3            # 6 examples in chunks of 2


def test_dataset_file_errors_name_file_and_line(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"clean": "the city", "answer": " paris"}\n{"clean": "the city"\n'
                    '{"clean": "the city", "answer": 3}\n')
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "clean"}}],
             "nodes": [{"id": "l", "op": "read", "site": "logits", "position": "last",
                        "scope": "t"},
                       {"id": "p", "op": "prob", "token": {"column": "answer"}},
                       {"id": "s", "op": "save"}],
             "edges": [{"src": "l", "dst": "p.logits"}, {"src": "p", "dst": "s"}]}
    cfg = config("tiny-gpt2", graph, [])
    cfg["data"] = {"file": str(data)}
    with pytest.raises(ConfigError) as err:
        compile_program(cfg)
    assert any(f"{data}:2" in i.message for i in err.value.issues)
    data.write_text('{"clean": "the city", "answer": " paris"}\n'
                    '{"clean": "the city", "answer": 3}\n')
    with pytest.raises(ConfigError) as err:
        compile_program(cfg)
    assert any(f"{data}:2 (row 1)" in i.message and "answer" in i.message
               for i in err.value.issues)
    cfg["graph"]["nodes"][1]["token"] = {"column": "answr"}
    with pytest.raises(ConfigError) as err:
        compile_program(cfg)
    assert "did you mean `answer`" in err.value.issues[0].hint


def test_csv_dataset_and_position_mean_skips_padding(tmp_path):
    """A CSV file works like JSONL, and a mean over positions of prompts of different lengths
    averages each prompt's own tokens only (padding never counts)."""
    data = tmp_path / "prompts.csv"
    data.write_text("text,n\n" + "".join(f'"{t}",{len(t.split())}\n' for t in RAGGED))
    graph = {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "text"}}],
             "nodes": [{"id": "r", "op": "read", "site": "layer_output", "layer": 0,
                        "scope": "t"},
                       {"id": "avg", "op": "mean", "axis": "position"},
                       {"id": "s", "op": "save"}],
             "edges": [{"src": "r", "dst": "avg"}, {"src": "avg", "dst": "s"}]}
    cfg = config("tiny-gpt2", graph, [], batch_size=2)
    cfg["data"] = {"file": str(data)}
    got = run(cfg)["avg"]                                      # (example, hidden)
    hf, tok = hf_model("tiny-gpt2")
    for i, text in enumerate(RAGGED):
        cap = {}
        h = hf.transformer.h[0].register_forward_hook(lambda m, a, o: cap.__setitem__("x", o))
        with torch.no_grad():
            hf(tok(text, return_tensors="pt")["input_ids"])
        h.remove()
        assert (got[i] - cap["x"][0].mean(0)).abs().max() <= 1e-5, text
