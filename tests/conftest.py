"""The real local stack for integration tests: RabbitMQ, PostgreSQL, SeaweedFS S3, GNU pass
and a config service over loopback HTTP. Services are started here, never assumed; one
that will not start fails the run loudly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
import sqlalchemy

from slingshot_runtime import devstack
from slingshot_runtime.errors import ExitCode
from slingshot_runtime.service import Service
from slingshot_runtime.settings import Settings
from slingshot_runtime.sysmap import ConfigServer, SystemMap

DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
SECRETS = {"s3/access-key": "", "s3/secret-key": "", "postgres/password": "pg-Secr3t-9d7f"}


@dataclass
class Stack:
    s3: devstack.S3Server
    passwords: devstack.PassStore
    config: ConfigServer
    document: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    queues: list[str] = field(default_factory=list)

    def publish_document(self) -> None:
        with self.lock:
            self.config.system = SystemMap(self.document)

    def add_service(
        self,
        name: str | None = None,
        routes: list[tuple[Any, list[str]]] | None = None,
        buckets: dict[str, str] | None = None,
        inbound: str | None = None,
    ) -> ServiceDef:
        """Register a service with unique queue and bucket names in the system map."""
        suffix = uuid.uuid4().hex[:8]
        name = name or f"svc-{suffix}"
        inbound = inbound or f"{name}-in-{suffix}"
        buckets = buckets if buckets is not None else {"in": f"in-{suffix}", "out": f"out-{suffix}"}
        for bucket in buckets.values():
            self.s3.create_bucket(bucket)
        routes = routes if routes is not None else [(True, [f"{name}-out-{suffix}"])]
        self.queues += [inbound, *(q for _, queues in routes for q in queues)]
        self.document["services"][name] = {
            "in": inbound,
            "out": [{"case": case, "queues": queues} for case, queues in routes],
            "buckets": buckets,
        }
        self.publish_document()
        return ServiceDef(name, inbound, routes, buckets)


    def spawn_worker(self, service: ServiceDef, handler: Path, **settings: str) -> subprocess.Popen[str]:
        """A worker process, as the container runs it: ``python -m slingshot_runtime HANDLER``.

        ``settings`` become ``SLINGSHOT_*`` variables (``retry_delay="0.1"``); stdout and
        stderr are captured as text.
        """
        env = dict(os.environ, PYTHONPATH=str(REPO), SLINGSHOT_SERVICE=service.name, SLINGSHOT_CONFIG_HOST=self.config.url)
        env.update({f"SLINGSHOT_{key.upper()}": value for key, value in settings.items()})
        return subprocess.Popen(
            [sys.executable, "-m", "slingshot_runtime", str(handler)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


@dataclass
class ServiceDef:
    name: str
    inbound: str
    routes: list[tuple[Any, list[str]]]
    buckets: dict[str, str]

    @property
    def out_queues(self) -> list[str]:
        return [q for _, queues in self.routes for q in queues]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    devstack.ensure_rabbitmq()
    devstack.ensure_postgres()
    root = tmp_path_factory.mktemp("stack")
    s3 = devstack.start_s3(root / "s3")
    secrets = dict(SECRETS, **{"s3/access-key": s3.access_key, "s3/secret-key": s3.secret_key})
    passwords = devstack.make_pass_store(root / "pass", secrets)
    saved = {k: os.environ.get(k) for k in ("GNUPGHOME", "PASSWORD_STORE_DIR")}
    os.environ.update(passwords.env())
    os.environ["SLINGSHOT_HEALTH_PORT"] = "0"  # worker subprocesses: many run at once, no fixed port
    document: dict[str, Any] = {
        "services": {},
        **devstack.config_sections(s3),
    }
    server = ConfigServer(SystemMap(document))
    server.start()
    stack = Stack(s3, passwords, server, document)
    try:
        yield stack
    finally:
        devstack.delete_queues(stack.queues)
        server.stop()
        s3.stop()
        passwords.stop_agent()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Amqp:
    """A plain pika client for the test side of the broker."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
        self.channel = self.connection.channel()
        self.declared: set[str] = set()

    def declare(self, queue: str, arguments: dict[str, Any] | None = None) -> None:
        self.channel.queue_declare(queue, durable=True, arguments=arguments)
        self.declared.add(queue)

    def send(self, queue: str, body: bytes | str | int, headers: dict[str, Any] | None = None) -> None:
        data = body if isinstance(body, bytes) else str(body).encode()
        self.channel.basic_publish("", queue, data, pika.BasicProperties(delivery_mode=2, headers=headers))

    def get(self, queue: str, timeout: float = 20.0) -> tuple[bytes, pika.BasicProperties]:
        """The next message of ``queue`` (acked), or fail after ``timeout``; the queue may not exist yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                self.channel = self.connection.channel()
                method = None
            if method is not None:
                return body, properties
            self.connection.sleep(0.05)
        raise AssertionError(f"no message on {queue!r} within {timeout}s")

    def wait_consumer(self, queue: str, timeout: float = 30.0) -> None:
        """Wait until a worker consumes ``queue`` (a worker in another process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.channel.queue_declare(queue, passive=True).method.consumer_count > 0:
                    return
            except pika.exceptions.ChannelClosedByBroker:
                self.channel = self.connection.channel()
            self.connection.sleep(0.05)
        raise AssertionError(f"no consumer on {queue!r} within {timeout}s")

    def get_all(self, queue: str, count: int, timeout: float = 60.0) -> list[tuple[bytes, pika.BasicProperties]]:
        deadline = time.monotonic() + timeout
        return [self.get(queue, max(0.1, deadline - time.monotonic())) for _ in range(count)]

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def empty(self, queue: str, wait: float = 0.5) -> bool:
        self.connection.sleep(wait)
        return self.count(queue) == 0

    def delete(self, queue: str) -> None:
        try:
            self.channel.queue_delete(queue)
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.connection.channel()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def amqp() -> Iterator[Amqp]:
    client = Amqp()
    yield client
    client.close()


class RunningService:
    """A Service serving in a background thread, as ``Microservice.start()`` would."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.exit_code: ExitCode | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.exit_code = self.service.serve()

    def start(self, timeout: float = 30.0) -> RunningService:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not (self.service.broker is not None and self.service.broker.consuming):
            if not self.thread.is_alive():
                raise AssertionError(f"service stopped during start-up with exit code {self.exit_code}")
            if time.monotonic() > deadline:
                raise AssertionError("service did not start consuming")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> ExitCode | None:
        self.service.handle_signal(15, None)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "service did not stop"
        return self.exit_code


@pytest.fixture
def run_service(stack: Stack) -> Iterator[Callable[..., RunningService]]:
    """Start services for a test; every one is stopped (drained) at the end."""
    started: list[RunningService] = []

    def start(definition: ServiceDef, process: Callable[..., Any], **overrides: Any) -> RunningService:
        overrides.setdefault("retry_delay", 0.2)
        overrides.setdefault("database_url", None)
        overrides.setdefault("health_port", 0)
        settings = Settings.load(definition.name, stack.config.url, environ={}, **overrides)
        running = RunningService(Service(settings, process)).start()
        started.append(running)
        return running

    yield start
    codes = [running.stop() for running in started if running.thread.is_alive()]
    assert all(code == ExitCode.OK for code in codes), f"a service did not drain cleanly: {codes}"


@pytest.fixture(scope="session")
def engine() -> Iterator[sqlalchemy.Engine]:
    eng = sqlalchemy.create_engine(DATABASE_URL)
    yield eng
    eng.dispose()


@pytest.fixture
def table(engine: sqlalchemy.Engine) -> Iterator[str]:
    """A fresh table for one test."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id NUMERIC(20) PRIMARY KEY, note TEXT)")
    yield name
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def read_object(stack: Stack, bucket: str, key: int | str) -> bytes:
    return bytes(stack.s3.client().get_object(Bucket=bucket, Key=str(key))["Body"].read())


def put_object(stack: Stack, bucket: str, key: int | str, data: bytes) -> None:
    stack.s3.client().put_object(Bucket=bucket, Key=str(key), Body=data)


REPO = Path(__file__).resolve().parent.parent


def close_broker_connections(service: str) -> int:
    """Close the broker connections of one service's workers, as ``close_all_connections`` would."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    marker = f'{{"connection_name","slingshot {service}"}}'
    closed = 0
    for line in listing.stdout.splitlines():
        pid, _, properties = line.partition("\t")
        if marker in properties:
            subprocess.run(["rabbitmqctl", "close_connection", pid, "test: connection loss"],
                           check=True, capture_output=True, timeout=60)
            closed += 1
    return closed
