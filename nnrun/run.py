"""Execute a generated program on a loaded model and map failures back to the node that failed.

Invariant: the program is imported from a file whose name is its content hash (nnsight caches
source per file name, so a reused name could silently run stale code); a runtime failure becomes
a `RunError` naming the node whose generated line failed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any

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


def execute(program: Program, model) -> dict[str, Any]:
    """Run `program` on `model`; returns the values the sinks need.

    Raises:
        RunError: naming the node whose line raised, with the original exception chained.
    """
    path = materialize(program)
    module = import_program(path)
    try:
        return module.run(model)
    except Exception as err:  # any failure inside the program is reported per node
        line = failing_line(err, path)
        node = program.line_map.get(line) if line else None
        where = f"node `{node}`" if node else "the program"
        summary = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        hint = "run with NNRUN_FULL_ERROR=1 for the full traceback"
        if node is None:
            hint = "see program.py in the run directory; " + hint
        raise RunError(f"while executing {where} (program.py line {line}):", [Issue(
            "runtime_error", summary, f"program.py:{line}", node, hint)]) from err


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
