"""Prompt sets for steering the demo model by contrastive activation addition (CAA).

``python -m nnrun.demo.steering --out experiments/data/steering_prompts.jsonl``

One row per subject of the corpus whose city is neither Paris nor Rome (41 rows), all in the first
city template ("the famous {s} is located in the city of": 9 tokens, so the rows batch without
padding). Columns: ``prompt`` (the subject's prompt: what generation is steered on), ``subject``,
``answer`` (its city, with a leading space), and the two contrastive prompt sets whose mean
difference is the steering vector: ``positive`` (the same template about a Paris subject) and
``negative`` (about a Rome subject), cycling through those subjects. The same command always
writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nnrun.demo import corpus as C

TOWARDS, AWAY = "paris", "rome"
TEMPLATE = C.FACT_TEMPLATES["city"][0]


def rows() -> list[dict]:
    """The rows, in corpus order of the prompt's subject."""
    positive = [s for s, city in C.SUBJECTS.items() if city == TOWARDS]
    negative = [s for s, city in C.SUBJECTS.items() if city == AWAY]
    others = [s for s, city in C.SUBJECTS.items() if city not in (TOWARDS, AWAY)]
    return [{"prompt": TEMPLATE.format(s=s), "subject": s, "answer": " " + C.SUBJECTS[s],
             "positive": TEMPLATE.format(s=positive[i % len(positive)]),
             "negative": TEMPLATE.format(s=negative[i % len(negative)])}
            for i, s in enumerate(others)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnrun.demo.steering",
                                     description="Write the steering prompt sets (JSONL).")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    out = Path(parser.parse_args(argv).out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows())
    out.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} rows to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
