"""Sweeps that survive the night: job state on disk, resume, failure isolation, summaries.

Invariant: everything a sweep reports (the job table, `sweep_summary.json`/`.csv`, the aggregated
tensors and plots, the exit code) is rebuilt from the job directories on disk, never from the
memory of the launching process, so it is the same with every launcher (in-process, joblib,
submitit, SLURM) and `nnrun summarize SWEEP_DIR` can rebuild it at any time.

Modules: `keys` (job directories, control keys, sweep values), `state` (one job's state read from
its directory), `summary` (the table and files), `aggregate` (tensors and plots along the swept
axes), `job` (what runs around each job), `hydra` (the callback, sweeper and launchers).
"""
