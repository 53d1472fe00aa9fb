"""Secrets from GNU pass.

Entry names come from the config service, so they are untrusted: they are passed
after ``--`` in an argument list, never through a shell. Values never reach a log
line or an exception message; errors name the entry only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from .errors import SecretError

PASS_TIMEOUT = 30.0


def pass_show(entry: str, environ: Mapping[str, str] | None = None) -> str:
    """The first line of a pass entry (pass's own convention for the secret)."""
    if not entry or entry.startswith("/") or ".." in entry.split("/") or "\0" in entry:
        raise SecretError(f"invalid pass entry name {entry!r}")
    executable = shutil.which("pass")
    if executable is None:
        raise SecretError(f"cannot read pass entry {entry!r}: the 'pass' command is not installed")
    env = dict(os.environ if environ is None else environ)
    try:
        completed = subprocess.run(
            [executable, "show", "--", entry],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PASS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretError(f"pass show {entry!r} timed out after {PASS_TIMEOUT:.0f}s (a key with a passphrase?)") from None
    except OSError as exc:
        raise SecretError(f"cannot run pass for entry {entry!r}: {exc.strerror}") from None
    if completed.returncode != 0:
        reason = _reason(completed.stderr.decode(errors="replace"))
        raise SecretError(f"pass entry {entry!r} could not be read: {reason}")
    value = completed.stdout.decode(errors="strict").split("\n", 1)[0]
    if not value:
        raise SecretError(f"pass entry {entry!r} is empty")
    return value


def _reason(stderr: str) -> str:
    """pass/gpg's own words (they never echo the decrypted value), on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "pass failed without a message"
    if any("is not in the password store" in line for line in lines):
        return "no such entry in the password store"
    if any("No secret key" in line for line in lines):
        return "decryption failed: no secret key for this entry (encrypted for another key, or gpg-agent unusable)"
    return " / ".join(lines[-3:])[:300]
