"""The shipped datasets work on the demo model: it prefers answer over foil on the clean prompts,
and the corrupt prompts lower the logit difference clearly (which is what patching measures).

Plain transformers, each prompt run on its own (no padding, no nnsight): an independent check of
`nnrun.demo.datasets.measure` and of the figures in experiments/data/README.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import re
from pathlib import Path

import pytest
import torch

from nnrun.demo import DEMO_MODEL_DIR
from nnrun.demo import datasets as D

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "experiments" / "data"
SHIPPED = {"facts": DATA / "facts_pairs.jsonl", "ioi": DATA / "ioi_pairs.jsonl"}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than contended OpenMP threads
    yield model, tok
    torch.set_num_threads(threads)


_DIFFS: dict[str, dict[str, torch.Tensor]] = {}


def shipped_diffs(task: str, model_and_tokenizer) -> tuple[list[dict], dict[str, torch.Tensor]]:
    rows = [json.loads(line) for line in SHIPPED[task].read_text().splitlines()]
    if task not in _DIFFS:
        _DIFFS[task] = logit_diffs(*model_and_tokenizer, rows)
    return rows, _DIFFS[task]


@torch.no_grad()
def logit_diffs(model, tok, rows: list[dict]) -> dict[str, torch.Tensor]:
    """Per row: logit(answer) - logit(foil) at the last position of clean and corrupt; and
    whether the answer is the clean prompt's top-1 token."""
    out = {"clean": [], "corrupt": [], "top1": []}
    for row in rows:
        (answer,) = tok(row["answer"], add_special_tokens=False).input_ids
        (foil,) = tok(row["foil"], add_special_tokens=False).input_ids
        for side in ("clean", "corrupt"):
            ids = torch.tensor([tok(row[side], add_special_tokens=False).input_ids])
            logits = model(ids).logits[0, -1]
            out[side].append((logits[answer] - logits[foil]).item())
            if side == "clean":
                out["top1"].append(logits.argmax().item() == answer)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def summary(d: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"clean_accuracy": (d["clean"] > 0).double().mean().item(),
            "clean_top1": d["top1"].double().mean().item(),
            "mean_logit_diff_clean": d["clean"].mean().item(),
            "mean_logit_diff_corrupt": d["corrupt"].mean().item()}


def check_contrast(d: dict[str, torch.Tensor]) -> None:
    clean, corrupt = d["clean"], d["corrupt"]
    assert (clean > 0).double().mean() >= 0.9, "the model must prefer answer over foil"
    # Patching needs a clear gap: the corrupt mean is far below the clean mean, and most rows drop.
    assert clean.mean() - corrupt.mean() >= 5.0, (clean.mean(), corrupt.mean())
    assert corrupt.mean() <= 0.25 * clean.mean(), (clean.mean(), corrupt.mean())
    assert (corrupt < clean).double().mean() >= 0.9


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_shipped_dataset_contrast_on_the_demo_model(task, model_and_tokenizer):
    _, d = shipped_diffs(task, model_and_tokenizer)
    check_contrast(d)
    s = summary(d)
    print(task, s)
    if task == "facts":  # the corrupt prompt answers its own subject: the difference flips
        assert s["mean_logit_diff_corrupt"] < -5
    else:                # ABC: IO and S become interchangeable, the difference is near 0
        assert abs(s["mean_logit_diff_corrupt"]) < 2


def test_induction_pairs_contrast_on_the_demo_model(model_and_tokenizer):
    check_contrast(logit_diffs(*model_and_tokenizer, D.generate("induction", 128, seed=0)))


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_readme_figures_and_measure_agree_with_an_independent_loop(task, model_and_tokenizer):
    rows, d = shipped_diffs(task, model_and_tokenizer)
    mine = summary(d)
    theirs = D.measure(rows)
    for key, value in mine.items():
        assert theirs[key] == pytest.approx(value, abs=1e-4), key
    # experiments/data/README.md table row: | `file` | a / n | b / n | +x | -y |
    text = (DATA / "README.md").read_text().replace("\u2212", "-")
    row = re.search(rf"\| `{SHIPPED[task].name}` \| (\d+) / (\d+) \| (\d+) / \d+ \| "
                    rf"([+-][\d.]+) \| ([+-][\d.]+) \|", text)
    assert row, f"README has no figures row for {SHIPPED[task].name}"
    n = len(rows)
    assert int(row[2]) == n
    assert int(row[1]) == round(mine["clean_accuracy"] * n)
    assert int(row[3]) == round(mine["clean_top1"] * n)
    assert float(row[4]) == pytest.approx(mine["mean_logit_diff_clean"], abs=0.01)
    assert float(row[5]) == pytest.approx(mine["mean_logit_diff_corrupt"], abs=0.01)
