"""The bundled demo model: shipped figures reproduce, corpus split is clean, built-in prompts work.

The non-slow tests load the shipped model (~3 MB) once and run in a few seconds on a CPU; the slow
test retrains the model (several minutes) and documents that training is reproducible.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network

import json
import re
import shlex

import pytest
import torch

from nnrun.demo import DEMO_MODEL_DIR, corpus
from nnrun.demo.evaluate import answer_token, evaluate, load, predict
from nnrun.demo.tokenizer import build_tokenizer

EVAL_JSON = DEMO_MODEL_DIR / "eval.json"


@pytest.fixture(scope="module")
def shipped():
    return json.loads(EVAL_JSON.read_text())


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    return load(DEMO_MODEL_DIR)


# --- (a) the shipped model reproduces its published figures ------------------------------------


def test_shipped_files_present_and_small():
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                 "eval.json", "MODEL_CARD.md"):
        assert (DEMO_MODEL_DIR / name).is_file(), name
    assert (DEMO_MODEL_DIR / "model.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_evaluate_reproduces_eval_json(shipped):
    assert evaluate(DEMO_MODEL_DIR) == shipped["held_out_accuracy"]


def test_model_card_reports_eval_json(shipped):
    card = (DEMO_MODEL_DIR / "MODEL_CARD.md").read_text()
    for task, acc in shipped["held_out_accuracy"].items():
        n = shipped["held_out_examples"][task]
        row = rf"\|\s*{task}\s*\|\s*{n}\s*\|\s*{round(acc * n)}\s*\|\s*{acc * 100:.1f}\s*%"
        assert re.search(row, card), f"model card row for {task} does not match eval.json"
    assert shipped["command"] in card


# --- (b) the corpus is deterministic and its split is clean -------------------------------------


def test_corpus_deterministic_given_seed():
    assert corpus.training_text(300, seed=5) == corpus.training_text(300, seed=5)
    assert corpus.training_text(300, seed=5) != corpus.training_text(300, seed=6)
    for task in corpus.TASKS:
        assert corpus.eval_examples(task) == corpus.eval_examples(task)
        assert len(set(corpus.eval_examples(task))) == len(corpus.eval_examples(task))


def test_held_out_examples_not_in_training_text():
    train = corpus.training_text(20_000, seed=0)
    train_set = set(train)
    for task in corpus.TASKS:
        for prompt, answer in corpus.eval_examples(task):
            assert prompt + answer not in train_set
    # Induction documents are whole repeats: their first half must never be a held-out sequence.
    fillers = set(corpus.FILLERS)
    for doc in train:
        words = doc.split()
        if set(words) <= fillers:
            assert not corpus.is_held_out_sequence(words[: len(words) // 2])
    for prompt, _ in corpus.eval_examples("induction"):
        words = prompt.split()
        n = len(set(words))  # the sequence's words are distinct, so its length is this
        assert corpus.is_held_out_sequence(words[:n])


def test_held_out_facts_and_names_are_learnable():
    # Every held-out fact is taught in training with other templates; every held-out IOI name
    # occurs in training with other names -- the split tests generalisation, not unseen facts.
    train = set(corpus.training_text(20_000, seed=0))
    for prompt, answer in corpus.eval_examples("facts"):
        subject = prompt.split()[[w in corpus.SUBJECTS for w in prompt.split()].index(True)]
        assert any(subject in t.split() and t.endswith(answer) for t in train), prompt
    held_out_names = {n for pair in corpus.IOI_HELD_OUT_PAIRS for n in pair}
    assert all(any(name in t.split() for t in train) for name in held_out_names)


# --- (c) tokenizer ------------------------------------------------------------------------------


def test_tokenizer_round_trips_and_aligns_patching_prompts(model_and_tokenizer):
    _, tok = model_and_tokenizer
    for prompt in (corpus.PATCHING_CLEAN, corpus.PATCHING_CORRUPT, corpus.LOGIT_LENS_PROMPT,
                   corpus.IOI_PROMPT, corpus.INDUCTION_PROMPT):
        ids = tok(prompt, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == prompt
    clean = tok(corpus.PATCHING_CLEAN, add_special_tokens=False).input_ids
    corrupt = tok(corpus.PATCHING_CORRUPT, add_special_tokens=False).input_ids
    assert len(clean) == len(corrupt)
    diff = [i for i, (a, b) in enumerate(zip(clean, corrupt, strict=True)) if a != b]
    assert len(diff) == 1 and diff[0] >= 2  # one subject token, at least two tokens before it


def test_shipped_tokenizer_matches_builder_and_covers_corpus(model_and_tokenizer):
    _, tok = model_and_tokenizer
    assert tok.get_vocab() == build_tokenizer().get_vocab()
    for task in corpus.TASKS:
        for prompt, answer in corpus.eval_examples(task):
            assert tok.unk_token_id not in tok(prompt, add_special_tokens=False).input_ids
            answer_token(tok, answer)  # raises unless the answer is exactly one token


# --- (d) the built-in experiments' prompts are answered correctly -------------------------------


@pytest.mark.parametrize("prompt, answer", [
    (corpus.PATCHING_CLEAN, corpus.PATCHING_ANSWER),
    (corpus.PATCHING_CORRUPT, corpus.PATCHING_FOIL),
    (corpus.LOGIT_LENS_PROMPT, corpus.LOGIT_LENS_ANSWER),
    (corpus.IOI_PROMPT, corpus.IOI_ANSWER),
    (corpus.INDUCTION_PROMPT, corpus.INDUCTION_ANSWER),
])
def test_model_answers_builtin_prompts(model_and_tokenizer, prompt, answer):
    model, tok = model_and_tokenizer
    assert predict(model, tok, [prompt]) == [answer_token(tok, answer)]


def test_ioi_answer_beats_foil(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = torch.tensor([tok(corpus.IOI_PROMPT, add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    assert logits[answer_token(tok, corpus.IOI_ANSWER)] > logits[answer_token(tok, corpus.IOI_FOIL)]


# --- slow: training is reproducible -------------------------------------------------------------


@pytest.mark.slow
def test_retraining_reproduces_shipped_accuracy(tmp_path, shipped):
    from nnrun.demo.train import parse_args, train

    argv = shlex.split(shipped["command"])[3:]  # drop "python -m nnrun.demo.train"
    out_at = argv.index("--out")
    argv[out_at + 1] = str(tmp_path)
    report = train(parse_args(argv))
    assert report["held_out_accuracy"] == shipped["held_out_accuracy"]
    assert report["steps"] == shipped["steps"] and report["seed"] == shipped["seed"]
