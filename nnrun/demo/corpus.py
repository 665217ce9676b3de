"""Seeded synthetic corpus for the demo model: three tasks with well-known mechanisms.

* **facts** -- factual recall ("the famous eiffel is located in the city of paris"): 48 single-token
  subjects (landmarks and companies), three relations (city, country, language) and four templates
  per relation. Every subject and every answer is one token of the word-level tokenizer and every
  template has at least two tokens before the subject, so a clean prompt and a corrupted prompt
  (same template, other subject) have identical lengths and differ at exactly one position --
  which is what position-by-position activation patching needs.
* **ioi** -- indirect object identification ("when mary and john went to the store , john gave a
  drink to mary"): 18 single-token names, five templates, ten places, ten objects.
* **induction** -- a random sequence of distinct filler words, repeated: "a b c d e a b c d" -> "e".

Train / held-out split (fixed, independent of the training seed so that every seed is evaluated on
the same held-out set):

* facts are held out by *template*: for subject ``i`` and relation ``r`` the template
  ``(i + r) % 4`` is never shown with that subject for that relation, while the three other
  templates are. Every template is still seen in training with three quarters of the subjects, so
  the held-out accuracy measures whether the model stored the fact independently of its phrasing.
* IOI is held out by *name pair*: 20% of the unordered name pairs never occur together in
  training (each name still occurs in training with other names).
* induction is held out by *sequence*: a sequence is held out when a stable hash of it falls in a
  fixed bucket; training rejects those sequences, evaluation draws only them.

Evaluation examples are ``(prompt, answer)`` pairs whose answer starts with a space (" paris"):
nnrun tokenizes answers as continuations of the prompt, and the word-level tokenizer's whitespace
pre-tokenizer maps " paris" to the single token "paris".
"""

from __future__ import annotations

import itertools
import random
import zlib

TASKS = ("facts", "ioi", "induction")

#: Seed of the held-out example generators; fixed so the held-out sets never depend on training.
EVAL_SEED = 1234

# --------------------------------------------------------------------------------------------------
# Factual recall
# --------------------------------------------------------------------------------------------------

#: city -> (country, language). Each value is a single word so each answer is a single token.
CITIES: dict[str, tuple[str, str]] = {
    "paris": ("france", "french"),
    "rome": ("italy", "italian"),
    "turin": ("italy", "italian"),
    "milan": ("italy", "italian"),
    "london": ("england", "english"),
    "berlin": ("germany", "german"),
    "munich": ("germany", "german"),
    "stuttgart": ("germany", "german"),
    "moscow": ("russia", "russian"),
    "madrid": ("spain", "spanish"),
    "barcelona": ("spain", "spanish"),
    "athens": ("greece", "greek"),
    "cairo": ("egypt", "arabic"),
    "tokyo": ("japan", "japanese"),
    "kyoto": ("japan", "japanese"),
    "beijing": ("china", "chinese"),
    "amsterdam": ("netherlands", "dutch"),
    "lisbon": ("portugal", "portuguese"),
    "istanbul": ("turkey", "turkish"),
    "vienna": ("austria", "german"),
    "prague": ("czechia", "czech"),
    "seoul": ("korea", "korean"),
    "stockholm": ("sweden", "swedish"),
    "rio": ("brazil", "portuguese"),
    "agra": ("india", "hindi"),
    "sydney": ("australia", "english"),
}

#: subject -> city. Order matters: the index of a subject decides its held-out templates.
SUBJECTS: dict[str, str] = {
    "eiffel": "paris", "louvre": "paris", "sorbonne": "paris", "montmartre": "paris",
    "colosseum": "rome", "pantheon": "rome", "trevi": "rome",
    "westminster": "london", "buckingham": "london", "wembley": "london",
    "reichstag": "berlin",
    "bmw": "munich", "siemens": "munich", "oktoberfest": "munich",
    "kremlin": "moscow", "bolshoi": "moscow",
    "prado": "madrid", "bernabeu": "madrid",
    "sagrada": "barcelona",
    "acropolis": "athens", "parthenon": "athens",
    "sphinx": "cairo", "tahrir": "cairo",
    "sony": "tokyo", "shibuya": "tokyo",
    "nintendo": "kyoto",
    "tiananmen": "beijing",
    "rijksmuseum": "amsterdam", "heineken": "amsterdam",
    "belem": "lisbon",
    "topkapi": "istanbul", "galata": "istanbul",
    "schonbrunn": "vienna", "belvedere": "vienna",
    "hradcany": "prague",
    "samsung": "seoul", "hyundai": "seoul",
    "vasa": "stockholm", "spotify": "stockholm",
    "corcovado": "rio", "maracana": "rio",
    "taj": "agra",
    "porsche": "stuttgart", "mercedes": "stuttgart",
    "fiat": "turin", "juventus": "turin",
    "prada": "milan",
    "qantas": "sydney",
}

RELATIONS = ("city", "country", "language")

#: relation -> templates. "{s}" is the subject; the answer follows the last word. Every template has
#: at least two words before the subject so patching has positions before the corrupted token.
FACT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": (
        "the famous {s} is located in the city of",
        "tourists who visit the {s} travel to the city of",
        "if you want to see the {s} , go to the city of",
        "you can find the {s} in the city of",
    ),
    "country": (
        "the famous {s} is located in the country of",
        "tourists who visit the {s} travel to the country of",
        "the home country of the {s} is",
        "every visitor to the {s} is in the country of",
    ),
    "language": (
        "the people near the {s} speak the language",
        "at the famous {s} , the guides speak",
        "the official language around the {s} is",
        "the workers at the {s} mostly speak",
    ),
}
N_FACT_TEMPLATES = 4


def fact_answer(subject: str, relation: str) -> str:
    """The answer word (no leading space) of ``relation`` for ``subject``."""
    city = SUBJECTS[subject]
    country, language = CITIES[city]
    return {"city": city, "country": country, "language": language}[relation]


def held_out_template(subject: str, relation: str) -> int:
    """Index of the template never used in training for this (subject, relation).

    Rotating by subject index spreads the held-out templates evenly, so each template is still
    trained with 3/4 of the subjects and the model can learn what it asks for.
    """
    i = list(SUBJECTS).index(subject)
    return (i + RELATIONS.index(relation)) % N_FACT_TEMPLATES


def fact_prompt(subject: str, relation: str, template: int) -> str:
    return FACT_TEMPLATES[relation][template].format(s=subject)


def _fact_items(held_out: bool) -> list[tuple[str, str]]:
    """All (prompt, answer) fact pairs of one side of the split, in a fixed order."""
    items = []
    for subject, relation in itertools.product(SUBJECTS, RELATIONS):
        h = held_out_template(subject, relation)
        for t in range(N_FACT_TEMPLATES):
            if (t == h) == held_out:
                answer = " " + fact_answer(subject, relation)
                items.append((fact_prompt(subject, relation, t), answer))
    return items


# --------------------------------------------------------------------------------------------------
# Indirect object identification
# --------------------------------------------------------------------------------------------------

NAMES = (
    "mary", "john", "alice", "bob", "sarah", "tom", "emma", "james", "anna",
    "david", "lucy", "mark", "kate", "paul", "laura", "peter", "julia", "mike",
)
PLACES = (
    "store", "park", "school", "office", "garden", "station", "market", "beach", "library",
    "kitchen",
)
OBJECTS = ("drink", "book", "ball", "letter", "gift", "flower", "key", "cake", "note", "hat")

#: {a}, {b}: the two names of the first clause; {c}: the repeated name (the subject of the second
#: clause); the answer, the indirect object, is the other one.
IOI_TEMPLATES = (
    "when {a} and {b} went to the {place} , {c} gave a {obj} to",
    "after {a} and {b} arrived at the {place} , {c} handed a {obj} to",
    "while {a} and {b} were at the {place} , {c} passed a {obj} to",
    "then {a} and {b} walked to the {place} , and {c} threw a {obj} to",
    "as {a} and {b} sat in the {place} , {c} offered a {obj} to",
)


def _ioi_held_out_pairs() -> frozenset[frozenset[str]]:
    """The fixed 20% of unordered name pairs that never appear together in training."""
    pairs = [frozenset(p) for p in itertools.combinations(NAMES, 2)]
    rng = random.Random(EVAL_SEED)
    return frozenset(rng.sample(pairs, k=len(pairs) // 5))


IOI_HELD_OUT_PAIRS = _ioi_held_out_pairs()


def _ioi_example(rng: random.Random, a: str, b: str) -> tuple[str, str]:
    """One IOI prompt for the names a, b (either may be repeated); returns (prompt, answer)."""
    repeated, answer = (a, b) if rng.random() < 0.5 else (b, a)
    prompt = rng.choice(IOI_TEMPLATES).format(
        a=a, b=b, c=repeated, place=rng.choice(PLACES), obj=rng.choice(OBJECTS)
    )
    return prompt, " " + answer


def _ioi_train_example(rng: random.Random) -> tuple[str, str]:
    while True:  # rejection keeps the pair distribution uniform over the training pairs
        a, b = rng.sample(NAMES, 2)
        if frozenset((a, b)) not in IOI_HELD_OUT_PAIRS:
            return _ioi_example(rng, a, b)


# --------------------------------------------------------------------------------------------------
# Induction / copying
# --------------------------------------------------------------------------------------------------

#: Dedicated filler vocabulary: disjoint from every other task's words, so a repeated sequence
#: carries no meaning and can only be continued by copying.
FILLERS = (
    "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum",
    "river", "stone", "cloud", "forest", "mountain", "valley", "desert", "island", "ocean",
    "meadow", "tiger", "zebra", "horse", "rabbit", "wolf", "eagle", "falcon", "otter", "badger",
    "lizard", "copper", "silver", "marble", "velvet", "cotton", "amber", "ivory", "crystal",
    "violin", "piano", "guitar", "trumpet", "drum", "flute", "harp", "cello", "candle", "lantern",
)
INDUCTION_MIN_LEN, INDUCTION_MAX_LEN = 5, 10
_INDUCTION_HELD_OUT_BUCKETS = 8  # 1 in 8 sequences is reserved for evaluation


def is_held_out_sequence(seq: list[str] | tuple[str, ...]) -> bool:
    """Stable (crc32, not Python's salted hash) split of filler sequences."""
    return zlib.crc32(" ".join(seq).encode()) % _INDUCTION_HELD_OUT_BUCKETS == 0


def _random_sequence(rng: random.Random, held_out: bool) -> list[str]:
    while True:
        # Distinct words: each token occurs once per half, so the continuation is unambiguous.
        seq = rng.sample(FILLERS, rng.randint(INDUCTION_MIN_LEN, INDUCTION_MAX_LEN))
        if is_held_out_sequence(seq) == held_out:
            return seq


def _induction_example(rng: random.Random, seq: list[str]) -> tuple[str, str]:
    """Prompt = the sequence then its first k words (k >= 1); answer = word k."""
    k = rng.randint(1, len(seq) - 1)
    return " ".join(seq + seq[:k]), " " + seq[k]


# --------------------------------------------------------------------------------------------------
# Public API: evaluation sets, training text, vocabulary
# --------------------------------------------------------------------------------------------------


def eval_examples(task: str, seed: int = EVAL_SEED) -> list[tuple[str, str]]:
    """Held-out (prompt, answer) pairs of ``task``; answers start with a space.

    facts: every (subject, relation) with its held-out template (144 examples);
    ioi: 8 examples per held-out name pair (240); induction: 300 fresh held-out sequences.
    """
    rng = random.Random(f"{task}-{seed}")  # string seeds are stable across Python runs
    if task == "facts":
        return _fact_items(held_out=True)
    if task == "ioi":
        pairs = sorted(tuple(sorted(p)) for p in IOI_HELD_OUT_PAIRS)
        return [_ioi_example(rng, *rng.sample(p, 2)) for p in pairs for _ in range(8)]
    if task == "induction":
        return [_induction_example(rng, _random_sequence(rng, held_out=True)) for _ in range(300)]
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def all_eval_examples(seed: int = EVAL_SEED) -> dict[str, list[tuple[str, str]]]:
    return {task: eval_examples(task, seed) for task in TASKS}


#: Share of each task in the training stream. Induction gets the most: its two-head circuit is
#: the slowest to form, while the facts are memorised within a few hundred steps.
TASK_WEIGHTS = {"facts": 0.3, "ioi": 0.3, "induction": 0.4}

_FACT_TRAIN = _fact_items(held_out=False)


def training_example(rng: random.Random) -> tuple[str, str]:
    """One training document as (task, text); text has no end-of-sequence marker."""
    task = rng.choices(TASKS, weights=[TASK_WEIGHTS[t] for t in TASKS])[0]
    if task == "facts":
        prompt, answer = rng.choice(_FACT_TRAIN)
        return task, prompt + answer
    if task == "ioi":
        prompt, answer = _ioi_train_example(rng)
        return task, prompt + answer
    seq = _random_sequence(rng, held_out=False)
    return task, " ".join(seq + seq)  # the whole repeat: every copied position is supervised


def training_text(n: int, seed: int = 0) -> list[str]:
    """``n`` training documents drawn from the seeded stream (same seed -> same list)."""
    rng = random.Random(seed)
    return [training_example(rng)[1] for _ in range(n)]


def vocabulary() -> list[str]:
    """Every word the corpus can produce, sorted (so token ids do not depend on set order)."""
    words: set[str] = set()
    for templates in FACT_TEMPLATES.values():
        for t in templates:
            words.update(t.format(s="").split())
    for t in IOI_TEMPLATES:
        words.update(t.format(a="", b="", c="", place="", obj="").split())
    words.update(SUBJECTS)
    words.update(CITIES)
    for country, language in CITIES.values():
        words.update((country, language))
    words.update(NAMES)
    words.update(PLACES)
    words.update(OBJECTS)
    words.update(FILLERS)
    return sorted(words)


# --------------------------------------------------------------------------------------------------
# Prompts of the built-in experiments (tests check that the shipped model gets them right)
# --------------------------------------------------------------------------------------------------

#: Activation patching: same template, subject swapped (position 2); both are held-out phrasings
#: for their subjects (eiffel and colosseum have held-out city template 0).
PATCHING_CLEAN = "the famous eiffel is located in the city of"
PATCHING_CORRUPT = "the famous colosseum is located in the city of"
PATCHING_ANSWER = " paris"
PATCHING_FOIL = " rome"

#: Logit lens: a held-out language prompt (kremlin's held-out language template is 0).
LOGIT_LENS_PROMPT = "the people near the kremlin speak the language"
LOGIT_LENS_ANSWER = " russian"

#: IOI: the classic sentence (mary/john is a training pair; the sentence itself may not be).
IOI_PROMPT = "when mary and john went to the store , john gave a drink to"
IOI_ANSWER = " mary"
IOI_FOIL = " john"

#: Induction: a held-out random sequence of fillers, repeated up to its fourth word.
INDUCTION_PROMPT = "meadow mango plum melon zebra desert copper river meadow mango plum melon"
INDUCTION_ANSWER = " zebra"
