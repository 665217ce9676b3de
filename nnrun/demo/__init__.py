"""The bundled demo model: a tiny word-level language model with known, interpretable structure.

nnrun ships a small GPT-2-architecture model (``nnrun/assets/demo``) trained on a synthetic corpus
of three tasks whose mechanisms are well studied -- factual recall, indirect object identification
(IOI) and induction/copying -- so that the built-in experiments (activation patching, logit lens,
attention analysis) run offline, in seconds, on a CPU, and show the expected effects.

Modules:

* :mod:`nnrun.demo.corpus` -- the seeded synthetic corpus, its train/held-out split and the prompt
  constants used by the built-in experiments;
* :mod:`nnrun.demo.tokenizer` -- the word-level tokenizer built from the corpus vocabulary;
* :mod:`nnrun.demo.train` -- the deterministic training script (``python -m nnrun.demo.train``);
* :mod:`nnrun.demo.evaluate` -- held-out top-1 accuracy per task
  (``python -m nnrun.demo.evaluate``).
* :mod:`nnrun.demo.datasets` -- contrastive clean/corrupt prompt pairs of the held-out split for
  activation patching (``python -m nnrun.demo.datasets``; two are shipped in
  ``experiments/data/``).
"""

from pathlib import Path

#: Where the trained demo model is shipped inside the package.
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"

__all__ = ["DEMO_MODEL_DIR"]
