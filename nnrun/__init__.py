"""nnrun: run interpretability experiments, written as graphs in YAML, as nnsight programs."""

__version__ = "0.1.0"
