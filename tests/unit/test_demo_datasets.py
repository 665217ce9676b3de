"""The demo-model dataset generator: deterministic, well-formed, held-out rows; shipped files match.

No model here (tests/integration/test_demo_datasets_model.py: what the model does on the rows);
the tokenizer is loaded with transformers from the shipped tokenizer files, independently of the
generator's own checks.
"""

from __future__ import annotations

import json
import re
import shlex
from fnmatch import fnmatch
from pathlib import Path

import pytest

from nnrun.demo import DEMO_MODEL_DIR
from nnrun.demo import corpus as C
from nnrun.demo import datasets as D

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "experiments" / "data"
SHIPPED = {"facts": DATA / "facts_pairs.jsonl", "ioi": DATA / "ioi_pairs.jsonl"}


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False).input_ids


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def readme_commands() -> dict[str, list[str]]:
    """task → argv of the command that experiments/data/README.md says wrote its file."""
    text = (DATA / "README.md").read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if line.startswith("python -m nnrun.demo.datasets"):
            argv = shlex.split(line)[3:]
            out[argv[argv.index("--task") + 1]] = argv
    return out


def check_rows(task: str, rows: list[dict], tok) -> None:
    special = set(tok.all_special_ids) | {tok.unk_token_id}
    assert rows and len({(r["clean"], r["corrupt"]) for r in rows}) == len(rows), "duplicates"
    for row in rows:
        assert list(row) == list(D.COLUMNS[task]), row
        clean, corrupt = ids(tok, row["clean"]), ids(tok, row["corrupt"])
        assert len(clean) == len(corrupt), row
        assert clean != corrupt, row
        answer, foil = ids(tok, row["answer"]), ids(tok, row["foil"])
        assert len(answer) == 1 and len(foil) == 1 and answer != foil, row
        assert row["answer"].startswith(" ") and row["foil"].startswith(" "), row
        assert not special & set(clean + corrupt + answer + foil), row
        # every word round-trips through the word-level tokenizer (nothing became <unk>)
        assert tok.decode(clean) == row["clean"] and tok.decode(corrupt) == row["corrupt"], row


# --- every task ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", D.TASKS)
def test_rows_are_well_formed(task, tok):
    check_rows(task, D.generate(task, 200, seed=3), tok)


@pytest.mark.parametrize("task", D.TASKS)
def test_same_seed_same_bytes_other_seed_other_rows(task, tmp_path):
    a, b, c = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert D.main(["--task", task, "--n", "50", "--seed", "7", "--out", str(a)]) == 0
    assert D.main(["--task", task, "--n", "50", "--seed", "7", "--out", str(b)]) == 0
    assert D.main(["--task", task, "--n", "50", "--seed", "8", "--out", str(c)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert len(a.read_text().splitlines()) == 50


@pytest.mark.parametrize("task", D.TASKS)
def test_many_rows_stay_distinct(task):
    rows = D.generate(task, 300, seed=0)
    assert len({json.dumps(r) for r in rows}) == 300


def test_clean_prompts_come_from_the_held_out_split():
    held_out_facts = {p for p, _ in C.eval_examples("facts")}
    for row in D.generate("facts", 300):
        assert row["clean"] in held_out_facts
        # the corrupt prompt uses a template held out for its subject too
        assert C.held_out_template(row["corrupt_subject"], row["relation"]) == row["template"]
        assert C.fact_answer(row["corrupt_subject"], row["relation"]) == row["foil"].strip()
    for row in D.generate("ioi", 300):
        assert frozenset((row["io"], row["s"])) in C.IOI_HELD_OUT_PAIRS
        assert row["c"] not in (row["io"], row["s"])
    for row in D.generate("induction", 300):
        words = row["clean"].split()
        seq = words[:row["seq_len"]]
        assert C.is_held_out_sequence(seq) and words[row["seq_len"]:] == seq[:row["k"]]
        assert row["answer"] == " " + seq[row["k"]]
        corrupt = row["corrupt"].split()
        assert corrupt[row["seq_len"]:] == seq[:row["k"]]           # same second half ...
        assert not set(corrupt[:row["seq_len"]]) & set(seq)         # ... repeating nothing
        assert row["answer"].strip() not in corrupt and row["foil"].strip() not in words


def test_position_columns_point_at_the_named_tokens(tok):
    for row in D.generate("facts", 300):
        clean, corrupt = row["clean"].split(), row["corrupt"].split()
        diff = [i for i, (x, y) in enumerate(zip(clean, corrupt, strict=True)) if x != y]
        assert diff == [row["subject_pos"]]
        assert clean[row["subject_pos"]] == row["subject"]
        assert corrupt[row["subject_pos"]] == row["corrupt_subject"]
    for row in D.generate("ioi", 300):
        clean, corrupt = row["clean"].split(), row["corrupt"].split()
        diff = [i for i, (x, y) in enumerate(zip(clean, corrupt, strict=True)) if x != y]
        assert diff == [row["s2_pos"]]
        assert (clean[row["io_pos"]], clean[row["s_pos"]], clean[row["s2_pos"]]) == (
            row["io"], row["s"], row["s"])
        assert corrupt[row["s2_pos"]] == row["c"]


def test_facts_pairs_are_spread_over_clean_prompts():
    """Round-robin: every held-out (subject, relation) appears once before any appears twice."""
    rows = D.generate("facts", 144)
    assert len({r["clean"] for r in rows}) == 144


# --- errors -------------------------------------------------------------------------------------


def test_more_rows_than_pairs_is_a_clear_error(capsys):
    total = sum(len(v) for v in D.fact_pair_candidates().values())
    assert len(D.generate("facts", total)) == total   # every pair, once
    with pytest.raises(D.NotEnoughPairs, match=f"facts has {total} distinct"):
        D.generate("facts", total + 1)
    with pytest.raises(SystemExit) as exit_:
        D.main(["--task", "facts", "--n", "300", "--templates", "city:0,country:0"])
    assert exit_.value.code == 2
    assert "262 distinct (clean, corrupt) pairs" in capsys.readouterr().err


@pytest.mark.parametrize("task, templates, match", [
    ("facts", ["city:4"], "RELATION:INDEX"),
    ("facts", ["town:0"], "RELATION:INDEX"),
    ("ioi", ["5"], "index 0..4"),
    ("induction", ["0"], "no templates"),
])
def test_bad_templates(task, templates, match):
    with pytest.raises(ValueError, match=match):
        D.generate(task, 3, templates=templates)


def test_bad_n():
    with pytest.raises(ValueError, match="at least 1"):
        D.generate("ioi", 0)
    with pytest.raises(ValueError, match="unknown task"):
        D.generate("arithmetic", 3)


# --- shipped files ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_shipped_file_is_what_the_documented_command_writes(task, tmp_path):
    argv = readme_commands()[task]
    out = argv[argv.index("--out") + 1]
    assert REPO / out == SHIPPED[task]
    argv[argv.index("--out") + 1] = str(tmp_path / "again.jsonl")
    assert D.main(argv) == 0
    assert (tmp_path / "again.jsonl").read_bytes() == SHIPPED[task].read_bytes()


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_shipped_rows_are_aligned(task, tok):
    """Same length and the same roles at the same positions in every row (no padding needed)."""
    rows = read_jsonl(SHIPPED[task])
    assert len(rows) >= 100
    check_rows(task, rows, tok)
    assert len({len(ids(tok, r["clean"])) for r in rows}) == 1
    if task == "facts":
        assert {r["subject_pos"] for r in rows} == {2}
    else:  # the two names of the first clause at 1 and 3 (IO first or S first), S2 at 9
        assert {(min(r["io_pos"], r["s_pos"]), max(r["io_pos"], r["s_pos"])) for r in rows} == {
            (1, 3)}
        assert {r["io_pos"] for r in rows} == {1, 3}
        assert {r["s2_pos"] for r in rows} == {9}


def test_shipped_files_are_package_data():
    """pyproject ships experiments/data/* inside nnrun.configs.experiment (an installed nnrun)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["nnrun.configs.experiment"] == "experiments"
    globs = config["package-data"]["nnrun.configs.experiment"]
    for path in [*SHIPPED.values(), DATA / "README.md"]:
        rel = path.relative_to(REPO / "experiments").as_posix()
        assert any(fnmatch(rel, g) for g in globs), (rel, globs)


def test_readme_columns_match_the_generator():
    text = (DATA / "README.md").read_text()
    for task, path in SHIPPED.items():
        section = text.split(f"## `{path.name}`")[1].split("\n## ")[0]
        documented = set(re.findall(r"`([a-z_0-9]+)`", section.split("| column |")[1]))
        assert set(D.COLUMNS[task]) <= documented, (task, set(D.COLUMNS[task]) - documented)
