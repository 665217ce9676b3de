"""Run the `nnrun` command inside the test process: the real `nnrun.cli.main` with `sys.argv`
patched, so Hydra parses the command line, composes the config, runs its callbacks and the job
exactly as in `python -m nnrun ...`, but without starting Python, torch and transformers again
(and with the tiny models and model infos cached for the whole test session).

What a fresh process would have, each call gets: a freshly imported `nnrun.cli` (its module state
starts empty), a cleared GlobalHydra, and the working directory, environment, `sys.argv`, root
logger and stdio put back afterwards. An exception escaping `main` is turned into what the
interpreter would do with it: its traceback on stderr and exit code 1 (so a test that asserts
"no traceback" catches it). Experiments are found afresh by every call (nnrun.catalog reads the
folders each time), and only the selected file is parsed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

# Variables a developer's shell may carry that would change how nnrun reports errors.
CLEARED_ENV = ("NNRUN_EXPERIMENTS", "NNRUN_FULL_ERROR", "HYDRA_FULL_ERROR")


@dataclass
class Result:
    """What the command did: exit code, its stdout and stderr, and the run directory it used."""

    code: int
    stdout: str
    stderr: str
    run_dir: Path

    def explain(self) -> str:
        return f"exit {self.code}\n--- stderr ---\n{self.stderr}\n--- stdout ---\n{self.stdout}"


def run_nnrun(args: list[str], cwd: Path, env: dict[str, str] | None = None,
              run_dir: Path | None = None) -> Result:
    """`nnrun ARGS` in `cwd` (with `hydra.run.dir=RUN_DIR` added when `run_dir` is given)."""
    argv = ["nnrun", *args] + ([f"hydra.run.dir={run_dir}"] if run_dir else [])
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        for name in CLEARED_ENV:
            os.environ.pop(name, None)
        os.environ.update({"HF_HUB_OFFLINE": "1", **(env or {})})
        os.chdir(cwd)
        sys.argv = argv
        cli = _fresh_cli()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as done:
                code = _exit_code(done.code, err)
            except Exception:  # what the interpreter prints for an uncaught exception
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        _restore_logging(root, saved_handlers, saved_level)
    return Result(code, out.getvalue(), err.getvalue(), Path(run_dir) if run_dir else cwd)


def _fresh_cli():
    """`nnrun.cli` as a new process would import it, and Hydra's global state as it starts."""
    from hydra.core.global_hydra import GlobalHydra

    import nnrun.cli

    GlobalHydra.instance().clear()
    return importlib.reload(nnrun.cli)


def _exit_code(value, err: io.StringIO) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=err)  # sys.exit("message") prints the message and exits 1
    return 1


def _restore_logging(root: logging.Logger, handlers: list[logging.Handler], level: int) -> None:
    """Hydra configures logging for each job (a stdout handler, the job's .log file)."""
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
