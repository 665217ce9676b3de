"""One job's hold on its run directory: an exclusive lock, a clean start, SIGTERM and write
failures turned into a manifest that says what happened, and completion as one atomic step.

Invariant (see nnrun.outputs): while a job runs nobody else writes its directory; `COMPLETED`
exists only when every artifact is in place and holds the final manifest; `manifest.json` never
says `completed` without `COMPLETED`. A running job's manifest names its pid and host and carries
a heartbeat renewed every NNRUN_HEARTBEAT_S seconds, so a job killed without warning (SIGKILL,
a lost node) is recognisable as dead rather than "running" forever; SIGUSR2 (SLURM's warning
before preemption or the time limit) ends a job as `preempted`, SIGTERM as `terminated`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnrun.atomic import _fsync_dir, atomic_write_bytes, atomic_write_text
from nnrun.errors import Issue, OutputError
from nnrun.redact import install_log_filter, redact, scrub_file

LOCK_FILE = ".nnrun.lock"
TMP_PREFIX = ".tmp-"
WRITING_STAGES = ("run", "export")  # stages that write into the run directory
# Always the output's fault, whatever the file: the disk or quota is full, the filesystem is
# read-only, the file is too large.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# The output's fault when the file is inside the run directory.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EIO}


class Terminated(BaseException):
    """SIGTERM arrived during a job (a BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it)."""

    exit_code = 143
    status = "terminated"


class Preempted(Terminated):
    """SIGUSR2 arrived (SLURM's signal before preemption or the time limit, as submitit asks
    for it), or submitit is requeueing the job: the job stops, resumable."""

    exit_code = 140  # 128 + SIGUSR2
    status = "preempted"


# Set when submitit announces a preemption (its checkpoint hook runs, then it raises
# SystemExit wherever the job is): the job then ends as `preempted`, not `failed`.
PREEMPTION: dict[str, Any] = {"requested": False}
HEARTBEAT_S = 30.0


def heartbeat_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("NNRUN_HEARTBEAT_S", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


def process_facts() -> dict[str, Any]:
    """Who runs the job: pid, host, SLURM job id (if any) and the heartbeat interval."""
    from nnrun.provenance import host

    slurm = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if slurm and os.environ.get("SLURM_ARRAY_TASK_ID"):
        slurm = f"{slurm}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"pid": os.getpid(), "host": host(), "slurm_job_id": slurm,
            "heartbeat_s": heartbeat_interval()}


def end_status(error: dict[str, Any] | None) -> str:
    """The manifest status for how a job ended (`error` as run_records.error_record makes it)."""
    if error is None:
        return "completed"
    kind = error.get("type")
    if kind == "Preempted" or (kind == "SystemExit" and PREEMPTION["requested"]):
        return "preempted"
    return {"Terminated": "terminated", "KeyboardInterrupt": "interrupted"}.get(kind, "failed")


class Heartbeat:
    """A daemon thread calling `beat()` every interval until stopped (stop() waits for it, so
    nothing writes the manifest after the job has written its final one)."""

    current: Heartbeat | None = None

    def __init__(self, beat, interval: float) -> None:
        self.beat, self.interval = beat, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="nnrun-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a missed beat (disk full) must not kill the job
                pass

    @classmethod
    def start(cls, beat) -> Heartbeat:
        cls.stop_current()
        cls.current = cls(beat, heartbeat_interval())
        cls.current.thread.start()
        return cls.current

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=30)

    @classmethod
    def stop_current(cls) -> None:
        if cls.current is not None:
            cls.current.stop()
            cls.current = None


def inside(base: Path, name: str) -> Path:
    """`base / name`, refused if it resolves outside `base` (absolute names, `..`, symlinks)."""
    path = base / name
    root = base.resolve()
    if not path.resolve().is_relative_to(root):
        raise OutputError("refused to write outside the run directory:", [Issue(
            "path_escapes", f"`{name}` resolves to {path.resolve()}, outside {root}", "",
            hint="artifact names come from node ids and experiment names: use plain names")])
    return path


def manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(redact(manifest), indent=2) + "\n"


def checkpoint(name: str) -> None:
    """Test hook: with NNRUN_TEST_CHECKPOINT=<name>[,<name>...] announce the checkpoint on stderr
    and sleep NNRUN_TEST_CHECKPOINT_SLEEP seconds there (so a test can kill the run at it)."""
    wanted = os.environ.get("NNRUN_TEST_CHECKPOINT")
    if not wanted or name not in wanted.split(","):
        return
    print(f"nnrun-checkpoint: {name}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("NNRUN_TEST_CHECKPOINT_SLEEP", "30")))


def clear_completed(run_dir: Path) -> None:
    """Forget a previous run: move its manifest out of the way first, then drop COMPLETED (so
    `manifest.json` never says completed without COMPLETED, even for an instant)."""
    marker = run_dir / "COMPLETED"
    manifest = run_dir / "manifest.json"
    if not marker.exists() and not manifest.exists():
        return
    old = run_dir / f"{TMP_PREFIX}previous-manifest.json"
    with contextlib.suppress(FileNotFoundError):
        os.replace(manifest, old)
    marker.unlink(missing_ok=True)
    old.unlink(missing_ok=True)
    _fsync_dir(run_dir)


def complete(run_dir: Path, text: str) -> None:
    """Write the final manifest as `COMPLETED` and then as `manifest.json` (the same inode).

    SIGTERM is held back meanwhile, so a handler never runs between the two steps.
    """
    data = text.encode("utf-8")
    fd, name = tempfile.mkstemp(dir=run_dir, prefix=TMP_PREFIX, suffix=".json")
    tmp = Path(name)
    blocked = _block_sigterm()
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        checkpoint("before_completed")
        marker = run_dir / "COMPLETED"
        marker.unlink(missing_ok=True)
        try:
            os.link(tmp, marker)  # atomic: COMPLETED appears with its full content
        except OSError:  # a filesystem without hard links: an atomic copy instead
            atomic_write_bytes(marker, data)
        _fsync_dir(run_dir)
        checkpoint("between_completed_and_manifest")
        os.replace(tmp, run_dir / "manifest.json")
        _fsync_dir(run_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _unblock_sigterm(blocked)
    checkpoint("completed")


def _block_sigterm() -> bool:
    if threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "pthread_sigmask"):  # Windows
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return True


def _unblock_sigterm(blocked: bool) -> None:
    if blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def remove_stale_temporaries(run_dir: Path) -> int:
    """`.tmp-*` files are only ever in flight inside a live job; under the lock (or once the job
    is known dead), any that exist were left by a killed one. Returns how many were removed."""
    removed = 0
    for path in run_dir.rglob(f"{TMP_PREFIX}*"):
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class _Lock:
    """An exclusive, non-blocking `flock` on `<run_dir>/.nnrun.lock` (released when the process
    dies, so a killed run never leaves the directory locked)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one run per directory is then up to the user
            return
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise OutputError("the run directory is in use:", [Issue(
                "run_dir_locked", f"another nnrun process (pid {holder}) is writing into "
                f"{self.path.parent}", "",
                hint="wait for it to finish, or choose another directory (hydra.run.dir=...)")]
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


@contextlib.contextmanager
def job_guard(run_dir: Path, stage: str) -> Iterator[None]:
    """Hold `run_dir` for one job of a writing stage (see the module docstring)."""
    if stage not in WRITING_STAGES:
        yield
        return
    lock = _Lock(run_dir)
    previous = None
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            if stage == "run":
                clear_completed(run_dir)
            remove_stale_temporaries(run_dir)
            for path in (run_dir / ".hydra").glob("*.yaml"):  # a token given on the command line
                scrub_file(path)
        except OSError as err:
            raise output_error(err, run_dir) from None
        install_log_filter()
        PREEMPTION["requested"] = False
        previous = _install_sigterm()
        checkpoint("locked")
        yield
    except Terminated as err:
        Heartbeat.stop_current()
        signame = "SIGUSR2" if isinstance(err, Preempted) else "SIGTERM"
        _mark_manifest(run_dir, err.status, {"type": type(err).__name__,
                                             "exit_code": err.exit_code,
                                             "message": f"{err.status} by {signame}",
                                             "node": None})
        raise
    except KeyboardInterrupt:
        Heartbeat.stop_current()
        _mark_manifest(run_dir, "interrupted", {"type": "KeyboardInterrupt", "exit_code": 130,
                                                "message": "interrupted (Ctrl-C)", "node": None})
        raise
    except OSError as err:
        if not is_output_error(err, run_dir):
            raise
        error = output_error(err, run_dir)
        _mark_manifest(run_dir, "failed", {"type": "OutputError", "exit_code": error.exit_code,
                                           "message": str(error), "node": None}, replace=True)
        raise error from None
    finally:
        Heartbeat.stop_current()
        _restore_sigterm(previous)
        lock.release()


def is_output_error(err: OSError, run_dir: Path) -> bool:
    if err.errno in _DISK_ERRNOS:
        return True
    if err.errno not in _PATH_ERRNOS:
        return False
    names = [n for n in (err.filename, err.filename2) if n]
    root = run_dir.resolve()
    return any(Path(os.fsdecode(n)).resolve().is_relative_to(root) for n in names)


def output_error(err: OSError, run_dir: Path) -> OutputError:
    what = os.strerror(err.errno) if err.errno else str(err)
    where = f": {err.filename}" if err.filename else ""
    hint = {errno.ENOSPC: "free some space, or write elsewhere (hydra.run.dir=...)",
            errno.EDQUOT: "your disk quota is full: free some space or write elsewhere",
            errno.EROFS: "the filesystem is read-only: write elsewhere (hydra.run.dir=...)"}.get(
        err.errno, "check the permissions, or write elsewhere (hydra.run.dir=...)")
    return OutputError("the run directory could not be written:", [Issue(
        "output_not_writable", f"{what}{where}", "", hint=f"{hint} [run directory: {run_dir}]")])


def _install_sigterm():
    """Turn SIGTERM into `Terminated` and SIGUSR2 into `Preempted` while a job runs, each only
    when nobody else handles it (submitit installs its own handlers on SLURM, and requeues the
    job from them; those are left alone)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {}
    for name, error in (("SIGTERM", Terminated), ("SIGUSR2", Preempted)):
        signum = getattr(signal, name, None)
        if signum is None or signal.getsignal(signum) is not signal.SIG_DFL:
            continue

        def handler(signum, frame, error=error):  # noqa: ARG001
            raise error(f"{error.status} by {signal.Signals(signum).name}")

        signal.signal(signum, handler)
        previous[signum] = signal.SIG_DFL
    return previous or None


def _restore_sigterm(previous) -> None:
    for signum, handler in (previous or {}).items():
        signal.signal(signum, handler)


def mark_preempted(run_dir: Path) -> None:
    """submitit's checkpoint hook: the job is about to be stopped and requeued."""
    PREEMPTION["requested"] = True
    Heartbeat.stop_current()
    _mark_manifest(run_dir, "preempted", {"type": "Preempted", "exit_code": Preempted.exit_code,
                                          "message": "preempted (requeued by submitit)",
                                          "node": None})


def _mark_manifest(run_dir: Path, status: str, error: dict[str, Any],
                   replace: bool = False) -> None:
    """Record how a job ended if its manifest still says `running` (or, with `replace`, also
    `failed`: a write error is reported as the OutputError it is). Best effort: the disk may be
    full."""
    path = run_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text()) if path.exists() else None
        if manifest is None:
            if status not in ("terminated", "preempted"):
                return
            manifest = {"manifest_version": 1, "status": "running", "artifacts": []}
        if manifest.get("status") == "running" or (replace and manifest.get("status") == "failed"):
            manifest.update(status=status, error=error)
            manifest.setdefault("finished_at", None)
            if not manifest["finished_at"]:
                from nnrun.outputs import now

                manifest["finished_at"] = now()
            atomic_write_text(path, manifest_text(manifest))
    except (OSError, ValueError):
        pass
