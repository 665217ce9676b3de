"""Names in a sweep: a job's directory from its overrides, the swept parameters and their values,
and the check that refuses a value Hydra would silently split at its commas.

Invariant: a job's directory depends only on its task overrides (sorted, control keys such as
`resume` left out), never on the time, the job number or the launcher, so re-running the same
sweep (or a requeued SLURM job) lands in the same directories, and a grown sweep reuses the
directories of the points it already had.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from nnrun.errors import CommandLineError, Issue

CONTROL_KEYS = ("resume",)  # change how a sweep runs, not what a job computes
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
READABLE_CHARS = 60
QUOTES = "'\""


def split(override: str) -> tuple[str, str]:
    """`params.layer=3` → (`params.layer`, `3`); `+x=1` → (`x`, `1`); `~x` → (`x`, ``)."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def job_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define what a job computes (sorted, control keys left out)."""
    return sorted(o for o in overrides if split(o)[0] not in CONTROL_KEYS)


def job_dir_name(overrides: list[str]) -> str:
    """`<readable overrides>_<8 hex of their hash>`, e.g. `layer=3,position=-1_1f0c2a9b`."""
    kept = job_overrides(overrides)
    digest = hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:8]
    parts = []
    for override in kept:
        key, value = split(override)
        short = key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
        parts.append(f"{short}={value.strip(QUOTES)}")
    readable = _UNSAFE.sub("_", ",".join(parts))[:READABLE_CHARS].strip("_,.=-")
    return f"{readable or 'job'}_{digest}"


def register_resolvers() -> None:
    """`${nnrun_job_dir:${hydra.overrides.task}}` (configs/config.yaml's hydra.sweep.subdir).
    Registered on import of nnrun.sweeps.hydra too: submitit and joblib workers resolve the job
    directory in their own process, having unpickled that module but never run `main()`."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("nnrun_job_dir"):
        OmegaConf.register_new_resolver(
            "nnrun_job_dir", lambda overrides: job_dir_name([str(o) for o in overrides or []]))


@dataclass
class Axis:
    """One swept parameter: its override key, a short label, and its values in sweep order."""

    key: str
    values: list[str] = field(default_factory=list)
    label: str = ""

    def index(self, value: str) -> int:
        return self.values.index(value)


def swept_axes(jobs: list[list[str]]) -> list[Axis]:
    """The parameters whose value differs between jobs, in command-line order, with their values
    in the order the jobs first use them (Hydra's sweep order)."""
    axes: dict[str, Axis] = {}
    seen: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            key, value = split(override)
            if key in CONTROL_KEYS:
                continue
            axis = axes.setdefault(key, Axis(key))
            if value not in seen.setdefault(key, set()):
                seen[key].add(value)
                axis.values.append(value)
    varying = [a for a in axes.values() if len(a.values) > 1]
    shorts = [a.key.rsplit(".", 1)[-1].rsplit("/", 1)[-1] for a in varying]
    for axis, short in zip(varying, shorts, strict=True):
        axis.label = short if shorts.count(short) == 1 else axis.key
    return varying


def value_label(value: str) -> str:
    """A swept value as a tick label: quotes removed (`' rome'` → ` rome`)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_override(f"x={value}").value()
        return value if parsed is None else str(parsed)
    except Exception:  # not parseable on its own: show it as written
        return value


def check_split_values(overrides: list[str]) -> None:
    """Refuse a comma sweep whose unquoted elements contain spaces: a sentence such as
    `params.clean=When Mary and John went to the store, John gave` would otherwise silently
    become two jobs with two half-prompts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    parser = OverridesParser.create()
    issues = []
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except Exception:  # Hydra reports unparseable overrides itself
            continue
        if override.value_type != ValueType.SIMPLE_CHOICE_SWEEP:
            continue
        elements = _top_level_elements(text.partition("=")[2])
        suspicious = [e for e in elements if not _quoted(e) and " " in e.strip()]
        if not suspicious:
            continue
        key = override.get_key_element()
        issues.append(Issue(
            "split_value", f"`{text}` would be split at its commas into {len(elements)} jobs: "
            + " | ".join(f"`{e.strip()}`" for e in elements), "command line",
            hint=f"one value with commas: quote it whole ('{key}=\"{_unquoted(text)}\"'); "
                 f"several values: quote each ({key}=\"a b\",\"c d\"); many prompts: put them in "
                 "a dataset (data.file=...) or sweep over prompt sets (see README, Sweeps)"))
    if issues:
        raise CommandLineError("the command line could not be used:", issues)


def _unquoted(text: str) -> str:
    return text.partition("=")[2].replace('"', '\\"')


def _quoted(element: str) -> bool:
    e = element.strip()
    return len(e) >= 2 and e[0] == e[-1] and e[0] in "'\""


def _top_level_elements(value: str) -> list[str]:
    """Split a sweep's value at commas outside quotes and brackets."""
    elements, current, depth, quote, escaped = [], [], 0, None, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            elements.append("".join(current))
            current = []
            continue
        current.append(ch)
    elements.append("".join(current))
    return elements

