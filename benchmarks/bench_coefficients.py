"""A steering-coefficient sweep in a forward pass (a vector added to one layer's MLP output at the
last position, once per coefficient): nnrun against the raw-forward floor and plain torch hooks,
all measured in one process on the same seeded model.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_coefficients.py [--shapes tiny small gpt2]
                                        [--coefficients 16] [--positions 16] [--rounds 5]

Cases (round-robin; median wall and CPU seconds; ratios of CPU time against `floor`):
* floor          one SDPA forward of the C-row batch (full logits) + the run the vector is read from
* hooks_batched  a plain torch forward hook adding coefficient[row] * vector to that batch
* nnrun_plain    nnrun's program with `fast_paths: false` (one invoke per coefficient)
* nnrun_fast     nnrun's program as compiled by default (the coefficients folded into one invoke,
                 last-position logits)
* nnrun_unfolded the same without the fold (one invoke per coefficient, last-position logits)

Every case's last-position logits are compared with hooks_batched (max |diff| in the table).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from bench_floor import SHAPES, build_model, prompts
from measure import cpu_table, print_each_shape, round_robin, sweep_arguments

LAYER = 1   # the MLP output the vector is added to


def config(path: Path, clean: str, corrupt: str, coefficients: list[float], fast: bool) -> dict:
    """Read the clean prompt's residual at the last position after block 0; add coefficient x
    that vector to the corrupt prompt's MLP output of block LAYER, for every coefficient."""
    graph = {"scopes": [{"id": "vector_run", "kind": "trace", "input": clean},
                        {"id": "steered", "kind": "trace"},
                        {"id": "point", "kind": "invoke", "parent": "steered", "input": corrupt,
                         "foreach": {"coefficient": coefficients}}],
             "nodes": [{"id": "vector", "op": "read", "site": "layer_output", "layer": 0,
                        "position": -1, "scope": "vector_run"},
                       {"id": "steer", "op": "write", "site": "mlp_output", "layer": LAYER,
                        "position": -1, "mode": "add", "coefficient": "{coefficient}",
                        "scope": "point"},
                       {"id": "logits", "op": "read", "site": "logits", "position": "last",
                        "scope": "point"},
                       {"id": "out", "op": "save"}],
             "edges": [{"src": "vector", "dst": "steer.value"}, {"src": "logits", "dst": "out"}]}
    return {"format": 1, "name": "coefficients", "fast_paths": fast, "memory_budget": None,
            "graph": graph, "model": {"name": "bench", "path": str(path)}}


@contextlib.contextmanager
def coefficients_unfolded():
    """Compile as before coefficient loops could fold (nnrun.fastpath.FOLDED_LOOPS)."""
    from nnrun import fastpath

    saved = fastpath.FOLDED_LOOPS
    fastpath.FOLDED_LOOPS = saved - {"coefficient"}
    try:
        yield
    finally:
        fastpath.FOLDED_LOOPS = saved


def references(hf, floor_hf, tok, clean: str, corrupt: str, coefficients: list[float]):
    """floor and hooks_batched, each returning (C, vocab) last-position logits."""
    c_ids, x_ids = (tok(p, return_tensors="pt")["input_ids"] for p in (clean, corrupt))
    batch = x_ids.repeat(len(coefficients), 1)                  # (C, P)
    scale = torch.tensor(coefficients)[:, None]                 # (C, 1)

    @torch.no_grad()
    def floor():
        floor_hf(c_ids)
        return floor_hf(batch).logits[:, -1]                     # (C, vocab)

    @torch.no_grad()
    def hooks_batched():
        cache = {}
        h = hf.transformer.h[0].register_forward_hook(
            lambda m, a, o: cache.__setitem__("vector", o[0, -1].clone()))  # (hidden,)
        hf(c_ids)
        h.remove()

        def add(m, a, o):
            o = o.clone()                                        # (C, P, hidden)
            o[:, -1] = o[:, -1] + scale * cache["vector"]         # (C, hidden)
            return o
        h = hf.transformer.h[LAYER].mlp.register_forward_hook(add)
        out = hf(batch).logits[:, -1]                            # (C, vocab)
        h.remove()
        return out
    return {"floor": floor, "hooks_batched": hooks_batched}


def run_shape(shape: str, n_pos: int, n_coef: int, rounds: int, folder: Path) -> list[str]:
    from transformers import AutoModelForCausalLM

    from nnrun.models import load_model
    from nnrun.pipeline import compile_program
    from nnrun.run import execute

    path = build_model(shape, folder)
    clean, corrupt = prompts(n_pos)
    coefficients = [round(-4 + 8 * k / max(n_coef - 1, 1), 3) for k in range(n_coef)]
    compiled = {name: compile_program(config(path, clean, corrupt, coefficients, fast))
                for name, fast in (("nnrun_plain", False), ("nnrun_fast", True))}
    with coefficients_unfolded():
        compiled["nnrun_unfolded"] = compile_program(config(path, clean, corrupt, coefficients,
                                                            True))
    lm = load_model(compiled["nnrun_fast"].model)
    floor_hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    cases = references(lm._module, floor_hf, lm.tokenizer, clean, corrupt, coefficients)
    for name, program in compiled.items():
        cases[name] = lambda c=program: execute(c, lm)["logits"].flatten(0, 1)   # (C, vocab)
    title = (f"\n**{shape}** ({SHAPES[shape]['n_layer']} x {SHAPES[shape]['n_embd']}), "
             f"{n_pos} positions, {n_coef} coefficients; {rounds} rounds\n")
    return cpu_table(round_robin(cases, rounds), title)


def main() -> None:
    ap = sweep_arguments(SHAPES)
    ap.add_argument("--coefficients", type=int, default=16)
    args = ap.parse_args()
    print_each_shape(args, lambda shape, folder: run_shape(
        shape, args.positions, args.coefficients, args.rounds, folder))


if __name__ == "__main__":
    main()
