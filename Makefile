# Set-up is part of every target: a fresh clone needs nothing but python3 (>= 3.10).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench setup clean

# Run the main job: activation patching on the bundled model, into outputs/.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/nnrun experiment=patching

# Run the linter and the test suite (what CI runs), on 2 workers (pytest-xdist; a worker that
# runs out of tests takes some from the other, so the long process tests do not end alone).
test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -n 2 --dist worksteal

# Run every benchmark and rewrite the generated section of benchmarks/RESULTS.md (the quick set,
# ~15 minutes on 2 cores; `$(PY) benchmarks/run_all.py --full` adds GPT-2's shape: hours).
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check nnrun tests benchmarks

setup: $(STAMP)

# torch is pinned by constraints.txt: a bare `torch` would pull several GB of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,cluster]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) outputs/2* outputs/multirun
