"""Write a compiled experiment as a standalone script (python + torch + transformers + nnsight)
and its data beside it as JSON (never pickle).

Invariant: the script contains the same program text nnrun runs and the same examples, chunks and
reductions, so running it reproduces the run's saved tensors (same model, dtype and device).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nnrun.atomic import atomic_write_text
from nnrun.attention import load_argument
from nnrun.models import resolve_path

MAIN = '''

# ---- standalone entry point (added by `nnrun stage=export`) ----------------------------------
MODEL = {model!r}
REVISION = {revision!r}
DTYPE = {dtype!r}
DEVICE = {device!r}
ATTENTION = {attention!r}  # attention kernel as nnrun ran it (None: transformers' default, SDPA)
DATA_FILE = {data_file!r}  # the examples, beside this script (JSON)
BATCH_SIZE = {batch_size!r}  # examples per chunk
MAX_POINTS = {max_points!r}  # points of a folded foreach per forward pass (None: all at once)
EXAMPLE_DIM = {example_dim!r}  # per-chunk value -> its example dimension
REDUCERS = {reducers!r}  # node -> (input node, statistic) over the examples
SAVES = {saves!r}  # save node -> the node whose value it writes
SEED = {seed!r}  # the run's seed: each chunk's torch seed derives from it


def load_model():
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL, revision=REVISION)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf = AutoModelForCausalLM.from_pretrained(MODEL, revision=REVISION,
                                              dtype=getattr(torch, DTYPE),
                                              attn_implementation=ATTENTION,
                                              use_safetensors=True)
    return TransformersModel(hf.to(DEVICE).eval(), tokenizer=tokenizer)


def chunk(data, start, stop):
    """The `data` argument of run() for examples start:stop (tensors rebuilt from JSON)."""
    def rows(x):
        return torch.tensor(x[start:stop])
    index = {{k: slice(v["slice"], None) if isinstance(v, dict) else rows(v)
             for k, v in data["index"].items()}}
    return {{"rows": torch.arange(stop - start),
            "prompts": {{k: encoded(v[start:stop], data["pad_id"])
                        for k, v in data["prompts"].items()}},
            "points": {{k: [tuple(p) for p in v] for k, v in data["points"].items()}},
            "index": index, "mask": {{k: rows(v) for k, v in data["mask"].items()}},
            "tokens": {{k: rows(v) for k, v in data["tokens"].items()}},
            "max_points": MAX_POINTS,
            "backend": {{}}}}  # e.g. {{"remote": True}} to run on NDIF (set NDIF_API_KEY)


def encoded(ids, pad_id):
    """Token ids per example -> input_ids and attention_mask, left-padded (nnrun.chunks)."""
    width = max(len(row) for row in ids)
    return {{"input_ids": torch.tensor([[pad_id] * (width - len(r)) + r for r in ids]),
            "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r)
                                           for r in ids])}}


def chunk_seed(seed, pass_index, start):
    """The torch seed of one chunk, derived from the run's seed (nnrun.sampling.chunk_seed)."""
    import hashlib

    digest = hashlib.sha256(f"{{seed}}:{{pass_index}}:{{start}}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def reduce(x, dim, statistic):
    """mean / std / sem over the examples; NaN cells (past a shorter prompt's end) skipped."""
    x = x.double().movedim(dim, 0)
    n = (~x.isnan()).sum(0)
    mean = x.nanmean(0)
    if statistic == "mean":
        return mean.float()
    std = ((x - mean) ** 2).nansum(0).div(n - 1).sqrt()
    return (std if statistic == "std" else std / n.sqrt()).float()


def main(out_dir="export_outputs"):
    import os

    from safetensors.torch import save_file

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), DATA_FILE)) as f:
        data = json.load(f)
    model, n = load_model(), len(data["prompts"][next(iter(data["prompts"]))])
    values = {{}}
    for index, (run_pass, finish_pass, given) in enumerate(PASSES):  # later passes use
        parts = {{}}                                                   # earlier ones' statistics
        for start in range(0, n, BATCH_SIZE):
            part = chunk(data, start, min(start + BATCH_SIZE, n))
            part["given"] = {{k: values[k] for k in given}}
            torch.manual_seed(chunk_seed(SEED, index, start))  # sampling: as nnrun draws it
            for name, value in run_pass(model, part).items():
                parts.setdefault(name, []).append(value)
        values.update({{k: torch.cat(v, EXAMPLE_DIM[k]) if isinstance(v[0], torch.Tensor) else
                       [x for part in v for x in part] for k, v in parts.items()}})
        values.update({{k: reduce(values[src], EXAMPLE_DIM[src], stat)
                       for k, (src, stat) in REDUCERS.items() if src in parts}})
        values.update(finish_pass(values))
    os.makedirs(out_dir, exist_ok=True)
    for save_node, source in SAVES.items():
        value = values[source]
        if isinstance(value, torch.Tensor):
            if source in EXAMPLE_DIM:  # nnrun stores per-example values example-first
                value = value.movedim(EXAMPLE_DIM[source], 0)
            save_file({{save_node: value.detach().cpu().contiguous()}},
                      os.path.join(out_dir, save_node + ".safetensors"))
        else:
            with open(os.path.join(out_dir, save_node + ".json"), "w") as f:
                json.dump(value, f)
    print("wrote", ", ".join(SAVES), "to", out_dir)


if __name__ == "__main__":
    import json
    import sys

    main(*sys.argv[1:2])
'''


def export_script(compiled, path: Path, seed: int = 0) -> Path:
    """Write program + loader + main to `path`, the examples to `<stem>_data.json`."""
    from nnrun.chunks import chunk_data

    graph, schedule = compiled.graph, compiled.program.schedule
    saves = {n.id: n.sources[0] for n in graph.nodes.values() if n.type.exported}
    example_dim = {nid: graph.axes[nid].index("example") for nid in schedule.returns
                   if "example" in graph.axes[nid]}
    reducers = {nid: (graph.nodes[nid].sources[0], graph.nodes[nid].type.reducer(
        graph.nodes[nid].params, graph.input_axes(nid)).statistic) for nid in schedule.reducers}
    data_file = path.with_name(path.stem + "_data.json")
    data = chunk_data(compiled.binding, 0, compiled.binding.n_examples)
    # the token ids of every example, unpadded: the script pads each chunk as nnrun does
    data["prompts"] = {scope: [list(ids) for ids in b.ids]
                       for scope, b in compiled.binding.invokes.items()}
    data["pad_id"] = compiled.binding.pad_id
    atomic_write_text(data_file, json.dumps(_as_json(data), sort_keys=True))
    spec = compiled.model
    text = compiled.program.source + MAIN.format(
        model=resolve_path(spec), revision=spec.revision, dtype=spec.dtype, device=spec.device,
        attention=load_argument(spec),
        data_file=data_file.name, batch_size=compiled.batch_size, example_dim=example_dim,
        max_points=compiled.max_points,
        reducers=reducers, saves=saves, seed=seed)
    atomic_write_text(path, text)
    return path


def _as_json(value: Any) -> Any:
    """Tensors → nested lists, slices → {"slice": start}; everything else is already JSON."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, slice):
        return {"slice": value.start}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
