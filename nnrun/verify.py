"""`nnrun verify RUN_DIR`: re-check a run directory against its manifest.

Invariant: read-only. Exit 0 only when the directory is a completed run whose every recorded
artifact is present with its recorded size and sha256 (tensor files also open with safetensors
and hold the recorded shape and dtype), `COMPLETED` and `manifest.json` agree, and no unrecorded
file sits among the results.

Exit codes: 0 verified; 20 tampered or inconsistent (an artifact missing, changed or unreadable, an
unrecorded file, COMPLETED and manifest.json disagree); 21 incomplete (no COMPLETED: the run is
still running, failed, was terminated or killed); 22 not a run directory / usage.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.atomic import sha256_file

OK, TAMPERED, INCOMPLETE, USAGE = 0, 20, 21, 22
# Files a run directory may hold besides its artifacts: Hydra's record and log, the lock, the
# markers, and what `stage=export` writes beside the results.
ALLOWED_TOP = {"manifest.json", "COMPLETED", ".nnrun.lock"}
ALLOWED_DIRS = {".hydra"}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    incomplete: bool = False
    checked: int = 0

    @property
    def code(self) -> int:
        if self.problems:
            return TAMPERED
        return INCOMPLETE if self.incomplete else OK


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:
        return None, f"{path.name} is unreadable ({err})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a manifest"
    return data, None


def verify(run_dir: Path) -> Report:
    """Check `run_dir`; see the module docstring for what is checked."""
    report = Report()
    manifest, err = _read_json(run_dir / "manifest.json")
    final, err2 = _read_json(run_dir / "COMPLETED")
    report.problems += [e for e in (err, err2) if e]
    if (run_dir / "COMPLETED").exists() and final is None and not err2:
        report.problems.append("COMPLETED is not a manifest")
    if final is not None:
        if final.get("status") != "completed":
            report.problems.append(f"COMPLETED holds a manifest with status "
                                   f"`{final.get('status')}`")
        if manifest is None or manifest.get("status") == "running":
            report.notes.append("manifest.json was not yet replaced when the process ended "
                                "(killed during completion); COMPLETED holds the final manifest")
        elif manifest != final:
            report.problems.append("manifest.json and COMPLETED differ")
        _check_artifacts(run_dir, final, report)
        return report
    if manifest is None:
        if not report.problems:  # killed before its manifest, or a stage that writes none
            report.incomplete = True
            report.notes.append("no manifest.json and no COMPLETED: not a finished run")
        return report
    status = manifest.get("status")
    if status == "completed":
        report.problems.append("manifest.json says completed but there is no COMPLETED")
    else:
        report.incomplete = True
        error = (manifest.get("error") or {}).get("message", "")
        report.notes.append(f"incomplete: status `{status}`" + (f": {error.splitlines()[0]}"
                                                               if error else ""))
    _check_artifacts(run_dir, manifest, report, complete=False)
    return report


def _check_artifacts(run_dir: Path, manifest: dict[str, Any], report: Report,
                     complete: bool = True) -> None:
    root = run_dir.resolve()
    recorded: set[str] = set()
    for artifact in manifest.get("artifacts") or []:
        rel = str(artifact.get("path", ""))
        recorded.add(rel)
        path = run_dir / rel
        if not path.resolve().is_relative_to(root):
            report.problems.append(f"{rel}: recorded path points outside the run directory")
            continue
        if not path.is_file():
            report.problems.append(f"{rel}: missing")
            continue
        report.checked += 1
        if "bytes" in artifact and path.stat().st_size != artifact["bytes"]:
            report.problems.append(f"{rel}: size {path.stat().st_size}, manifest says "
                                   f"{artifact['bytes']}")
        if artifact.get("sha256") and sha256_file(path) != artifact["sha256"]:
            report.problems.append(f"{rel}: sha256 differs from the manifest (modified)")
        if path.suffix == ".safetensors":
            _check_tensor(path, rel, artifact, report)
    if complete:
        for extra in _unrecorded(run_dir, recorded):
            if Path(extra).name.startswith(".tmp-"):  # a write in flight when a process died
                report.notes.append(f"{extra}: temporary file of a killed process (removable)")
            else:
                report.problems.append(f"{extra}: not recorded in the manifest")


def _check_tensor(path: Path, rel: str, artifact: dict[str, Any], report: Report) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                      for k in f.keys()}
    except Exception as err:  # any parse failure of a tensor file is tampering or corruption
        report.problems.append(f"{rel}: not a readable safetensors file ({err})")
        return
    want_shape, want_dtype = artifact.get("shape"), artifact.get("dtype")
    if want_shape is None:
        return
    names = {"float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16",
             "int64": "I64", "int32": "I32", "bool": "BOOL", "uint8": "U8", "int8": "I8"}
    if not any(shape == list(want_shape) and (want_dtype is None or dtype ==
               names.get(want_dtype, want_dtype)) for shape, dtype in shapes.values()):
        found = ", ".join(f"{k} {tuple(s)} {d}" for k, (s, d) in shapes.items()) or "no tensor"
        report.problems.append(f"{rel}: holds {found}; manifest says {tuple(want_shape)} "
                               f"{want_dtype}")


def _unrecorded(run_dir: Path, recorded: set[str]) -> list[str]:
    out = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(run_dir)
        if rel.parts[0] in ALLOWED_DIRS or str(rel) in recorded:
            continue
        if len(rel.parts) == 1 and (rel.name in ALLOWED_TOP or rel.suffix == ".log"
                                    or rel.name.endswith(("_standalone.py",
                                                          "_standalone_data.json"))):
            continue
        out.append(str(rel))
    return out


def main(argv: list[str]) -> int:
    """`nnrun verify RUN_DIR [RUN_DIR ...]`: prints a report per directory; exits with the worst
    code (see the module docstring)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nusage: nnrun verify RUN_DIR [RUN_DIR ...]",
              file=sys.stderr if not argv else sys.stdout)
        return USAGE if not argv else OK
    worst = OK
    for arg in argv:
        run_dir = Path(arg)
        if not run_dir.is_dir():
            print(f"nnrun verify: {run_dir}: not a directory", file=sys.stderr)
            worst = max(worst, USAGE)
            continue
        report = verify(run_dir)
        verdict = {OK: "verified", TAMPERED: "FAILED", INCOMPLETE: "incomplete"}[report.code]
        print(f"{run_dir}: {verdict} ({report.checked} artifacts checked)")
        for note in report.notes:
            print(f"  note: {note}")
        for problem in report.problems:
            print(f"  problem: {problem}")
        worst = max(worst, report.code)
    return worst
