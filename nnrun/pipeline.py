"""The stages of one job, in order: load → graph → bind → codegen → run → outputs.

Invariant: validation and compilation finish before any weights are loaded, so a broken
experiment (or a broken sweep point) fails in seconds; the run directory's manifest records the
outcome of every run, failed ones included.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.bind import Binding, bind
from nnrun.budget import fit_budget
from nnrun.codegen import Program, generate
from nnrun.data import ColumnUse
from nnrun.errors import ConfigError, NnrunError
from nnrun.graph import Graph, build_graph
from nnrun.load import line_of, load_experiment
from nnrun.models import ModelSpec, describe, load_tokenizer, model_info
from nnrun.run_records import (
    config_hash,
    error_record,
    experiment_record,
    failure_recorded,
)
from nnrun.schema import ExperimentSpec

STAGES = ("validate", "plan", "export", "run", "modules")


@dataclass
class Compiled:
    spec: ExperimentSpec
    model: ModelSpec
    graph: Graph
    binding: Binding | None = None
    program: Program | None = None
    batch_size: int = 1          # examples per chunk (one forward pass per chunk)
    dataset: Any = None          # the checked examples (None: the one implicit example)
    memory: Any = None           # nnrun.budget.MemoryEstimate of a run
    memory_budget: int | None = None  # bytes it must fit in (None: no check)
    max_points: int | None = None  # points of a folded invoke per forward pass (None: all)
    warnings: list = field(default_factory=list)  # located Issues said but not refused


def model_spec(config: dict[str, Any]) -> ModelSpec:
    from pydantic import ValidationError

    from nnrun.errors import ConfigError, Issue

    try:
        return ModelSpec.model_validate(config.get("model") or {})
    except ValidationError as err:
        raise ConfigError("the `model` config has problems:", [Issue(
            "invalid_model_config", e["msg"].lower(), "model." + ".".join(map(str, e["loc"])))
            for e in err.errors()]) from None


def check_run_settings(config: dict[str, Any]) -> None:
    """The command-line settings beside the experiment (`seed`, `export_path`) have the right
    types, so that a typo fails before any work, not after the model ran."""
    from nnrun.errors import ConfigError, Issue

    seed = config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("the run settings have problems:", [Issue(
            "invalid_seed", f"seed must be an integer, found `{seed}`", "seed",
            hint="e.g. seed=0")])
    from nnrun.budget import parse_budget

    parse_budget(config.get("memory_budget", "auto"))
    from nnrun.plots import formats_from_config
    from nnrun.threads import parse_threads

    parse_threads(config.get("threads", "auto"))
    formats_from_config(config)
    target = config.get("export_path")
    if target is not None and not isinstance(target, str):
        raise ConfigError("the run settings have problems:", [Issue(
            "invalid_export_path", f"export_path must be a file path, found `{target}`",
            "export_path", hint="e.g. export_path=patching_standalone.py")])


def validate(config: dict[str, Any], source: Path | None = None) -> Compiled:
    """Schema + graph lint against the model's module tree (config only, no weights)."""
    check_run_settings(config)
    model = model_spec(config)
    from nnrun.backends import backend_spec

    backend_spec(config)
    try:
        spec = load_experiment(config, source)
    except ConfigError as err:  # add the graph problems among the well-formed nodes
        raise _with_graph_issues(err, config, model, source) from None
    with _located_in(source):
        graph = build_graph(spec, model_info(model), source=source)
        dataset = _dataset(spec, source)  # columns and rows are checked before any tokenizer
    return Compiled(spec, model, graph, dataset=dataset, warnings=_warn(graph, config, source))


def _warn(graph: Graph, config: dict[str, Any], source: Path | None) -> list:
    """Say what runs but is almost surely a mistake (a node nothing consumes) on stderr and in
    cli.log, located like an error; the run goes on (see nnrun.lint.unused_nodes)."""
    import logging
    import sys

    from nnrun.lint import unused_nodes
    from nnrun.load import locate

    warnings = [locate(issue, source, config) for issue in unused_nodes(graph)]
    for issue in warnings:
        line = "nnrun: warning: " + issue.format()
        print(line, file=sys.stderr, flush=True)
        logging.getLogger("nnrun").warning(line)
    return warnings


def _with_graph_issues(err: ConfigError, config: dict[str, Any], model: ModelSpec,
                       source: Path | None) -> ConfigError:
    from nnrun.load import locate
    from nnrun.salvage import graph_issues

    try:
        extra = graph_issues(config, model_info(model))
    except NnrunError:  # the model cannot be probed: the format problems stand alone
        return err
    if not extra:
        return err
    issues = err.issues + [locate(i, source, config) for i in extra]
    noun = "problem" if len(issues) == 1 else "problems"
    return ConfigError(f"experiment `{config.get('name', '?')}` has {len(issues)} {noun}:",
                       sorted(issues, key=lambda i: (i.file or "", i.line or 0, i.path)))


def compile_program(config: dict[str, Any], source: Path | None = None) -> Compiled:
    """Validate, load the examples, bind them to the tokenizer and generate the program (still
    no weights). The program does not depend on the examples, only on the graph's shape."""
    from nnrun.attention import choose

    compiled = validate(config, source)
    compiled.model = choose(compiled.model, compiled.graph)  # eager iff it reads attention
    with _located_in(source):
        compiled.binding = bind(compiled.graph, load_tokenizer(compiled.model),
                                compiled.dataset)
        compiled.program = generate(compiled.graph, compiled.binding,
                                    source.name if source else "",
                                    fast=bool(config.get("fast_paths", True)))
        compiled.batch_size = _batch_size(compiled)
        compiled.max_points = _max_points(compiled)
        fit_budget(compiled, config)
    return compiled


def _dataset(spec: ExperimentSpec, source: Path | None):
    from nnrun.data import load_dataset, prompt_lists

    if spec.data is None:   # the examples are the prompt lists' (or one implicit example)
        return prompt_lists(spec.graph.scopes)
    return load_dataset(spec.data, source, needed_columns(spec))


def needed_columns(spec: ExperimentSpec) -> dict[str, ColumnUse]:
    """Every column the scopes and nodes refer to: whether it holds text or an integer, and
    where it is first used (so that a missing column is reported at the node that needs it)."""
    from nnrun.refs import Column, Match

    needed: dict[str, ColumnUse] = {}
    for i, scope in enumerate(spec.graph.scopes):
        if isinstance(scope.input, Column):
            needed.setdefault(scope.input.column,
                              ColumnUse("text", f"graph.scopes[{i}].input", scope.id))
    for i, node in enumerate(spec.graph.nodes):
        for name, value in node:
            where = f"graph.nodes[{i}].{name}"
            if isinstance(value, Match) and isinstance(value.match, Column):
                needed.setdefault(value.match.column, ColumnUse("text", where, node.id))
            elif isinstance(value, Column):
                kind = "int" if name == "position" else "text"
                needed.setdefault(value.column, ColumnUse(kind, where, node.id))
    return needed


def _batch_size(compiled: Compiled) -> int:
    from nnrun.chunks import auto_batch_size, dtype_bytes, forward_rows

    size = compiled.spec.batch_size
    if size != "auto":
        return min(size, compiled.binding.n_examples)
    return auto_batch_size(compiled.binding, compiled.graph.info,
                           dtype_bytes(compiled.model.dtype),
                           rows=forward_rows(compiled.program.schedule))


def _max_points(compiled: Compiled) -> int | None:
    from nnrun.chunks import dtype_bytes, max_points_per_forward

    return max_points_per_forward(compiled.program.schedule, compiled.binding,
                                  compiled.graph.info, dtype_bytes(compiled.model.dtype),
                                  compiled.batch_size)


@contextmanager
def _located_in(source: Path | None):
    """Give the issues of an NnrunError raised inside the file and line they point at (only
    those whose path is in the experiment file: a `model.path` issue is not)."""
    try:
        yield
    except NnrunError as err:
        for n, issue in enumerate(err.issues):
            line = line_of(source, issue.path)
            if line is not None:
                err.issues[n] = issue.located(str(source), line)
        raise


def run(config: dict[str, Any], run_dir: Path, source: Path | None = None,
        overrides: list[str] | None = None) -> Path:
    """The whole job: compile, load the model, execute, write the run directory. Every phase is
    timed into the manifest's `timings_s` (nnrun.timings)."""
    from nnrun.backends import Backend, backend_spec
    from nnrun.budget import check_budget
    from nnrun.functions import record as function_record
    from nnrun.functions import require_opt_in
    from nnrun.outputs import RunDir
    from nnrun.sampling import generation_record
    from nnrun.timings import Phases

    phases = Phases()
    with failure_recorded(config, source, run_dir, overrides or []):
        with phases("imports"):  # torch, transformers, nnsight: paid once per process
            import nnsight  # noqa: F401
            import torch  # noqa: F401
            import transformers  # noqa: F401
        with phases("compile"):
            backend = Backend(backend_spec(config), model_spec(config))
            backend.preflight()  # a remote run that cannot start fails before any work
            compiled = compile_program(config, source)
            with _located_in(source):  # user code runs only when the command line allows it
                require_opt_in(compiled.graph, config)
            backend.model_spec = compiled.model  # the attention kernel chosen for the graph
            compiled.batch_size = backend.cap_batch(compiled.batch_size)
            if not backend.spec.remote:  # the budget is this machine's memory
                check_budget(compiled)  # refused before any weights load
    out = RunDir(run_dir)
    try:
        with phases("static"):
            info = compiled.graph.info  # what the model really is, whatever the preset said
            out.start(experiment_record(compiled, config, source),
                      {**describe(compiled.model), "model_type": info.model_type,
                       "family": info.family, "n_layers": info.n_layers}, "run", overrides or [])
            out.manifest.update({**function_record(compiled.graph),
                                 **generation_record(compiled.spec, config.get("seed", 0))})
            if compiled.warnings:
                out.manifest["warnings"] = [w.format() for w in compiled.warnings]
        with figure_formats(config):
            _write_static(out, compiled, config, phases)
            _load_and_execute(out, compiled, backend, config, source, phases)
    except BaseException as err:
        out.manifest["timings_s"] = phases.rounded()
        out.manifest["backend"] = backend.record()
        out.finish(error_record(err))
        raise
    out.manifest["backend"] = backend.record()
    out.manifest["timings_s"] = phases.rounded()
    out.finish()
    return run_dir


def figure_formats(config: dict[str, Any]):
    """The file formats of this run's plots and graph picture (`plots.svg`)."""
    from nnrun.plots import formats_from_config, using_formats

    return using_formats(formats_from_config(config))


def _write_static(out, compiled: Compiled, config: dict[str, Any], phases) -> None:
    from nnrun.writer import write_graph_picture, write_static

    with phases("static"):
        write_static(out, compiled, config)
    with phases("graph_picture"):
        write_graph_picture(out, compiled)


def _load_and_execute(out, compiled: Compiled, backend, config: dict[str, Any],
                      source: Path | None, phases) -> None:
    from nnrun.attention import used_by
    from nnrun.threads import apply_threads

    with phases("load_model"):
        model = backend.load_model()
        out.manifest["model"]["attn_implementation"] = (
            used_by(model) or compiled.model.attn_implementation)
    import torch

    out.manifest["threads"] = apply_threads(config.get("threads", "auto"), compiled)
    torch.manual_seed(config.get("seed", 0))
    _execute_into(out, compiled, model, backend, config, source, phases)
    out.manifest["examples"] = compiled.binding.n_examples
    out.manifest["batch_size"] = compiled.batch_size
    out.manifest["memory_estimate_bytes"] = {**vars(compiled.memory),
                                             "total": compiled.memory.total,
                                             "budget": compiled.memory_budget}


def _execute_into(out, compiled: Compiled, model, backend, config: dict[str, Any],
                  source: Path | None, phases) -> None:
    """Run every chunk on the backend, streaming values into the run directory's sinks (chunks
    an earlier attempt of this job finished come from its chunk store)."""
    from nnrun.checkpoints import ChunkStore
    from nnrun.chunks import chunk_ranges
    from nnrun.errors import RunError
    from nnrun.run import execute
    from nnrun.writer import open_sinks

    with phases("execute"):
        store = ChunkStore.open(out.path, config_hash(config) + compiled.program.digest, len(
            chunk_ranges(compiled.binding.n_examples, compiled.batch_size)))
        sinks = open_sinks(out, compiled, config_hash(config))
    try:
        with phases("execute"), _located_in(source):  # a failing node: its line of the file
            try:
                values = execute(compiled, model, consume=sinks.update_chunk, collect=False,
                                 progress=True, backend=backend, chunk_store=store,
                                 seed=config.get("seed", 0))
            except RunError as err:
                remote = backend.failure(err)
                if remote is None:
                    raise
                raise remote from err
        for phase, seconds in sinks.close(values).items():  # tensors: write; figures: plots
            phases.add(phase, seconds)
        with phases("write"):
            if store is not None:
                store.finish(out.manifest)
    except BaseException:
        sinks.abort()
        raise


def run_stage(stage: str, config: dict[str, Any], run_dir: Path, source: Path | None,
              overrides: list[str]) -> str:
    """Run one stage and return the line(s) to print for the researcher."""
    if stage == "modules":
        return modules_report(model_spec(config))
    if stage == "validate":
        c = validate(config, source)
        return (f"ok: `{c.spec.name}` is valid ({len(c.graph.nodes)} nodes, "
                f"{len(c.graph.scopes)} scopes, {len(c.spec.graph.edges)} edges; sites checked "
                f"against {c.model.name})")
    if stage == "plan":
        from nnrun.plan import plan_report

        return plan_report(compile_program(config, source))
    if stage == "export":
        from nnrun.export import export_script

        c = compile_program(config, source)
        target = Path(config.get("export_path") or run_dir / f"{c.spec.name}_standalone.py")
        export_script(c, target, config.get("seed", 0))
        return (f"wrote {target}\n  run it with: python {target} [OUT_DIR]  "
                "(needs only torch, transformers, nnsight)")
    path = run(config, run_dir, source, overrides)
    return summary(path)


def summary(run_dir: Path) -> str:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    lines = [f"run directory: {run_dir}"]
    for a in manifest["artifacts"]:
        shape = f"  shape {tuple(a['shape'])}" if "shape" in a else ""
        lines.append(f"  {a['path']:<40} {a['kind']:<8}{shape}")
    lines.append(f"  {'manifest.json':<40} {manifest['status']}")
    lines.append(f"  {'COMPLETED':<40} written last")
    return "\n".join(lines)


def modules_report(spec: ModelSpec) -> str:
    """Every module path in forward-execution order, and where the named sites point."""
    from nnrun.sites import SITES, resolve

    info = model_info(spec)
    lines = [f"{spec.name}: model_type {info.model_type}, site family {info.family or 'none'}, "
             f"{info.n_layers} layers, hidden {info.hidden_size}, vocab {info.vocab_size}, "
             f"{info.n_heads} heads of {info.head_dim} ({info.n_kv_heads} key/value heads)"]
    if info.family:
        lines.append("sites:")
        lines += [f"  {site:<18} {'.'.join(resolve(site, info.family))}" for site in SITES]
    lines.append("modules (forward-execution order of their outputs):")
    outputs = sorted((rank, path) for (path, event), rank in info.order.items()
                     if event == "output")
    lines += [f"  {path}" + ("   (returns a tuple: element 0 is read)"
                             if path in info.tuple_outputs else "") for _, path in outputs]
    return "\n".join(lines)
