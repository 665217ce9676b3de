"""Train the bundled demo model on the synthetic corpus, deterministically, on a few CPU cores.

    python -m nnrun.demo.train --out nnrun/assets/demo [--seed 0] [--arch gpt2|llama]

Trains a small decoder-only transformer with a standard ``transformers`` architecture
(``GPT2LMHeadModel``, or a ``LlamaForCausalLM`` twin of the same size), saves it with
``save_pretrained`` (safetensors) together with the tokenizer, then reloads it from disk and writes
the held-out accuracy per task, the wall time, seed, step count and exact command to ``eval.json``.

Determinism: the same seed gives the same initial weights (``torch.manual_seed``), the same data
stream (a seeded ``random.Random``), no dropout, a fixed thread count and deterministic torch
algorithms, hence the same weights and the same ``eval.json`` accuracies on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shlex
import sys
import time
from pathlib import Path

import torch

from nnrun.demo import corpus
from nnrun.demo.evaluate import evaluate, evaluate_model
from nnrun.demo.tokenizer import build_tokenizer, save_tokenizer

CONTEXT = 64  # longest corpus document is 21 tokens; the headroom is for users' own prompts


def build_model(arch: str, tokenizer, d_model: int, n_layer: int, n_head: int):
    """A fresh, untrained model of a standard architecture sized for the word-level vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=d_model, n_layer=n_layer,
            n_head=n_head, n_inner=4 * d_model,
            # No dropout: it is the one source of randomness not fixed by the data order.
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            tie_word_embeddings=True, attn_implementation="eager", **ids,
        )
        return GPT2LMHeadModel(config)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=4 * d_model,
            num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
            max_position_embeddings=CONTEXT, tie_word_embeddings=True,
            attn_implementation="eager", **ids,
        )
        return LlamaForCausalLM(config)
    raise ValueError(f"unknown arch {arch!r}")


def make_batch(rng: random.Random, tokenizer, batch_size: int) -> torch.Tensor:
    """Next batch of the seeded stream: documents + <eos>, right-padded with <pad>.

    Each row starts at position 0 (no packing) because prompts are scored from position 0 too.
    With right padding, causal attention keeps pads out of the real positions; pad labels are
    ignored in the loss.
    """
    docs = [tokenizer(corpus.training_example(rng)[1], add_special_tokens=False).input_ids
            + [tokenizer.eos_token_id] for _ in range(batch_size)]
    width = max(map(len, docs))
    return torch.tensor([d + [tokenizer.pad_token_id] * (width - len(d)) for d in docs])


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def quick_eval(model, tokenizer) -> dict[str, float]:
    """In-memory held-out accuracy, for progress logs only (eval.json reloads from disk)."""
    model.eval()
    accs = {task: round(acc, 4) for task, acc in evaluate_model(model, tokenizer).items()}
    model.train()
    return accs


def make_optimizer(model, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW; biases, LayerNorm/RMSNorm gains are not decayed (standard practice)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))


def train_loop(model, tokenizer, args: argparse.Namespace) -> float:
    """Run ``args.steps`` optimiser steps on the seeded stream; returns the last batch's loss."""
    rng = random.Random(args.seed)
    opt = make_optimizer(model, args)
    pad = tokenizer.pad_token_id
    start = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, args.steps, args.lr, args.warmup)
        batch = make_batch(rng, tokenizer, args.batch_size)
        loss = model(input_ids=batch, attention_mask=(batch != pad).long(),
                     labels=batch.masked_fill(batch == pad, -100)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == args.steps:
            msg = f"step {step}/{args.steps} loss {loss.item():.4f} " \
                  f"t {time.perf_counter() - start:.0f}s"
            if args.eval_every and step % args.eval_every == 0:
                msg += f" {quick_eval(model, tokenizer)}"
            print(msg, flush=True)
    model.eval()
    return loss.item()


def save_and_report(model, tokenizer, args: argparse.Namespace, train_time: float,
                    final_loss: float) -> dict:
    """Save model + tokenizer, re-evaluate from disk, write and return the eval.json report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # safetensors writes the file owner-only (0600); the asset ships in the package, so make it
    # readable like the other files.
    (out / "model.safetensors").chmod(0o644)
    save_tokenizer(tokenizer, out)
    # Reload from disk, exactly as users and tests do, so eval.json describes the shipped files.
    accuracy = evaluate(out)
    argv = sys.argv[1:] if args.argv is None else args.argv
    report = {
        "held_out_accuracy": accuracy,
        "held_out_examples": {t: len(corpus.eval_examples(t)) for t in corpus.TASKS},
        "arch": args.arch,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "training_time_s": round(train_time, 1),
        "final_loss": round(final_loss, 4),
        "model_safetensors_sha256": hashlib.sha256(
            (out / "model.safetensors").read_bytes()).hexdigest(),
        "torch_version": torch.__version__,
        "command": "python -m nnrun.demo.train " + shlex.join(argv),
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def train(args: argparse.Namespace) -> dict:
    """Train, save and evaluate one model as configured by ``args``; returns the eval.json dict."""
    # One thread by default: on a shared 2-core machine two OpenMP threads ran ~6x slower than
    # one (they spin waiting for each other); a fixed count also keeps CPU reductions reproducible.
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)  # initial weights
    tokenizer = build_tokenizer()
    model = build_model(args.arch, tokenizer, args.d_model, args.n_layer, args.n_head)
    start = time.perf_counter()
    final_loss = train_loop(model, tokenizer, args)
    report = save_and_report(model, tokenizer, args, time.perf_counter() - start, final_loss)
    print(json.dumps(report, indent=2))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the nnrun demo model.")
    p.add_argument("--out", required=True, help="output directory (e.g. nnrun/assets/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=0,
                   help="log in-memory held-out accuracy every N steps (0: never)")
    args = p.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
