"""nnrun's Hydra plugins for sweeps: the callback that summarises a multirun on the launching
machine, a sweeper that never stops at a failed job, and submitit launchers whose failed jobs
really fail. (Hydra takes sweepers and launchers only from the `hydra_plugins` namespace:
`hydra_plugins/nnrun_sweeps` names the classes built here, and `register_plugins` registers them
by hand, because Hydra's scan of that namespace cannot see an editable install.)

Invariant: the summary and the exit code come from the sweep directory on disk
(nnrun.sweeps.summary), whichever launcher ran the jobs and however the multirun ended (all jobs
returned, Ctrl-C, SIGTERM, a launcher error); the launching process exits with the highest code
of all jobs (130 when interrupted).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nnrun.sweeps.job import DEVICE_ENV
from nnrun.sweeps.keys import check_split_values, job_overrides, register_resolvers, split

register_resolvers()  # workers unpickle this module before they resolve their job directory
log = logging.getLogger("nnrun")


@dataclass
class _SweepState:
    """The launching process's handle on the running multirun (not its results: those are on
    disk)."""

    dir: Path | None = None
    summary: Any = None

    def reset(self) -> None:
        self.dir, self.summary = None, None


SWEEP = _SweepState()


def finish(sweep_dir: Path) -> Any:
    """Summarise the sweep from disk and print the table (once per multirun)."""
    from nnrun.sweeps.summary import summarize, table

    summary = summarize(sweep_dir, final=True)
    print(table(summary), file=sys.stderr, flush=True)
    SWEEP.summary = summary
    return summary


def end_of_sweep(error: BaseException | None) -> int:
    """The exit code of a multirun that ended normally (`error` None) or early."""
    from nnrun.rundir import Terminated

    if error is not None and not isinstance(error, (KeyboardInterrupt, Terminated)):
        print(f"nnrun: the sweep stopped early: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
    summary = SWEEP.summary
    if summary is None and SWEEP.dir is not None and SWEEP.dir.is_dir():
        summary = finish(SWEEP.dir)
    code = summary.exit_code if summary is not None else 0
    if isinstance(error, KeyboardInterrupt):
        return 130
    if isinstance(error, Terminated):
        return error.exit_code
    return max(code, 1) if error is not None else code


class SweepCallback(Callback):
    """configs/config.yaml: `hydra.callbacks.nnrun_sweep`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP.dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish(Path(str(config.hydra.sweep.dir)))


def register_plugins() -> None:
    """Make nnrun's sweeper and launchers known to Hydra (a wheel install is found by Hydra's
    own scan as well; registering twice is harmless)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's scan first: it re-executes the modules ours derive from
    import hydra_plugins.nnrun_sweeps as ours

    for cls in (ours.NnrunSweeper, ours.NnrunLocalLauncher, ours.NnrunSlurmLauncher):
        Plugins.instance().register(cls)


@contextmanager
def _composed_once(loader: Any, launcher: Any):
    """Hydra composes every job twice: once to check the batch before launching any job, once
    in the launcher (about 0.3 s each on this project's machine). With the basic launcher,
    which runs the jobs in this process, the config the check composed is handed to the
    launcher, once, instead of composing it again. (Other launchers pickle the loader to their
    workers, where a patched method could not go: they compose twice as before.)"""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    if not isinstance(launcher, BasicLauncher):
        yield
        return
    compose = loader.load_sweep_config
    checked: dict[tuple[str, ...], Any] = {}

    def load_sweep_config(master_config: Any, sweep_overrides: list[str]) -> Any:
        key = tuple(sweep_overrides)
        if key in checked:
            return checked.pop(key)   # the launcher's call: the check's config, unused so far
        checked[key] = compose(master_config, sweep_overrides)
        return checked[key]

    loader.load_sweep_config = load_sweep_config
    try:
        yield
    finally:
        del loader.load_sweep_config   # the bound method again


class SweeperMixin:
    """Mixed into Hydra's basic sweeper (Cartesian product, batches): it refuses values that
    Hydra would split at their commas, writes the plan of every job (`sweep_plan.json`) and pins
    hub models before launching, and does not stop at a failed job: every batch runs, and the
    summary reports the failures. (A mixin, not a subclass: Hydra's plugin scan re-executes
    its own modules, and a class derived from a BasicSweeper defined before the scan breaks.)"""

    def sweep(self, arguments: list[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from nnrun.sweeps.state import write_plan

        check_split_values(arguments)
        params_conf = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf),
                                              self.max_batch_size)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        jobs = [[o for o in job if split(o)[0] != "resume"]
                for batch in self.overrides for job in batch]
        hydra_overrides = [str(o) for o in self.config.hydra.overrides.hydra]
        write_plan(sweep_dir, jobs, {"task": list(arguments), "hydra": hydra_overrides})
        self._pin_models(sweep_dir, jobs)
        returns = []
        initial_job_idx = 0
        with _composed_once(self.hydra_context.config_loader, self.launcher):
            while not self.is_done():
                batch = self.get_job_batch()
                self.validate_batch_is_legal(batch)  # every job composes before any runs
                returns.append(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
                initial_job_idx += len(batch)
        return returns

    def _pin_models(self, sweep_dir: Path, jobs: list[list[str]]) -> None:
        from nnrun.sweeps.pins import is_hub_id, pin_models

        keys = {tuple(o for o in job_overrides(job) if split(o)[0].startswith("model")): job
                for job in jobs}
        base = OmegaConf.select(self.config, "model.path", default=None)
        if list(keys) == [()] and not (isinstance(base, str) and is_hub_id(base)):
            return  # one model and not from the hub: nothing to pin (and nothing to compose)
        models = []
        for job in keys.values():
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
                path, revision = cfg.model.path, cfg.model.get("revision")
            except Exception:  # composition errors are reported by Hydra, model errors by the job
                continue
            models.append((str(path), None if revision is None else str(revision)))
        pin_models(sweep_dir, models)


class SubmititMixin:
    """What nnrun adds to Hydra's submitit launchers (mixed in before them)."""

    gpu_device = "cuda"

    def _wants_gpu(self) -> bool:
        p = self.params
        gres = str(p.get("gres") or "")
        return bool(p.get("gpus_per_node") or p.get("gpus_per_task") or "gpu" in gres)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """On the compute node: run the job; a failed job raises, so submitit and SLURM record it
        as failed (Hydra's own launcher reports it as completed)."""
        if self._wants_gpu() and self.gpu_device:
            os.environ.setdefault(DEVICE_ENV, self.gpu_device)
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED:
            raise ret._return_value
        return ret

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on SIGUSR2 (preemption or time limit) before it requeues the job
        and exits: the job's manifest says `preempted`, and the requeued job (same overrides,
        same directory) runs it again."""
        from hydra.core.hydra_config import HydraConfig

        from nnrun.rundir import mark_preempted

        try:
            mark_preempted(Path(HydraConfig.get().runtime.output_dir))
        except Exception:  # the manifest is best effort: the requeue must happen
            pass
        return super().checkpoint(*args, **kwargs)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        """Hydra's launch, except that it waits for every job (one failed job does not abandon
        the others' results), turns a job that died into a failed result, and cancels the jobs
        on Ctrl-C."""
        import submitit

        jobs: list[Any] = []
        original = submitit.AutoExecutor.map_array

        def keep(executor, fn, *iterables):
            jobs.extend(original(executor, fn, *iterables))
            return []

        submitit.AutoExecutor.map_array = keep
        try:
            super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = original
        results = []
        try:
            for job, overrides in zip(jobs, job_overrides):
                try:
                    results.append(job.results()[0])
                except Exception as err:  # failed, or died without a result (OOM, node lost)
                    results.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                                             _return_value=err))
        except KeyboardInterrupt:
            for job in jobs:
                try:
                    job.cancel(check=False)
                except Exception:  # already finished
                    pass
            raise
        return results
