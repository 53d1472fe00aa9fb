"""The container entrypoint as its own process on the host: start-up errors with their exit
codes, a real message served with keys imported from a Secret-like mount, and ``entrypoint
check`` against the real stack (the container tests run the same script in the image)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_keys import mount_like_kubernetes

from conftest import REPO, Amqp, ServiceDef, Stack, put_object, read_object
from slingshot_runtime import devstack
from slingshot_runtime.errors import ExitCode
from slingshot_runtime.sysmap import ConfigServer, SystemMap

ENTRYPOINT = REPO / "entrypoint"
UPPER = """
def process(request, read_file, write_file, connection):
    write_file("out", request).write(read_file("in", request).read().upper())
    yield (request, True)
"""


@pytest.fixture(scope="module")
def keys_dir(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exported = tmp_path_factory.mktemp("export") / "key.asc"
    stack.passwords.export_private_key(exported)
    return mount_like_kubernetes(tmp_path_factory.mktemp("secret") / "gpg", {"service.asc": exported.read_bytes()})


@pytest.fixture
def service(stack: Stack) -> ServiceDef:
    return stack.add_service()


def write_handler(directory: Path, source: str, name: str = "handler.py") -> Path:
    path = directory / name
    path.write_text(source)
    return path


def entrypoint_env(stack: Stack, keys_dir: Path, service: str, handler: Path, config_url: str | None = None) -> dict[str, str]:
    """The container's variables; GNUPGHOME is dropped so the keys can only come from the key directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("GNUPGHOME", "PASSWORD_STORE_DIR")}
    env.update(
        SLINGSHOT_SERVICE=service,
        SLINGSHOT_CONFIG_HOST=config_url or stack.config.url,
        SLINGSHOT_GPG_KEYS_DIR=str(keys_dir),
        PASSWORD_STORE_DIR=str(stack.passwords.store_dir),
        SLINGSHOT_HANDLER=str(handler),
        SLINGSHOT_HEALTH_PORT="0",
        SLINGSHOT_LOG_FORMAT="text",
        PYTHONPATH=str(REPO),
    )
    return env


def run_entrypoint(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


@pytest.fixture
def other_config(stack: Stack) -> Iterator[Any]:
    """A private config service serving a changed copy of the stack's document."""
    servers: list[ConfigServer] = []

    def serve(change: dict[str, dict[str, Any]]) -> str:
        document = copy.deepcopy(stack.document)
        for section, fields in change.items():
            document[section].update(fields)
        server = ConfigServer(SystemMap(document))
        server.start()
        servers.append(server)
        return server.url

    yield serve
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------- start-up errors


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (None, "missing.py", r"handler file '.*missing\.py' does not exist"),
        ("def process(request, read_file, write_file, connection):\n    yield (request True)\n",
         "handler.py", r"syntax error in handler file .*\n.*line 2\n.*yield \(request True\)\n.*\^.*\nSyntaxError"),
        ("def helper(): pass\ndef other(x): pass\n", "handler.py",
         r"has no function 'process' \(functions found: helper, other\)"),
        ("def process(request):\n    yield (request, True)\n", "handler.py",
         r"handler\.py:process\(request\) cannot be called as process\(request, read_file, write_file, connection\)"),
        ("import json\nraise RuntimeError('boom at import')\n", "handler.py",
         r"importing handler file .* raised RuntimeError:\nTraceback(.|\n)*handler\.py\", line 2, in <module>\n.*\nRuntimeError: boom"),
        ("def main(a, b, c, d):\n    yield (a, True)\n", "handler.py:serve", r"has no function 'serve' \(functions found: main\)"),
    ],
    ids=["missing-file", "syntax-error", "no-process", "wrong-arity", "import-raises", "named-function"],
)
def test_handler_errors_are_precise(
    stack: Stack, keys_dir: Path, service: ServiceDef, tmp_path: Path, source: str | None, target: str, expected: str
) -> None:
    if source is not None:
        write_handler(tmp_path, source)
    env = entrypoint_env(stack, keys_dir, service.name, tmp_path / target)
    result = run_entrypoint(env)
    assert result.returncode == ExitCode.HANDLER_LOAD, result.stderr
    assert "HandlerLoadError" in result.stderr
    assert _search(expected, result.stderr), result.stderr


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def test_missing_key_directory_is_a_secret_error(stack: Stack, service: ServiceDef, tmp_path: Path) -> None:
    env = entrypoint_env(stack, tmp_path / "no-keys", service.name, write_handler(tmp_path, UPPER))
    result = run_entrypoint(env)
    assert result.returncode == ExitCode.SECRET, result.stderr
    assert "gpg key directory" in result.stderr and "does not exist" in result.stderr


def test_missing_service_name_is_a_config_error(stack: Stack, keys_dir: Path, tmp_path: Path) -> None:
    env = entrypoint_env(stack, keys_dir, "", write_handler(tmp_path, UPPER))
    result = run_entrypoint(env)
    assert result.returncode == ExitCode.CONFIG
    assert "the service name is empty" in result.stderr


def test_unknown_command_is_a_usage_error(stack: Stack, keys_dir: Path, tmp_path: Path) -> None:
    result = run_entrypoint(entrypoint_env(stack, keys_dir, "x", tmp_path / "h.py"), "serve-please")
    assert result.returncode == ExitCode.USAGE
    assert "unknown command 'serve-please'" in result.stderr


# --------------------------------------------------------------------------- serving


def test_serves_with_imported_keys_and_drains_on_sigterm(
    stack: Stack, amqp: Amqp, keys_dir: Path, service: ServiceDef, tmp_path: Path
) -> None:
    put_object(stack, service.buckets["in"], 5, b"entry")
    env = entrypoint_env(stack, keys_dir, service.name, write_handler(tmp_path, UPPER))
    env["SLINGSHOT_STARTUP_TIMINGS"] = "1"
    proc = subprocess.Popen([sys.executable, str(ENTRYPOINT)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        amqp.wait_consumer(service.inbound)
        amqp.send(service.inbound, 5)
        output = amqp.get(service.out_queues[0], timeout=30)[0]
    except AssertionError:
        output = None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert output == b"5", stderr
    assert read_object(stack, service.buckets["out"], 5) == b"ENTRY"  # S3 keys came from pass via the imported key
    assert proc.returncode == ExitCode.OK, stderr
    assert "drained cleanly" in stderr
    assert "startup: consuming" in stderr and "key import" in stderr


# --------------------------------------------------------------------------- entrypoint check


def test_check_reports_every_part_ok(stack: Stack, keys_dir: Path, service: ServiceDef, tmp_path: Path) -> None:
    env = entrypoint_env(stack, keys_dir, service.name, write_handler(tmp_path, UPPER))
    result = run_entrypoint(env, "check", "--bucket", "in", "--bucket=out")
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    names = [line.split(":", 1)[0] for line in lines]
    assert names == [
        "settings", "handler", "gpg keys", f"config {service.name}", "config rabbitmq", "config object-storage",
        "config postgres", "secret s3/access-key", "secret s3/secret-key", "secret postgres/password",
        "rabbitmq", "object storage", "postgres",
    ]
    assert all(": ok (" in line for line in lines), result.stdout
    assert f"in -> {service.buckets['in']} ok" in result.stdout and f"out -> {service.buckets['out']} ok" in result.stdout
    assert "SELECT 1" in result.stdout
    _assert_no_secret(stack, result)


def test_check_names_a_missing_secret_and_exits_with_its_code(
    stack: Stack, keys_dir: Path, service: ServiceDef, tmp_path: Path, other_config: Any
) -> None:
    url = other_config({"postgres": {"password": "postgres/missing"}})
    env = entrypoint_env(stack, keys_dir, service.name, write_handler(tmp_path, UPPER), url)
    result = run_entrypoint(env, "check")
    assert result.returncode == ExitCode.SECRET, result.stdout + result.stderr
    assert "secret postgres/missing: FAILED: pass entry 'postgres/missing' could not be read: no such entry" in result.stdout
    assert "postgres: skipped (needs its config and password)" in result.stdout
    assert "object storage: ok" in result.stdout and "rabbitmq: ok" in result.stdout  # the others are still checked
    _assert_no_secret(stack, result)


def test_check_reports_a_wrong_s3_key(
    stack: Stack, keys_dir: Path, service: ServiceDef, tmp_path: Path, other_config: Any
) -> None:
    url = other_config({"object-storage": {"secret-key": "postgres/password"}})  # decrypts, but is not the S3 secret
    result = run_entrypoint(entrypoint_env(stack, keys_dir, service.name, write_handler(tmp_path, UPPER), url), "check")
    assert result.returncode == ExitCode.STORAGE, result.stdout + result.stderr
    assert "object storage: FAILED:" in result.stdout and "SignatureDoesNotMatch" in result.stdout
    _assert_no_secret(stack, result)


def test_check_reports_an_unreachable_broker(
    stack: Stack, keys_dir: Path, service: ServiceDef, tmp_path: Path, other_config: Any
) -> None:
    url = other_config({"rabbitmq": {"port": devstack.free_port()}})
    result = run_entrypoint(entrypoint_env(stack, keys_dir, service.name, write_handler(tmp_path, UPPER), url), "check")
    assert result.returncode == ExitCode.BROKER, result.stdout + result.stderr
    assert "rabbitmq: FAILED: cannot connect to 127.0.0.1:" in result.stdout
    assert "postgres: ok" in result.stdout


def test_check_reports_a_broken_handler_first(stack: Stack, keys_dir: Path, service: ServiceDef, tmp_path: Path) -> None:
    env = entrypoint_env(stack, keys_dir, service.name, write_handler(tmp_path, "def process(a):\n    pass\n"))
    result = run_entrypoint(env, "check")
    assert result.returncode == ExitCode.HANDLER_LOAD
    assert "handler: FAILED: " in result.stdout and "cannot be called as process(" in result.stdout
    assert "postgres: ok" in result.stdout


def _assert_no_secret(stack: Stack, result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert stack.s3.secret_key not in output
    assert stack.s3.access_key not in output


def test_entrypoint_script_is_lint_and_type_clean() -> None:
    """The script has no .py suffix, so `ruff check .` and `mypy` at the root pass it by."""
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", str(ENTRYPOINT)], capture_output=True, text=True, timeout=120)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--scripts-are-modules", str(ENTRYPOINT)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
