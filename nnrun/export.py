"""Write a compiled experiment as a standalone script: python + torch + transformers + nnsight.

Invariant: the script contains the same program text nnrun runs, so running it reproduces the run's
saved tensors exactly (same model, same dtype, same device).
"""

from __future__ import annotations

from pathlib import Path

from nnrun.atomic import atomic_write_text
from nnrun.models import resolve_path

MAIN = '''

# ---- standalone entry point (added by `nnrun stage=export`) ----------------------------------
MODEL = {model!r}
REVISION = {revision!r}
DTYPE = {dtype!r}
DEVICE = {device!r}
SAVES = {saves!r}  # save node → the node whose value it writes


def load_model():
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL, revision=REVISION)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf = AutoModelForCausalLM.from_pretrained(MODEL, revision=REVISION,
                                              dtype=getattr(torch, DTYPE),
                                              attn_implementation="eager")
    return TransformersModel(hf.to(DEVICE).eval(), tokenizer=tokenizer)


def main(out_dir="export_outputs"):
    import json
    import os

    from safetensors.torch import save_file

    torch.manual_seed({seed})
    values = run(load_model())
    os.makedirs(out_dir, exist_ok=True)
    for save_node, source in SAVES.items():
        value = values[source]
        if isinstance(value, torch.Tensor):
            save_file({{save_node: value.detach().cpu().contiguous()}},
                      os.path.join(out_dir, save_node + ".safetensors"))
        else:
            with open(os.path.join(out_dir, save_node + ".json"), "w") as f:
                json.dump(value, f)
    print("wrote", ", ".join(SAVES), "to", out_dir)


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
'''


def export_script(compiled, path: Path, seed: int = 0) -> Path:
    """Write program + loader + main to `path` and return it."""
    saves = {n.id: n.sources[0] for n in compiled.graph.nodes.values()
             if n.type.op == "save"}
    spec = compiled.model
    text = compiled.program.source + MAIN.format(
        model=resolve_path(spec), revision=spec.revision, dtype=spec.dtype, device=spec.device,
        saves=saves, seed=seed)
    atomic_write_text(path, text)
    return path
