"""The `nnrun` command: a Hydra app whose job runs one stage and reports errors compactly.

Invariant: a user mistake prints a located message (no traceback) and exits with the error class's
code; NNRUN_FULL_ERROR=1 re-raises instead. In a multirun, one failing job does not stop the others;
the table of the jobs and the exit code (the highest of all jobs) are built from the job
directories on disk at the end (nnrun.sweeps), whichever launcher ran them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from nnrun.catalog import REFUSED, checked_node, experiment_files, path_of
from nnrun.errors import ConfigError, Issue, NnrunError

_STATE: dict[str, Any] = {"exit": 0}  # a single run's exit code (a sweep's comes from disk)


def _register_experiments() -> None:
    """Make the packaged experiments and `./experiments/*.yaml` (or $NNRUN_EXPERIMENTS) selectable
    as `experiment=<name>`, through a config source that lists file names and parses only the
    selected file (hydra_plugins/nnrun_sweeps/experiments.py). A wheel install's plugin scan
    finds it too; registering twice is harmless."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.nnrun_sweeps.experiments import (
        NnrunExperimentsSearchPath,
        NnrunExperimentsSource,
    )

    for plugin in (NnrunExperimentsSource, NnrunExperimentsSearchPath):
        Plugins.instance().register(plugin)


_checked_node = checked_node  # the node a selected experiment file becomes (tests call it)


def _raise_if_refused(cfg: DictConfig) -> None:
    refused = cfg.get(REFUSED) if isinstance(cfg, DictConfig) else None
    if refused is None:
        return
    data = OmegaConf.to_container(refused, resolve=False)
    raise ConfigError(data["summary"], [Issue(**i) for i in data["issues"]])


def experiment_source(name: str | None) -> Path | None:
    """The YAML file an experiment came from, for line numbers in errors (and the folder that
    relative data paths start from)."""
    if not name:  # a re-run of a run directory (its manifest's `rerun`) names the file itself
        rerun = os.environ.get("NNRUN_EXPERIMENT_FILE")
        return Path(rerun) if rerun else None
    return path_of(name)


def _job(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from nnrun.pipeline import STAGES, run_stage
    from nnrun.redact import redact
    from nnrun.run_records import error_record
    from nnrun.rundir import Terminated, job_guard
    from nnrun.sweeps.job import record_failure, say

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    source = experiment_source(hc.runtime.choices.get("experiment"))
    overrides = list(hc.overrides.task)
    try:
        with job_guard(run_dir, _raw_stage(cfg)):  # lock; drop an old COMPLETED before all else
            _raise_if_refused(cfg)
            config = _to_container(cfg, source)
            stage = config.get("stage", "run")
            if stage not in STAGES:
                raise ConfigError("unknown stage:", [Issue(
                    "unknown_stage", f"stage `{stage}`", "stage",
                    hint="one of " + ", ".join(STAGES))])
            say(run_stage(stage, config, run_dir, source, overrides))
            if stage == "export":
                _scrub_export(config, run_dir)
        return 0
    except Terminated as err:  # SIGTERM, or SIGUSR2 (preempted)
        say(f"nnrun: {err} (run directory, incomplete: {run_dir})", error=True)
        return err.exit_code
    except NnrunError as err:
        if full_errors():
            raise
        say(f"nnrun: {redact(str(err))}", error=True)
        record_failure(run_dir, {**error_record(err), "code": err.issues[0].code if err.issues
                                 else None}, _raw_stage(cfg))  # a sweep reads it from disk
        if (run_dir / "manifest.json").exists():
            print(f"  (run directory, incomplete: {run_dir})", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        say("nnrun: interrupted", error=True)
        return 130


def full_errors() -> bool:
    """Re-raise instead of printing the compact report: NNRUN_FULL_ERROR=1, or a debugger
    (pdb, an IDE) is attached, so that it stops where the error happened."""
    return os.environ.get("NNRUN_FULL_ERROR") == "1" or _under_debugger()


def _under_debugger() -> bool:
    """Hydra's test (`hydra._internal.utils.is_under_debugger`: pdb or pydevd started the
    program, or a trace function is set), without `inspect.stack()`, which reads the source lines
    of every frame (0.1-0.2 s in a deep stack, paid by every reported mistake)."""
    files = []
    frame = sys._getframe()
    while frame is not None:
        files.append(frame.f_code.co_filename)
        frame = frame.f_back
    if len(files) >= 3 and files[-3].endswith(("/pdb.py", "/pydevd.py")):
        return True
    return sys.gettrace() is not None


def _scrub_export(config: dict[str, Any], run_dir: Path) -> None:
    """An exported script and its data never carry a secret (a token passed on the command line
    as a prompt, say): replace it, as in every other file nnrun writes."""
    from nnrun.redact import scrub_file

    target = config.get("export_path")
    scripts = [Path(target)] if target else list(run_dir.glob("*_standalone.py"))
    for script in scripts:
        scrub_file(script)
        scrub_file(script.with_name(script.stem + "_data.json"))


def _raw_stage(cfg: DictConfig) -> str:
    """The stage, read before the config is resolved (resolving may fail: that is reported
    later, inside the job guard)."""
    try:
        return str(OmegaConf.select(cfg, "stage", default="run"))
    except Exception:  # an unresolvable interpolation: treat it as a run (the safe choice)
        return "run"


def _to_container(cfg: DictConfig, source: Path | None) -> dict[str, Any]:
    from omegaconf.errors import OmegaConfBaseException

    from nnrun.load import locate

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        issue = Issue("unresolved_interpolation", str(err).splitlines()[0], key,
                      hint="check the ${...} reference (e.g. ${params.x} needs params.x)")
        raw = OmegaConf.to_container(cfg, resolve=False)
        raise ConfigError("the config could not be resolved:",
                          [locate(issue, source, raw)]) from None


@hydra.main(version_base="1.3", config_path="pkg://nnrun.configs", config_name="config")
def _hydra_entry(cfg: DictConfig) -> int:
    from nnrun.sweeps.job import run

    code = run(cfg, _job)  # in a multirun, a failed job raises (after recording it on disk)
    _STATE["exit"] = max(_STATE["exit"], code)
    return code


def _register_resolvers() -> None:
    """`${nnrun_dirname:NAME[,CHOICE]}`: the experiment name as a directory component,
    `invalid-name` when it is not a safe name (so a hostile name can never place the run
    directory; the job then reports the name). Used by configs/config.yaml's hydra.run.dir and
    hydra.sweep.dir, with CHOICE the `experiment=` selection."""
    if not OmegaConf.has_resolver("nnrun_dirname"):
        OmegaConf.register_new_resolver("nnrun_dirname", _dirname)


def _dirname(name: Any, choice: Any = None) -> str:
    """A file that did not parse, or has no `name`, gives no name: its `experiment=` choice (the
    file's stem) names the run instead, so the failed run is findable (`none`: neither)."""
    from nnrun.policy import safe_dirname

    given = next((n for n in (name, choice) if n not in (None, "none")), None)
    return "none" if given is None else safe_dirname(given)


class _OutputDirUnusable(BaseException):
    """Raised from a Hydra callback before Hydra creates the run directory; a BaseException so
    that Hydra's `except Exception` reporter (a traceback, exit 1) lets it through to main()."""

    def __init__(self, error: NnrunError) -> None:
        super().__init__(str(error))
        self.error = error


try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover (hydra-core < 1.1)
    _Callback = object  # type: ignore[assignment,misc]


class OutputPreflight(_Callback):
    """Check that the run (or sweep) directory can be created before Hydra tries to: an
    unwritable output directory is an OutputError (exit 15), not a Hydra traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.sweep.dir)))


def _check_writable(target: Path) -> None:
    from nnrun.errors import OutputError

    probe = target.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    why = "is not a directory" if probe.exists() and not probe.is_dir() else "is not writable"
    raise _OutputDirUnusable(OutputError("the run directory cannot be created:", [Issue(
        "output_not_writable", f"{target}: {probe} {why}", "hydra.run.dir",
        hint="choose a writable place, e.g. hydra.run.dir=/scratch/me/run "
             "(multirun: hydra.sweep.dir=...)")]))


def _command_line_error(err: Exception) -> NnrunError | None:
    """The user-facing error for an exception Hydra raised before any job ran (None: not one)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    from nnrun.errors import CommandLineError, did_you_mean

    if isinstance(err, NnrunError):  # raised by nnrun's own sweeper (a value split at commas)
        return err
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, choice = err.missing_cfg_file.rpartition("/")
        if err.missing_cfg_file.startswith("experiment/"):
            return _unknown_experiment(err.missing_cfg_file.removeprefix("experiment/"))
        options = sorted(err.options or [])
        return CommandLineError("the command line could not be used:", [Issue(
            "unknown_option", f"{group} `{choice}` does not exist", group,
            hint=did_you_mean(choice, options) if options else "")])
    if isinstance(err, OverrideParseException):
        return CommandLineError("the command line could not be used:", [Issue(
            "bad_override", f"cannot parse `{err.override}`: {err.message.splitlines()[0]}",
            "command line",
            hint="write key=value (quote values with spaces or commas: 'params.x=\"a, b\"'); "
                 "see `nnrun --help`")])
    if isinstance(err, HydraException):
        text = str(err).strip().splitlines()[0]
        hint = "see `nnrun --help`; HYDRA_FULL_ERROR=1 shows Hydra's traceback"
        if text.startswith("Could not override"):  # the key is not in the composed config
            key = text.split("'")[1] if "'" in text else "key"
            hint = (f"`{key}` is not in the config: add it with +{key}=... (or ++{key}=... to "
                    "add or override); check the spelling with `nnrun --cfg job`")
        return CommandLineError("the command line could not be used:", [Issue(
            "hydra_error", text, "command line", hint=hint)])
    return None


def _unknown_experiment(choice: str) -> ConfigError:
    from nnrun.errors import did_you_mean

    names = sorted(experiment_files())
    if "/" in choice or choice.endswith((".yaml", ".yml", ".json")):
        path = Path(choice)
        hint = (f"an experiment is chosen by name: run `nnrun experiment={path.stem}` in the "
                f"folder that holds experiments/{path.name}, or set NNRUN_EXPERIMENTS="
                f"{path.parent} (NNRUN_EXPERIMENTS names the folder of experiment files)")
    else:
        hint = did_you_mean(choice, names) + " (files in ./experiments/ or $NNRUN_EXPERIMENTS)"
    return ConfigError("unknown experiment:", [Issue(
        "unknown_experiment", f"no experiment named `{choice}`", "experiment", hint=hint)])


def main() -> None:
    """Console-script entry point (`nnrun ...`, `python -m nnrun ...`, `nnrun verify DIR`,
    `nnrun summarize SWEEP_DIR`)."""
    from nnrun.timings import main_started

    main_started()  # the manifest's timings_s count from here (nnrun.timings)
    if len(sys.argv) > 1 and sys.argv[1] == "verify":
        from nnrun.verify import main as verify_main

        sys.exit(verify_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "summarize":
        from nnrun.sweeps.summary import main as summarize_main

        sys.exit(summarize_main(sys.argv[2:]))
    from nnrun.hydra_listing import reuse_listing_repositories
    from nnrun.hydra_mode import read_mode_without_composing
    from nnrun.libyaml import parse_configs_with_libyaml
    from nnrun.sweeps.plugins import SWEEP, end_of_sweep, register_plugins

    SWEEP.reset()
    register_plugins()
    _register_resolvers()
    _register_experiments()
    reuse_listing_repositories()  # --help and tab completion list groups ~60 times
    read_mode_without_composing()  # Hydra composes once to read hydra.mode, then again to run
    parse_configs_with_libyaml()  # every config file Hydra reads
    # Hydra prints its own errors (a traceback for most) and exits 1; this makes it raise them,
    # so that a command-line mistake is reported like every other mistake (exit 2, or 10).
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_entry()
    except _OutputDirUnusable as err:
        print(f"nnrun: {err.error}", file=sys.stderr, flush=True)
        sys.exit(err.error.exit_code)
    except BaseException as err:
        error = _command_line_error(err) if isinstance(err, Exception) else None
        if error is None and SWEEP.dir is not None and not isinstance(err, SystemExit):
            sys.exit(end_of_sweep(err))  # Ctrl-C, a signal, a launcher error: summary from disk
        if error is None or full_errors():
            raise
        print(f"nnrun: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    if SWEEP.dir is not None:
        sys.exit(end_of_sweep(None))
    sys.exit(_STATE["exit"])
