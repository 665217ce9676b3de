"""Held-out top-1 accuracy of a saved demo model, per task.

``evaluate(model_dir)`` loads the model and tokenizer exactly as a user would
(``AutoModelForCausalLM`` / ``AutoTokenizer``, local files only) and counts a held-out example as
correct when the argmax of the logits at the last prompt position is the answer's token. The
training script writes these figures to ``eval.json``; the tests recompute them from the shipped
files.

Usage: ``python -m nnrun.demo.evaluate nnrun/assets/demo``
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

from nnrun.demo.corpus import TASKS, eval_examples


def load(model_dir: str | Path):
    """(model, tokenizer) from a saved directory, never touching the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return model.eval(), tokenizer


def answer_token(tokenizer, answer: str) -> int:
    """Id of a single-token continuation such as " paris" (the leading space is dropped)."""
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"answer {answer!r} is not a single token: {ids}")
    return ids[0]


@torch.no_grad()
def predict(model, tokenizer, prompts: list[str]) -> list[int]:
    """Argmax next-token id after each prompt.

    Prompts are batched by token length, so no padding is needed and each prediction equals what
    the prompt gives on its own (no dependence on how padding or masks are handled).
    """
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_len[len(ids)].append(i)
    out = [0] * len(prompts)
    for idx in by_len.values():
        logits = model(torch.tensor([encoded[i] for i in idx])).logits[:, -1]
        for i, pred in zip(idx, logits.argmax(-1).tolist(), strict=True):
            out[i] = pred
    return out


def accuracy(model, tokenizer, examples: list[tuple[str, str]]) -> float:
    """Share of (prompt, answer) examples whose answer token is the top-1 prediction."""
    preds = predict(model, tokenizer, [p for p, _ in examples])
    targets = [answer_token(tokenizer, a) for _, a in examples]
    return sum(p == t for p, t in zip(preds, targets, strict=True)) / len(examples)


@contextmanager
def single_thread():
    """Run torch on one CPU thread, restoring the previous count afterwards.

    eval.json is computed this way (training runs on one thread), so the figures do not hinge on
    the machine's thread count -- a reduction order change could flip a near-tie argmax -- and a
    tiny model on a shared machine is faster on one thread than on contended OpenMP threads.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate_model(model, tokenizer) -> dict[str, float]:
    """Top-1 next-token accuracy of an in-memory model on each task's held-out set."""
    with single_thread():
        return {task: accuracy(model, tokenizer, eval_examples(task)) for task in TASKS}


def evaluate(model_dir: str | Path) -> dict[str, float]:
    """Top-1 next-token accuracy of a saved model on each task's held-out set, keyed by task."""
    return evaluate_model(*load(model_dir))


def measure_pairs(rows: list[dict], model_dir: str | Path) -> dict:
    """How the model behaves on the pairs: logit(answer) - logit(foil) at the last position.

    Returns the number of rows, the share with a positive difference on the clean prompt
    (``clean_accuracy``: the model prefers answer over foil), the share whose answer is the clean
    prompt's top-1 token, and the mean difference on the clean and on the corrupt prompts.
    Prompts are batched by token count, so no padding is involved.
    """
    model, tok = load(model_dir)
    diffs: dict[str, list[float]] = {"clean": [0.0] * len(rows), "corrupt": [0.0] * len(rows)}
    top1 = [False] * len(rows)
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_len.setdefault(len(tok(row["clean"], add_special_tokens=False).input_ids), []).append(i)
    with torch.no_grad(), single_thread():
        for idx in by_len.values():
            answer = torch.tensor([answer_token(tok, rows[i]["answer"]) for i in idx])
            foil = torch.tensor([answer_token(tok, rows[i]["foil"]) for i in idx])
            for side in ("clean", "corrupt"):
                ids = torch.tensor([tok(rows[i][side], add_special_tokens=False).input_ids
                                    for i in idx])
                logits = model(ids).logits[:, -1]
                d = logits.gather(1, answer[:, None]) - logits.gather(1, foil[:, None])
                for i, v in zip(idx, d[:, 0].tolist(), strict=True):
                    diffs[side][i] = v
                if side == "clean":
                    for i, hit in zip(idx, (logits.argmax(-1) == answer).tolist(), strict=True):
                        top1[i] = hit
    n = len(rows)
    return {
        "rows": n,
        "clean_accuracy": sum(d > 0 for d in diffs["clean"]) / n,
        "clean_top1": sum(top1) / n,
        "mean_logit_diff_clean": sum(diffs["clean"]) / n,
        "mean_logit_diff_corrupt": sum(diffs["corrupt"]) / n,
        "corrupt_below_clean": sum(c < k for c, k in zip(diffs["corrupt"], diffs["clean"],
                                                          strict=True)) / n,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.model_dir), indent=2))


if __name__ == "__main__":
    main()
