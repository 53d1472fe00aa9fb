"""Secrets from GNU pass, decrypted with private keys imported at start.

Entry names come from the config service, so they are untrusted: they are passed
after ``--`` in an argument list, never through a shell. Values never reach a log
line or an exception message; errors name the entry only.

In the container the keys arrive as files of a Kubernetes Secret (armored private
keys in ``SLINGSHOT_GPG_KEYS_DIR``) and the store as another mount; :func:`prepare_secrets`
imports the keys into an ephemeral ``GNUPGHOME`` under /tmp (the root may be read-only)
and names both for ``pass``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Any

from .errors import SecretError

log = logging.getLogger(__name__)

PASS_TIMEOUT = 30.0
GPG_TIMEOUT = 30.0
DEFAULT_KEYS_DIR = "/run/secrets/slingshot/gpg"
DEFAULT_STORE_DIR = "/run/secrets/slingshot/password-store"
#: gpg-agent puts its sockets into GNUPGHOME when /run/user/UID is missing (as in a
#: container); a socket path is at most 108 bytes, and past this gpg fails with a
#: misleading "No secret key".
MAX_GNUPGHOME_LEN = 80
_PRIVATE_BLOCK = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
_PUBLIC_BLOCK = "-----BEGIN PGP PUBLIC KEY BLOCK-----"


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


# --------------------------------------------------------------------------- key import


def require_command(name: str) -> str:
    """The executable's path, or a SecretError saying which package is missing."""
    found = shutil.which(name)
    if found is None:
        package = "gnupg" if name.startswith("gpg") else name
        raise SecretError(f"the {name!r} command is not installed (Debian package {package!r}); secrets cannot be read")
    return found


def key_files(keys_dir: str) -> list[str]:
    """Key files as a Kubernetes Secret mounts them: hidden entries (``..data`` and the
    timestamped directory its symlinks point into) are skipped, symlinks followed."""
    try:
        entries = sorted(os.scandir(keys_dir), key=lambda e: e.name)
    except FileNotFoundError:
        raise SecretError(
            f"gpg key directory {keys_dir!r} does not exist (mount the key Secret there or set SLINGSHOT_GPG_KEYS_DIR)"
        ) from None
    except NotADirectoryError:
        raise SecretError(f"gpg key directory {keys_dir!r} is not a directory") from None
    except OSError as exc:
        raise SecretError(f"cannot list gpg key directory {keys_dir!r}: {exc.strerror}") from None
    files = [entry.path for entry in entries if not entry.name.startswith(".") and entry.is_file()]
    if not files:
        raise SecretError(f"no key in gpg key directory {keys_dir!r} (expected armored private keys, one per file)")
    return files


def import_keys(keys_dir: str, gnupghome: str | None = None) -> str:
    """Import every private key in ``keys_dir`` into a fresh GNUPGHOME, trusted ultimately.

    Returns the GNUPGHOME (created under /tmp, mode 0700, unless given). Each key must be
    a passphrase-less private key: a protected one would fail later, at the first
    ``pass show``, with gpg's misleading "No secret key".
    """
    gpg_binary = require_command("gpg")
    files = key_files(keys_dir)
    home = _make_home(gnupghome)
    try:
        import gnupg

        try:
            gpg = gnupg.GPG(gpgbinary=gpg_binary, gnupghome=home)
        except (OSError, ValueError) as exc:
            raise SecretError(f"cannot run gpg with GNUPGHOME {home!r}: {exc}") from exc
        for path in files:
            _import_file(gpg, path)
        keys = gpg.list_keys(secret=True)
        if not keys:
            raise SecretError(f"no private key imported from {keys_dir!r}")
        _refuse_protected(home, keys)
        fingerprints = [key["fingerprint"] for key in keys]
        try:
            gpg.trust_keys(fingerprints, "TRUST_ULTIMATE")
        except ValueError as exc:  # python-gnupg's way of saying gpg failed
            raise SecretError(f"gpg could not trust the imported keys: {exc}") from exc
        log.debug("imported %d private key(s) from %s into %s", len(fingerprints), keys_dir, home)
    except BaseException:
        if gnupghome is None:
            discard_gnupghome(home)
        raise
    return home


def prepare_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Import the keys and check the store; the variables ``pass`` needs (GNUPGHOME, PASSWORD_STORE_DIR).

    ``SLINGSHOT_GPG_KEYS_DIR`` (default /run/secrets/slingshot/gpg) holds the keys,
    ``PASSWORD_STORE_DIR`` (default /run/secrets/slingshot/password-store) the store.
    """
    env = os.environ if environ is None else environ
    require_command("pass")
    store = env.get("PASSWORD_STORE_DIR") or DEFAULT_STORE_DIR
    if not os.path.isdir(store):
        raise SecretError(f"password store {store!r} does not exist (mount the store there or set PASSWORD_STORE_DIR)")
    home = import_keys(env.get("SLINGSHOT_GPG_KEYS_DIR") or DEFAULT_KEYS_DIR)
    return {"GNUPGHOME": home, "PASSWORD_STORE_DIR": store}


def discard_gnupghome(home: str) -> None:
    """Stop the home's gpg-agent (it daemonizes) and remove the home with its keys."""
    gpgconf = shutil.which("gpgconf")
    if gpgconf is not None and os.path.isdir(home):
        subprocess.run(
            [gpgconf, "--homedir", home, "--kill", "gpg-agent"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=GPG_TIMEOUT, check=False,
        )
    shutil.rmtree(home, ignore_errors=True)


def _make_home(gnupghome: str | None) -> str:
    if gnupghome is None:
        base = "/tmp" if os.access("/tmp", os.W_OK) else tempfile.gettempdir()
        _check_home_length(os.path.join(base, "slingshot-gnupg-xxxxxxxx"))
        try:
            return tempfile.mkdtemp(prefix="slingshot-gnupg-", dir=base)
        except OSError as exc:
            raise SecretError(f"cannot create a GNUPGHOME in {base}: {exc.strerror} (mount a writable /tmp)") from None
    home = os.path.abspath(gnupghome)
    _check_home_length(home)
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chmod(home, 0o700)
    except OSError as exc:
        raise SecretError(f"cannot prepare GNUPGHOME {home!r}: {exc.strerror}") from None
    return home


def _check_home_length(home: str) -> None:
    if len(home) > MAX_GNUPGHOME_LEN:
        raise SecretError(
            f"GNUPGHOME {home!r} is {len(home)} characters long; gpg-agent's sockets need at most {MAX_GNUPGHOME_LEN}"
        )


def _import_file(gpg: Any, path: str) -> None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        raise SecretError(f"cannot read key file {path!r}: {exc.strerror}") from None
    if _PRIVATE_BLOCK not in text:
        kind = "a public key only" if _PUBLIC_BLOCK in text else "not an armored OpenPGP key"
        raise SecretError(f"key file {path!r} is {kind}: export the private key with gpg --armor --export-secret-keys")
    result = gpg.import_keys(text)
    if not result.sec_read:
        words = "\n".join(line for line in (result.stderr or "").splitlines() if not line.startswith("[GNUPG:]"))
        reason = _reason(words) if words.strip() else "gpg read no private key"
        raise SecretError(f"key file {path!r} could not be imported: {reason}")


def _refuse_protected(home: str, keys: list[dict[str, Any]]) -> None:
    """A key with a passphrase cannot be used without a terminal: say so now, by key."""
    agent = require_command("gpg-connect-agent")
    completed = subprocess.run(
        [agent, "--homedir", home, "KEYINFO --list", "/bye"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=GPG_TIMEOUT, check=False,
    )
    protected: set[str] = set()
    for line in completed.stdout.decode(errors="replace").splitlines():
        fields = line.split()
        # S KEYINFO <keygrip> <type> <serial> <idstr> <cached> <protection> ...
        if len(fields) >= 8 and fields[:2] == ["S", "KEYINFO"] and fields[7] == "P":
            protected.add(fields[2])
    for key in keys:
        grips = {key.get("keygrip")} | {sub[3] for sub in key.get("subkeys", []) if len(sub) > 3}
        if grips & protected:
            uid = (key.get("uids") or ["?"])[0]
            raise SecretError(
                f"private key {key['fingerprint']} ({uid}) is protected by a passphrase; "
                "services need keys without one (the Secret protects them)"
            )
