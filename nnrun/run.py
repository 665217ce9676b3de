"""Execute a generated program over chunks of examples and map failures back to their node.

Invariants: the program is imported once, from a file whose name is its content hash (nnsight
caches source per file name, so a reused name could silently run stale code), and that one module
serves every chunk; reductions over examples see every chunk; a runtime failure becomes a
`RunError` naming the node whose generated line failed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from nnrun.codegen import Program
from nnrun.errors import Issue, RunError


def program_cache() -> Path:
    from nnrun.tiny import cache_root

    return cache_root() / "programs"


def materialize(program: Program) -> Path:
    """Write the program to its content-addressed path (once) and return that path."""
    from nnrun.atomic import atomic_write_text

    path = program_cache() / f"program_{program.digest}.py"
    if not path.exists() or path.read_text() != program.source:
        atomic_write_text(path, program.source)
    return path


def import_program(path: Path):
    name = f"nnrun_program_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def execute(compiled, model, consume: Callable[[dict[str, Any]], None] | None = None,
            collect: bool = True, progress: bool = False, backend=None,
            chunk_store=None, seed: int | None = None) -> dict[str, Any]:
    """Run the compiled program over every chunk of examples, then its `finish`.

    Args:
        compiled: a `pipeline.Compiled` (program, binding, graph, batch size).
        consume: called with each chunk's values (the run directory's sinks stream them).
        backend: a `nnrun.backends.Backend` giving each chunk's context arguments (None: local).
        collect: also return every per-chunk value joined along its `example` axis (tests,
            small runs); without it memory stays bounded by a chunk.
        progress: show a progress bar (chunks, rate, ETA) on a terminal.
        chunk_store: a `nnrun.checkpoints.ChunkStore`: chunks an earlier attempt of the job
            finished are read from it instead of computed, new ones are stored in it.
        seed: the run's seed; each chunk starts from its own seed derived from it (sampled
            generation is then the same however the run was split or resumed).

    Returns:
        Per-chunk values (joined, if collected), the reductions over examples and the values of
        `finish`, by node id.

    Raises:
        RunError: naming the node whose line raised, with the original exception chained.
    """
    import torch

    from nnrun.chunks import chunk_data, chunk_ranges
    from nnrun.sampling import chunk_seed
    from nnrun.sinks import concat_examples

    program, binding, graph = compiled.program, compiled.binding, compiled.graph
    schedule = program.schedule
    path = materialize(program)
    module = import_program(path)
    parts: dict[str, list[Any]] = {nid: [] for nid in schedule.returns} if collect else {}
    chunks = chunk_ranges(binding.n_examples, compiled.batch_size)
    device = getattr(model, "device", "cpu")
    dataset_level: dict[str, Any] = {}   # reductions and finish() values, pass after pass
    for n, (plan, (run, finish, given)) in enumerate(zip(schedule.passes, module.PASSES)):
        reducers = {nid: graph.nodes[nid].type.reducer(graph.nodes[nid].params,
                                                       graph.input_axes(nid))
                    for nid in plan.reducers}
        for start, stop in _progress(chunks, progress, binding.n_examples):
            values = chunk_store.get(n, start, stop, device) if chunk_store else None
            if values is None:
                data = chunk_data(binding, start, stop, device,
                                  backend.chunk_kwargs() if backend is not None else None,
                                  compiled.max_points)
                data["given"] = {nid: _to(dataset_level[nid], device) for nid in given}
                if seed is not None:
                    torch.manual_seed(chunk_seed(seed, n, start))
                values = call_program(program, path, run, model, data, graph=graph)
                if backend is not None:
                    backend.chunk_done()
                if chunk_store is not None:
                    chunk_store.put(n, start, stop, values)
            for nid, reducer in reducers.items():
                reducer.update(values[graph.nodes[nid].sources[0]])
            if consume is not None:
                consume(values)
            for nid in plan.returns:
                if nid in parts:
                    parts[nid].append(values[nid])
        dataset_level.update({nid: reducer.finalize() for nid, reducer in reducers.items()})
        dataset_level.update(call_program(program, path, finish, dataset_level, graph=graph))
    joined = {nid: concat_examples(chunks_, graph.axes[nid].index("example"))
              if "example" in graph.axes[nid] else chunks_[-1] for nid, chunks_ in parts.items()}
    return {**joined, **dataset_level}


def _to(value: Any, device: Any) -> Any:
    """A dataset-level tensor on the model's device (where the program uses it)."""
    return value.to(device) if hasattr(value, "to") else value


def _progress(chunks: list, enabled: bool, n_examples: int):
    """A progress bar over chunks on a terminal; silent in CI, pipes and files."""
    if not enabled or len(chunks) < 2 or not sys.stderr.isatty() or os.environ.get("CI"):
        return chunks
    from tqdm.auto import tqdm

    return tqdm(chunks, desc=f"{n_examples} examples", unit="chunk", leave=False)


def call_program(program: Program, path: Path, function: Callable, *args,
                 graph=None) -> dict[str, Any]:
    """Call `run` or `finish` of the imported program, mapping a failure to its node: the
    node's place in the experiment file, the error, and the program's own lines of the
    traceback (nnsight's and torch's frames are left out; NNRUN_FULL_ERROR=1 shows them)."""
    try:
        return function(*args)
    except Exception as err:  # any failure inside the program is reported per node
        line = failing_line(err, path)
        node = program.line_map.get(line) if line else None
        where = f"node `{node}`" if node else "the program"
        summary = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        frames = program_frames(err, path)
        hint = (f"in program.py: {'; '.join(frames)}. " if frames else
                "see program.py in the run directory. ")
        hint += "NNRUN_FULL_ERROR=1 shows the full traceback"
        yaml_path = graph.nodes[node].path if graph is not None and node in graph.nodes else \
            f"program.py:{line}"
        raise RunError(f"while executing {where} (program.py line {line}):", [Issue(
            "runtime_error", summary, yaml_path, node, hint)]) from err


def program_frames(err: BaseException, path: Path) -> list[str]:
    """`line N: <code>` for each frame of the generated program in the traceback."""
    target = os.path.realpath(path)
    return [f"line {f.lineno}: `{(f.line or '').strip()}`"
            for f in traceback.extract_tb(err.__traceback__)
            if os.path.realpath(f.filename) == target][-3:]


def failing_line(err: BaseException, path: Path) -> int | None:
    """Innermost line of `path` in the exception's traceback (or chained causes)."""
    target = os.path.realpath(path)
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
                 if os.path.realpath(f.filename) == target]
        if lines:
            return lines[-1]
        err = err.__cause__ or err.__context__
    return None
