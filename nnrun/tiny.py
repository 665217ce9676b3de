"""Tiny random-weight models built from a config at run time (tests, smoke runs): nothing downloaded.

Invariant: the same name always builds the same weights (fixed seed) and the same word-level
tokenizer, saved with `save_pretrained` so that they load through the ordinary loading path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

VOCAB = (
    "<unk> <pad> <eos> the a an is in of to and on at was were city country language "
    "eiffel tower colosseum louvre kremlin paris rome london moscow france italy england russia "
    "french italian english russian when mary john went store gave drink bag cat dog sat mat ran "
    "big small red blue green one two three four five six seven eight nine ten , . ? !"
).split()

SHAPES = {
    "tiny-gpt2": dict(arch="gpt2", layers=2, hidden=32, heads=4),
    "tiny-gpt2-4l": dict(arch="gpt2", layers=4, hidden=64, heads=4),
    "tiny-llama": dict(arch="llama", layers=2, hidden=32, heads=4),
    "tiny-neox": dict(arch="gpt_neox", layers=2, hidden=32, heads=4),
}


def cache_root() -> Path:
    """Where built models are kept between runs (NNRUN_CACHE, else ~/.cache/nnrun)."""
    return Path(os.environ.get("NNRUN_CACHE", Path.home() / ".cache" / "nnrun"))


def build_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<eos>")


def build_config(name: str):
    """A transformers config of the named tiny shape (eager attention: exact, hookable numerics)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    s = SHAPES[name]
    common = dict(vocab_size=len(VOCAB), bos_token_id=2, eos_token_id=2, pad_token_id=1)
    if s["arch"] == "gpt2":
        cfg = GPT2Config(n_layer=s["layers"], n_embd=s["hidden"], n_head=s["heads"],
                         n_positions=128, **common)
    elif s["arch"] == "llama":
        cfg = LlamaConfig(num_hidden_layers=s["layers"], hidden_size=s["hidden"],
                          intermediate_size=2 * s["hidden"], num_attention_heads=s["heads"],
                          num_key_value_heads=s["heads"] // 2, max_position_embeddings=128,
                          **common)
    else:
        cfg = GPTNeoXConfig(num_hidden_layers=s["layers"], hidden_size=s["hidden"],
                            intermediate_size=2 * s["hidden"], num_attention_heads=s["heads"],
                            max_position_embeddings=128, **common)
    cfg._attn_implementation = "eager"
    return cfg


def ensure_tiny_model(name: str, seed: int = 0) -> Path:
    """Build (once) and return the directory of the named tiny model."""
    if name not in SHAPES:
        raise KeyError(name)
    key = hashlib.sha256(f"{name}:{seed}:{' '.join(VOCAB)}".encode()).hexdigest()[:10]
    out = cache_root() / "tiny" / f"{name}-{key}"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(name))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    build_tokenizer().save_pretrained(tmp)
    try:
        os.replace(tmp, out)   # atomic: a concurrent builder's finished copy is as good as ours
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def reference_model(name: str, attn_implementation: str | None = None):
    """Plain transformers model (eval) and tokenizer of a built-in model, for references that
    bypass nnrun and nnsight entirely (tests, benchmarks). The attention kernel is transformers'
    default (SDPA), as nnrun loads it with `model.attn_implementation=auto`, so that reads can
    be compared bit for bit; pass "eager" for references of attention weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nnrun.models import ModelSpec, resolve_path

    path = resolve_path(ModelSpec(name=name, path=f"builtin:{name}"))
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation)
    return hf.eval(), AutoTokenizer.from_pretrained(path)
