"""Word-level tokenizer of the demo model, built from the corpus vocabulary.

One token per word (plus "," as its own token) makes every subject, name and answer a single
token, so prompts line up position by position for patching and answers are single-token
continuations. The tokenizer is a ``tokenizers`` WordLevel model with a lowercase normaliser and
the Whitespace pre-tokenizer -- which drops the leading space of a continuation such as " paris",
so prompt and answer can be tokenized separately -- wrapped in ``PreTrainedTokenizerFast`` so that
``save_pretrained`` / ``AutoTokenizer.from_pretrained`` work offline.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nnrun.demo.corpus import vocabulary

UNK, PAD, EOS = "<unk>", "<pad>", "<eos>"
SPECIAL_TOKENS = (UNK, PAD, EOS)


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Tokenizer with ids 0, 1, 2 = <unk>, <pad>, <eos>, then ``words`` (default: the corpus)."""
    words = vocabulary() if words is None else words
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # No decoder: tokenizers then joins tokens with single spaces, which round-trips the corpus
    # (its punctuation is already written space-separated, "store , john").
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=UNK, pad_token=PAD, eos_token=EOS,
        model_max_length=64,
    )
    # No BOS: prompts are scored from their first word, exactly as in training.
    return tok


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir) -> None:
    """``save_pretrained`` plus a class name every transformers version can load.

    transformers 5 records its internal class ("TokenizersBackend"), which transformers 4 does not
    know; "PreTrainedTokenizerFast" loads the same tokenizer.json in both.
    """
    tokenizer.save_pretrained(out_dir)
    path = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")
