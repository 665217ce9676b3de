"""Contrastive prompt pairs for activation patching on the demo model, from its held-out split.

``python -m nnrun.demo.datasets --task facts|ioi|induction --n N --seed S --out FILE.jsonl
[--templates T1,T2,...] [--measure]``

Writes one JSON object per line. Every row is a clean prompt, a corrupt prompt with exactly the same
number of tokens (asserted for every row), and two single-token continuations, ``answer`` (correct
on the clean prompt) and ``foil`` (the competitor), both written with a leading space (" paris")
as nnrun expects. Every word is in the demo tokenizer's vocabulary (checked against
``nnrun/assets/demo/tokenizer.json``), rows are distinct, and the same (task, n, seed) always gives
the same bytes. Clean prompts come from the held-out split of :mod:`nnrun.demo.corpus`, so the
demo model's accuracy on them is the held-out accuracy of its model card.

Tasks and their corruptions:

* **facts** -- clean: a (subject, relation) prompt in the template held out for that subject;
  corrupt: the same template with another subject whose answer differs, chosen among the subjects
  for which that template is held out too (so neither prompt was seen in training). The prompts
  differ at exactly one token, the subject. ``foil`` is the corrupt prompt's answer. Pairs are
  drawn in rounds: every clean prompt gets one corrupt partner before any gets a second, so the
  first 144 rows have 144 distinct clean prompts. Columns: clean, corrupt, answer, foil, subject,
  corrupt_subject, relation, template (index into ``FACT_TEMPLATES[relation]``), subject_pos
  (0-based token position of the subject in both prompts).
* **ioi** -- clean: an IOI sentence on a held-out name pair, "when mary and john went to the store
  , john gave a drink to" (answer " mary", the indirect object IO; foil " john", the subject S).
  Corruption: the **ABC** corruption -- the second mention of S (S2) is replaced by a third name C
  ("... , alice gave a drink to"), so no name is repeated and nothing tells IO from S; the prompts
  differ at exactly one token (S2). Rows cycle through the 30 held-out name pairs. Columns: clean,
  corrupt, answer, foil, io, s, c (the third name), template, io_pos, s_pos, s2_pos (0-based token
  positions of IO and S in the first clause and of S2 / C in the second).
* **induction** -- clean: a held-out random sequence of distinct filler words followed by its first
  k words (k >= 1), answer the (k+1)-th word; corrupt: the first half replaced by a sequence of the
  same length made of other filler words, so the second half repeats nothing and the answer does
  not occur in the corrupt prompt. ``foil`` is the corrupt first half's word at the answer's offset
  (what copying "the word k places into the sequence" would predict on the corrupt prompt); it
  does not occur in the clean prompt. Columns: clean, corrupt, answer, foil, seq_len, k.

``--templates`` keeps only clean prompts of the given templates (facts: ``RELATION:INDEX``; ioi:
``INDEX``). Use it to make every row of a file the same length with the same roles at the same
positions: the shipped files (``experiments/data/``) use ``city:0,country:0`` ("the famous {s} is
located in the city|country of": 9 tokens, subject at position 2) and ioi ``0,1,2,4`` (14 tokens;
IO/S at 1 and 3, S2 at 9). Rows of different lengths get left-padded when batched, and the demo
model has learned absolute positions and was trained without padding: unless the positions are
shifted with the padding (``position_ids`` from the attention mask), its answers on left-padded
prompts are wrong (measured with transformers 5.23: facts accuracy 100 % -> 63 % on rows of mixed
length batched together).

``--measure`` prints the demo model's accuracy and mean logit differences on the rows.

Stops with a clear error (exit 2) when ``--n`` exceeds the number of distinct pairs the task can
give (facts: 1,558, or 262 with ``city:0,country:0``; ioi: 960,000, or 768,000 with four templates;
induction: practically unbounded).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from nnrun.demo import DEMO_MODEL_DIR
from nnrun.demo import corpus as C

TASKS = C.TASKS
TOKENIZER_JSON = DEMO_MODEL_DIR / "tokenizer.json"

#: Columns of each task's rows, in the order they are written.
COLUMNS: dict[str, tuple[str, ...]] = {
    "facts": ("clean", "corrupt", "answer", "foil", "subject", "corrupt_subject", "relation",
              "template", "subject_pos"),
    "ioi": ("clean", "corrupt", "answer", "foil", "io", "s", "c", "template", "io_pos", "s_pos",
            "s2_pos"),
    "induction": ("clean", "corrupt", "answer", "foil", "seq_len", "k"),
}


class NotEnoughPairs(ValueError):
    """More rows were asked for than the task has distinct pairs."""


#: Consecutive duplicate draws after which a sampled task (ioi, induction) gives up; only reached
#: when ``n`` comes close to the (very large) number of distinct pairs.
_MAX_DUPLICATE_DRAWS = 10_000


def _distinct(task: str, n: int, draw: Callable[[], dict]) -> Iterator[dict]:
    """Rows from ``draw()`` until ``n`` have distinct (clean, corrupt); gives up after
    ``_MAX_DUPLICATE_DRAWS`` duplicates in a row."""
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    while len(seen) < n:
        row = draw()
        key = (row["clean"], row["corrupt"])
        if key in seen:
            duplicates += 1
            if duplicates > _MAX_DUPLICATE_DRAWS:
                raise NotEnoughPairs(f"{task}: no new distinct pair after "
                                     f"{_MAX_DUPLICATE_DRAWS} draws; asked for {n}")
            continue
        duplicates = 0
        seen.add(key)
        yield row


# --------------------------------------------------------------------------------------------------
# facts
# --------------------------------------------------------------------------------------------------


def fact_pair_candidates(templates: set[tuple[str, int]] | None = None
                         ) -> dict[tuple[str, str], list[str]]:
    """(subject, relation) → corrupt subjects: same held-out template, different answer.

    Keys are the held-out (subject, relation) of the corpus (144 in all), in corpus order; with
    ``templates`` (a set of (relation, template index)), only those whose held-out template is one
    of them.
    """
    out: dict[tuple[str, str], list[str]] = {}
    for subject, relation in itertools.product(C.SUBJECTS, C.RELATIONS):
        t = C.held_out_template(subject, relation)
        if templates is not None and (relation, t) not in templates:
            continue
        answer = C.fact_answer(subject, relation)
        out[(subject, relation)] = [
            other for other in C.SUBJECTS
            if other != subject and C.held_out_template(other, relation) == t
            and C.fact_answer(other, relation) != answer
        ]
    return out


def _facts(n: int, rng: random.Random, templates: list[str] | None) -> Iterator[dict]:
    chosen = None if templates is None else {_fact_template(t) for t in templates}
    candidates = fact_pair_candidates(chosen)
    total = sum(len(v) for v in candidates.values())
    if n > total:
        which = "" if templates is None else f" with templates {','.join(templates)}"
        raise NotEnoughPairs(f"facts has {total} distinct (clean, corrupt) pairs on the held-out "
                             f"split{which}; asked for {n}")
    keys = list(candidates)
    rng.shuffle(keys)
    partners = {k: rng.sample(v, len(v)) for k, v in candidates.items()}
    made = 0
    for round_ in itertools.count():
        for subject, relation in keys:
            if made == n:
                return
            if round_ >= len(partners[(subject, relation)]):
                continue
            other = partners[(subject, relation)][round_]
            t = C.held_out_template(subject, relation)
            template = C.FACT_TEMPLATES[relation][t]
            yield {
                "clean": C.fact_prompt(subject, relation, t),
                "corrupt": C.fact_prompt(other, relation, t),
                "answer": " " + C.fact_answer(subject, relation),
                "foil": " " + C.fact_answer(other, relation),
                "subject": subject,
                "corrupt_subject": other,
                "relation": relation,
                "template": t,
                "subject_pos": template.split().index("{s}"),
            }
            made += 1


def _fact_template(spec: str) -> tuple[str, int]:
    """``"city:0"`` → ("city", 0), checked against FACT_TEMPLATES."""
    relation, _, index = spec.partition(":")
    if relation not in C.FACT_TEMPLATES or not index.isdigit() \
            or int(index) >= len(C.FACT_TEMPLATES[relation]):
        raise ValueError(f"facts template {spec!r}: expected RELATION:INDEX with RELATION one of "
                         f"{', '.join(C.RELATIONS)} and INDEX 0..{C.N_FACT_TEMPLATES - 1}")
    return relation, int(index)


# --------------------------------------------------------------------------------------------------
# ioi
# --------------------------------------------------------------------------------------------------


def ioi_pair_count(n_templates: int = len(C.IOI_TEMPLATES)) -> int:
    """Distinct (clean, corrupt) IOI pairs: pair × name order × repeated name × template × place
    × object × third name."""
    return (len(C.IOI_HELD_OUT_PAIRS) * 2 * 2 * n_templates * len(C.PLACES)
            * len(C.OBJECTS) * (len(C.NAMES) - 2))


def _ioi_templates(templates: list[str] | None) -> list[int]:
    if templates is None:
        return list(range(len(C.IOI_TEMPLATES)))
    out = []
    for spec in templates:
        if not spec.isdigit() or int(spec) >= len(C.IOI_TEMPLATES):
            last = len(C.IOI_TEMPLATES) - 1
            raise ValueError(f"ioi template {spec!r}: expected an index 0..{last}")
        out.append(int(spec))
    return sorted(set(out))


def _ioi(n: int, rng: random.Random, templates: list[str] | None) -> Iterator[dict]:
    allowed = _ioi_templates(templates)
    total = ioi_pair_count(len(allowed))
    if n > total:
        raise NotEnoughPairs(f"ioi has {total} distinct (clean, corrupt) pairs on the held-out "
                             f"name pairs; asked for {n}")
    pairs = sorted(tuple(sorted(p)) for p in C.IOI_HELD_OUT_PAIRS)
    rng.shuffle(pairs)
    turn = itertools.count()

    def draw() -> dict:
        a, b = rng.sample(pairs[next(turn) % len(pairs)], 2)   # a, b: first-clause order
        s, io = (a, b) if rng.random() < 0.5 else (b, a)
        t = rng.choice(allowed)
        place, obj = rng.choice(C.PLACES), rng.choice(C.OBJECTS)
        c = rng.choice([name for name in C.NAMES if name not in (a, b)])
        template = C.IOI_TEMPLATES[t]

        def fill(repeated: str) -> str:
            return template.format(a=a, b=b, c=repeated, place=place, obj=obj)

        words = template.split()
        first = {a: words.index("{a}"), b: words.index("{b}")}
        return {
            "clean": fill(s), "corrupt": fill(c), "answer": " " + io, "foil": " " + s,
            "io": io, "s": s, "c": c, "template": t,
            "io_pos": first[io], "s_pos": first[s], "s2_pos": words.index("{c}"),
        }

    return _distinct("ioi", n, draw)


# --------------------------------------------------------------------------------------------------
# induction
# --------------------------------------------------------------------------------------------------

def _induction(n: int, rng: random.Random, templates: list[str] | None) -> Iterator[dict]:
    if templates is not None:
        raise ValueError("induction has no templates")
    def draw() -> dict:
        seq = C._random_sequence(rng, held_out=True)
        k = rng.randint(1, len(seq) - 1)
        rest = [w for w in C.FILLERS if w not in seq]
        other = rng.sample(rest, len(seq))
        return {"clean": " ".join(seq + seq[:k]), "corrupt": " ".join(other + seq[:k]),
                "answer": " " + seq[k], "foil": " " + other[k], "seq_len": len(seq), "k": k}

    return _distinct("induction", n, draw)


# --------------------------------------------------------------------------------------------------
# Checks and entry points
# --------------------------------------------------------------------------------------------------

_GENERATORS: dict[str, Callable[[int, random.Random, list[str] | None], Iterator[dict]]] = {
    "facts": _facts, "ioi": _ioi, "induction": _induction,
}


def load_tokenizer(tokenizer_json: Path = TOKENIZER_JSON):
    """The demo model's tokenizer as a ``tokenizers.Tokenizer`` (no transformers import)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json))


def token_ids(tokenizer, text: str) -> list[int]:
    """Ids of ``text`` as nnrun tokenizes prompts and answers (no special tokens added)."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def check_row(task: str, row: dict, tokenizer) -> None:
    """Assert the invariants every row must satisfy (raises AssertionError naming the row)."""
    assert tuple(row) == COLUMNS[task], (task, list(row))
    special = {tokenizer.token_to_id(t) for t in ("<unk>", "<pad>", "<eos>")}
    clean, corrupt = token_ids(tokenizer, row["clean"]), token_ids(tokenizer, row["corrupt"])
    assert len(clean) == len(corrupt), f"clean and corrupt token counts differ: {row}"
    assert clean != corrupt, f"clean equals corrupt: {row}"
    ids = {}
    for key in ("answer", "foil"):
        assert row[key].startswith(" "), f"{key} has no leading space: {row}"
        ids[key] = token_ids(tokenizer, row[key])
        assert len(ids[key]) == 1, f"{key} is not one token: {row}"
    assert ids["answer"] != ids["foil"], f"answer equals foil: {row}"
    for i in clean + corrupt + ids["answer"] + ids["foil"]:
        assert i not in special, (
            f"{tokenizer.id_to_token(i)!r}: a word outside the demo tokenizer's vocabulary: {row}")


def generate(task: str, n: int, seed: int = 0, templates: list[str] | None = None) -> list[dict]:
    """``n`` distinct, checked rows of ``task``; the same arguments always give the same rows.

    ``templates`` restricts the clean prompts' templates: ``["city:0", "country:0"]`` for facts
    (RELATION:INDEX into ``corpus.FACT_TEMPLATES``), ``["0", "1"]`` for ioi (indices into
    ``corpus.IOI_TEMPLATES``); None: all of them.

    Raises:
        NotEnoughPairs: ``n`` exceeds the task's number of distinct pairs.
        ValueError: unknown task or ``n`` < 1.
    """
    if task not in _GENERATORS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(f"pairs-{task}-{seed}")  # string seeds are stable across Python runs
    rows = list(_GENERATORS[task](n, rng, templates))
    tokenizer = load_tokenizer()
    keys = set()
    for row in rows:
        check_row(task, row, tokenizer)
        keys.add((row["clean"], row["corrupt"]))
    assert len(rows) == n and len(keys) == n, "rows are not distinct"
    return rows


def measure(rows: list[dict], model_dir: str | Path = DEMO_MODEL_DIR) -> dict:
    """How the demo model does on the pairs (see `nnrun.demo.evaluate.measure_pairs`)."""
    from nnrun.demo.evaluate import measure_pairs

    return measure_pairs(rows, model_dir)


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nnrun.demo.datasets",
        description="Write contrastive prompt pairs (JSONL) for the demo model's tasks, drawn "
                    "from the held-out split.")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--n", type=int, required=True, help="number of rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="-", help="output .jsonl file ('-': standard output)")
    parser.add_argument("--templates", default=None,
                        help="comma-separated templates of the clean prompts: RELATION:INDEX for "
                             "facts (city:0,country:0), INDEX for ioi (0,1,2,4); default: all")
    parser.add_argument("--measure", action="store_true",
                        help="also print the demo model's accuracy and mean logit differences "
                             "(answer - foil) on the rows, to standard error")
    args = parser.parse_args(argv)
    try:
        templates = None if args.templates is None else args.templates.split(",")
        rows = generate(args.task, args.n, args.seed, templates)
    except (NotEnoughPairs, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    text = to_jsonl(rows)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        print(f"wrote {len(rows)} {args.task} pairs to {out}", file=sys.stderr)
    if args.measure:
        print(json.dumps(measure(rows), indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
