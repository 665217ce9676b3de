"""`stage=plan` scans two examples of the first chunk instead of all of them (fake tensors cost
per operation, and nnsight batches every example's input): the report is the same as a scan of
the whole chunk, and a chunk whose prompts differ in length is still scanned whole (left padding
to its longest prompt sets the position axis)."""

from __future__ import annotations

from types import SimpleNamespace

from method_helpers import REPO
from omegaconf import OmegaConf

from nnrun import plan
from nnrun.pipeline import compile_program


def binding(*lengths: tuple[int, ...]):
    """A stand-in binding: one invoke per tuple of prompt lengths (one per example)."""
    return SimpleNamespace(invokes={f"i{k}": SimpleNamespace(lengths=ls)
                                    for k, ls in enumerate(lengths)})


def test_two_examples_when_every_invoke_has_one_length_else_the_whole_chunk():
    assert plan.scanned_examples(binding((9,) * 40, (9,) * 40), 0, 32) == (0, 2)
    assert plan.scanned_examples(binding((9,) * 40), 32, 40) == (32, 34)
    assert plan.scanned_examples(binding((9,)), 0, 1) == (0, 1)
    assert plan.scanned_examples(binding((9,) * 8, (9, 9, 7, 9, 9, 9, 9, 9)), 0, 8) == (0, 8)
    assert plan.scanned_examples(binding((9, 9, 7, 9)), 3, 4) == (3, 4)  # one length in the chunk


def test_the_report_equals_a_scan_of_the_whole_chunk(monkeypatch):
    path = REPO / "experiments" / "patching.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    config["model"] = {"name": "demo", "path": "builtin:demo"}
    config["data"] = {**config["data"], "limit": 6}
    config["batch_size"] = 6
    compiled = compile_program(config, path)
    sampled = plan.plan_report(compiled)
    monkeypatch.setattr(plan, "scanned_examples", lambda binding, start, stop: (start, stop))
    assert plan.plan_report(compiled) == sampled
    assert "(layer, position, example) = (4, 9, 6)" in sampled


def test_the_scan_without_prefix_reuse_reports_what_the_compiled_program_gives(monkeypatch):
    """Where the program reuses prefixes (a trace per layer), the scan runs the same fast form
    without them: the same values, so the same report."""
    monkeypatch.setattr("nnrun.fastpath.TRACE_COST_FLOPS", 0.0)   # prefix reuse on the demo
    monkeypatch.setattr("nnrun.fastpath.WEIGHT_READ_FLOPS", 0.0)
    path = REPO / "experiments" / "patching.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    config["model"] = {"name": "demo", "path": "builtin:demo"}
    config["data"] = {**config["data"], "limit": 4}
    compiled = compile_program(config, path)
    assert any(t.prefix for t in compiled.program.schedule.traces)
    assert not any(t.prefix for t in plan.scan_program(compiled).schedule.traces)
    report = plan.plan_report(compiled)
    monkeypatch.setattr(plan, "scan_program", lambda compiled: compiled.program)
    assert plan.plan_report(compiled) == report
    assert "(layer, position, example) = (4, 9, 4)" in report
