"""Keep tokens and other secrets out of everything nnrun writes (configs, manifests, logs, scripts).

Invariant: the value of every environment variable that holds a secret — a known name (HF_TOKEN,
NDIF_API_KEY, WANDB_API_KEY, ...), a name that says so (*TOKEN*, *SECRET*, *API_KEY*, *PASSWORD*),
or a value shaped like a token (hf_..., sk-..., ghp_...) — is replaced by `<redacted:NAME>` in any
text that goes through `redact()` before it reaches the disk.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

KNOWN = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "NDIF_API_KEY",
         "WANDB_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN",
         "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "COMET_API_KEY", "NEPTUNE_API_TOKEN")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|API_?KEY|PASSW(OR)?D|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY",
                          re.IGNORECASE)
_TOKEN_VALUE = re.compile(r"^(hf_|sk-|sk_|ghp_|gho_|ghs_|github_pat_|xox[abpr]-|AKIA|glpat-)"
                          r"[A-Za-z0-9_\-]{8,}$")
MIN_LENGTH = 8  # shorter values ("1", "true", a path) would redact ordinary text


def secrets(environ: dict[str, str] | None = None) -> dict[str, str]:
    """value → variable name, for every environment variable that holds a secret."""
    env = os.environ if environ is None else environ
    found = {}
    for name, value in env.items():
        value = value.strip()
        if len(value) < MIN_LENGTH:
            continue
        if name in KNOWN or _SECRET_NAME.search(name) or _TOKEN_VALUE.match(value):
            found[value] = name
    return found


def redact(value: Any, found: dict[str, str] | None = None) -> Any:
    """`value` (a string, or containers of them) with every secret replaced."""
    found = secrets() if found is None else found
    if not found:
        return value
    if isinstance(value, str):
        for secret in sorted(found, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, f"<redacted:{found[secret]}>")
        return value
    if isinstance(value, dict):
        return {redact(k, found): redact(v, found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, found) for v in value)
    return value


def scrub_file(path: Path) -> bool:
    """Rewrite a text file (atomically) if it contains a secret; True if it did."""
    from nnrun.atomic import atomic_write_text

    found = secrets()
    if not found or not path.is_file():
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    clean = redact(text, found)
    if clean == text:
        return False
    atomic_write_text(path, clean)
    return True


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from every record (for Hydra's job log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = secrets()
        if found:
            record.msg = redact(record.getMessage(), found)
            record.args = None
        return True


def install_log_filter() -> RedactingFilter:
    """Attach the filter to every handler of the root logger (stdout and the job's .log file)."""
    filt = RedactingFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt
