"""The base image in a real container (buildah/podman, runc): keys and store mounted read-only
as Kubernetes would, a read-only root with a tmpfs /tmp, the loopback stack over the host
network. Proves processing, SIGTERM drain, the drain deadline, PID 1 and the user, and
``entrypoint check``.

The image is built by scripts/container.py (cached layers and a cached Debian base; a few
seconds when warm). These tests never skip: missing tools fail them with the install line.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy
from packaging.utils import canonicalize_name
from test_keys import mount_like_kubernetes

from conftest import REPO, Amqp, Stack, put_object, read_object
from slingshot_runtime import devstack
from slingshot_runtime.errors import ExitCode
from slingshot_runtime.sysmap import ConfigServer, SystemMap

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

KEYS_MOUNT = "/run/secrets/slingshot/gpg"
STORE_MOUNT = "/run/secrets/slingshot/password-store"
SIGNALS = "/signals"  # a writable mount: the handler drops a marker when it has a message in hand


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slingshot_container_script", REPO / "scripts" / "container.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


@dataclass
class Running:
    """One detached container."""

    podman: Podman
    name: str

    def logs(self) -> str:
        result = self.podman.engine.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, command: str) -> str:
        return str(self.podman.engine.podman("exec", self.name, "/bin/sh", "-c", command).stdout)

    def stop(self, grace: int = 30) -> tuple[int, float]:
        """``podman stop`` (SIGTERM, SIGKILL after ``grace``); the exit code and the seconds it took."""
        started = time.monotonic()
        self.podman.engine.podman("stop", "-t", str(grace), self.name, timeout=grace + 60)
        took = time.monotonic() - started
        state = self.podman.engine.podman("inspect", "--format", "{{.State.ExitCode}}", self.name)
        return int(state.stdout.strip()), took

    def wait_marker(self, signals: Path, request: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (signals / f"entered-{request}").exists():
            assert time.monotonic() < deadline, f"the handler never took request {request}; logs:\n{self.logs()}"
            time.sleep(0.05)


@dataclass
class Podman:
    engine: Any
    image: str
    keys: Path
    store: Path
    created: list[str] = field(default_factory=list)

    def args(self, service: str, config_url: str, handler: Path | None, env: dict[str, str], signals: Path | None) -> list[str]:
        argv = [
            *self.engine.run_args(),
            "-v", f"{self.keys}:{KEYS_MOUNT}:ro",
            "-v", f"{self.store}:{STORE_MOUNT}:ro",
            "-e", f"SLINGSHOT_SERVICE={service}",
            "-e", f"SLINGSHOT_CONFIG_HOST={config_url}",
            "-e", f"SLINGSHOT_HEALTH_PORT={devstack.free_port()}",
            "-e", "SLINGSHOT_RETRY_DELAY=0.5",
        ]
        if handler is not None:
            argv += ["-v", f"{handler}:/app/handler.py:ro"]
        if signals is not None:
            argv += ["-v", f"{signals}:{SIGNALS}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        return argv

    def start(
        self, service: str, config_url: str, handler: Path, env: dict[str, str] | None = None, signals: Path | None = None
    ) -> Running:
        name = f"slingshot-test-{uuid.uuid4().hex[:10]}"
        self.created.append(name)
        self.engine.podman("run", "-d", "--name", name, *self.args(service, config_url, handler, env or {}, signals), self.image)
        return Running(self, name)

    def run(self, service: str, config_url: str, handler: Path | None, *command: str) -> subprocess.CompletedProcess[str]:
        """Run to completion (``--rm``); the caller reads the exit code and output."""
        result: subprocess.CompletedProcess[str] = self.engine.podman(
            "run", "--rm", *self.args(service, config_url, handler, {}, None), self.image, *command, check=False, timeout=180
        )
        return result


@pytest.fixture(scope="module")
def podman(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    missing = script.missing_tools()
    if missing:
        pytest.fail(f"container tests need buildah and podman: apt-get install -y {' '.join(missing)} (make bootstrap does)")
    engine = script.Engine()
    try:
        script.build_image(engine)
    except script.ContainerError as exc:
        pytest.fail(f"building the image failed: {exc}")
    root = tmp_path_factory.mktemp("container")
    # As a Kubernetes Secret mounts them: world-readable files (defaultMode 0644), symlinked via ..data.
    exported = root / "key.asc"
    stack.passwords.export_private_key(exported)
    keys = mount_like_kubernetes(root / "gpg", {"service.asc": exported.read_bytes()})
    store = root / "password-store"
    shutil.copytree(stack.passwords.store_dir, store)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    runner = Podman(engine, script.IMAGE, keys, store)
    yield runner
    for name in runner.created:
        engine.podman("rm", "-f", "-t", "0", name, check=False)


def handler_file(directory: Path, body: str) -> Path:
    """A handler readable by the container's user; it marks each request it takes in /signals."""
    path = directory / "handler.py"
    path.write_text(
        "import os, time\n\n"
        "def process(request, read_file, write_file, connection):\n"
        f"    if os.path.isdir({SIGNALS!r}):\n"
        f"        open(os.path.join({SIGNALS!r}, f'entered-{{request}}'), 'w').close()\n"
        + "".join(f"    {line}\n" for line in body.strip().splitlines())
    )
    path.chmod(0o644)
    return path


def signals_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "signals"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


def test_processes_a_message_end_to_end(
    stack: Stack, amqp: Amqp, podman: Podman, tmp_path: Path, table: str, engine: sqlalchemy.Engine
) -> None:
    service = stack.add_service()
    put_object(stack, service.buckets["in"], 77, b"from s3")
    handler = handler_file(
        tmp_path,
        f"""
data = read_file("in", request).read()
write_file("out", request).write(data.upper())
connection.exec_driver_sql("INSERT INTO {table} (id, note) VALUES (%s, %s)", (request, "container"))
yield (request, True)
""",
    )
    running = podman.start(service.name, stack.config.url, handler)
    amqp.wait_consumer(service.inbound, timeout=60)
    amqp.send(service.inbound, 77)
    body, properties = amqp.get(service.out_queues[0], timeout=60)
    assert body == b"77"
    assert properties.headers["x-slingshot-source"] == service.name
    assert read_object(stack, service.buckets["out"], 77) == b"FROM S3"
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT note FROM {table} WHERE id = 77").scalar() == "container"
    code, _ = running.stop()
    logs = running.logs()
    assert code == ExitCode.OK, logs
    assert "drained cleanly after 1 messages" in logs
    assert amqp.count(service.inbound) == 0


def test_runs_as_non_root_under_tini_with_a_read_only_root(stack: Stack, amqp: Amqp, podman: Podman, tmp_path: Path) -> None:
    service = stack.add_service()
    running = podman.start(service.name, stack.config.url, handler_file(tmp_path, "yield (request, True)"))
    amqp.wait_consumer(service.inbound, timeout=60)
    table = running.exec(
        "for d in /proc/[0-9]*; do "
        "printf '%s %s %s %s\\n' \"${d#/proc/}\" \"$(cat $d/comm)\" "
        "\"$(awk '/^Uid:/{print $2}' $d/status)\" \"$(awk '/^PPid:/{print $2}' $d/status)\"; done"
    )
    processes = {}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) == 4:  # short: a process of the listing itself, gone while it was read
            pid, comm, uid, ppid = fields
            processes[int(pid)] = (comm, int(uid), int(ppid))
    assert processes[1][0] == "tini", table
    worker = [pid for pid, (comm, _, ppid) in processes.items() if comm == "entrypoint" and ppid == 1]
    assert len(worker) == 1, table  # the entrypoint script (the venv's python), tini's child
    assert all(uid == 10001 for _, uid, _ in processes.values()), table
    agents = [ppid for comm, _, ppid in processes.values() if comm == "gpg-agent"]
    assert agents and all(ppid == 1 for ppid in agents), table  # daemonized, re-parented to tini, which reaps it
    assert "Read-only file system" in running.exec("touch /app/x 2>&1 || true")
    code, _ = running.stop()
    assert code == ExitCode.OK, running.logs()


def test_stop_mid_message_completes_and_acks_it(stack: Stack, amqp: Amqp, podman: Podman, tmp_path: Path) -> None:
    service = stack.add_service()
    signals = signals_dir(tmp_path)
    handler = handler_file(tmp_path, 'write_file("out", request).write(b"late")\ntime.sleep(4)\nyield (request, True)')
    running = podman.start(service.name, stack.config.url, handler, signals=signals)
    amqp.wait_consumer(service.inbound, timeout=60)
    for request in (1, 2, 3):
        amqp.send(service.inbound, request)
    running.wait_marker(signals, 1)
    time.sleep(0.3)  # the broker pushes the other two into the prefetch buffer
    code, took = running.stop(grace=30)
    logs = running.logs()
    assert code == ExitCode.OK, logs
    assert took < 25, f"stop took {took:.1f}s"
    assert amqp.get(service.out_queues[0])[0] == b"1"
    assert read_object(stack, service.buckets["out"], 1) == b"late"
    assert amqp.empty(service.out_queues[0], wait=0.3)
    assert amqp.count(service.inbound) == 2, logs  # message 1 acked; 2 and 3 returned unstarted
    assert not (signals / "entered-2").exists()


def test_drain_deadline_leaves_the_message_to_the_broker(stack: Stack, amqp: Amqp, podman: Podman, tmp_path: Path) -> None:
    service = stack.add_service()
    signals = signals_dir(tmp_path)
    handler = handler_file(tmp_path, "time.sleep(120)\nyield (request, True)")
    running = podman.start(service.name, stack.config.url, handler, {"SLINGSHOT_DRAIN_TIMEOUT": "1"}, signals)
    amqp.wait_consumer(service.inbound, timeout=60)
    amqp.send(service.inbound, 31)
    running.wait_marker(signals, 31)
    code, took = running.stop(grace=30)
    logs = running.logs()
    assert code == ExitCode.DRAIN_TIMEOUT, logs
    assert took < 20, f"stop took {took:.1f}s: the deadline was 1s"
    assert "the broker will redeliver it" in logs
    assert amqp.get(service.inbound, timeout=20)[0] == b"31"  # redelivered, not lost
    assert amqp.count(service.out_queues[0]) == 0


def test_check_passes_against_the_stack(stack: Stack, podman: Podman, tmp_path: Path) -> None:
    service = stack.add_service()
    result = podman.run(service.name, stack.config.url, handler_file(tmp_path, "yield (request, True)"),
                        "check", "--bucket", "in")
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 13 and all(": ok (" in line for line in lines), result.stdout
    assert "gpg keys: ok (imported into /tmp/slingshot-gnupg-" in result.stdout
    assert stack.s3.secret_key not in result.stdout + result.stderr


def test_check_fails_clearly_on_a_missing_secret(stack: Stack, podman: Podman, tmp_path: Path) -> None:
    service = stack.add_service()
    document = copy.deepcopy(stack.document)
    document["object-storage"]["secret-key"] = "s3/no-such-entry"
    with ConfigServer(SystemMap(document)) as server:
        result = podman.run(service.name, server.url, handler_file(tmp_path, "yield (request, True)"), "check")
    assert result.returncode == ExitCode.SECRET, result.stdout + result.stderr
    assert "secret s3/no-such-entry: FAILED: pass entry 's3/no-such-entry' could not be read: no such entry" in result.stdout
    assert "object storage: skipped" in result.stdout
    assert "postgres: ok" in result.stdout


def test_image_is_small_clean_and_labelled(podman: Podman) -> None:
    engine = podman.engine
    size = engine.image_size(podman.image)
    assert size <= 180_000_000, f"the image is {size / 1e6:.1f} MB, over 180 MB"
    inspect = engine.podman("image", "inspect", podman.image).stdout
    assert "PIP_CERT" not in inspect and "ca-certificates.crt" not in inspect  # the build argument left nothing
    config = json.loads(inspect)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == "/app"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/opt/slingshot/bin/entrypoint"]
    assert config["Labels"]["org.opencontainers.image.title"] == "slingshot-runtime"
    assert config["Labels"]["org.opencontainers.image.version"]
    listing = engine.podman(
        "run", "--rm", *engine.run_args(), "--entrypoint", "/bin/sh", podman.image, "-c",
        "echo tools: $(for tool in pip pip3 gcc cc strip; do command -v $tool; done); "
        "echo bin: $(ls -A /opt/slingshot/bin); "
        "echo leftovers: $(find /mnt /root/.cache /var/lib/apt/lists /var/cache/apt/archives -mindepth 1 "
        "-not -name partial -not -name lock 2>/dev/null) $(find /opt/slingshot -name '*.whl' -o -type d -name tests); "
        "/opt/slingshot/bin/python -c 'import pip' 2>&1 | tail -1",
    ).stdout
    lines = dict(line.split(":", 1) for line in listing.splitlines())
    assert lines["tools"].split() == [], listing
    assert {"entrypoint", "python", "slingshot"} <= set(lines["bin"].split()), listing
    assert not {"pip", "pip3", "activate", "Activate.ps1"} & set(lines["bin"].split()), listing
    assert lines["leftovers"].split() == [], listing
    assert lines["ModuleNotFoundError"].strip() == "No module named 'pip'", listing


def test_image_holds_exactly_the_pinned_dependencies(podman: Podman) -> None:
    """Reproducible images: every distribution in the image is pinned in constraints.txt at
    the version installed, and every pin is used (a stale pin would hide a dropped dependency)."""
    engine = podman.engine
    listing = engine.podman(
        "run", "--rm", *engine.run_args(), "--entrypoint", "/opt/slingshot/bin/python", podman.image, "-c",
        "import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))",
    ).stdout  # fmt: skip
    installed = {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in listing.split()}
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    assert installed.pop("slingshot-runtime") == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert installed == pins


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
