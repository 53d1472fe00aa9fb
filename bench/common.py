"""Shared set-up for the benchmarks: a private local stack, queue filling, timing, workers.

Each benchmark measures against a baseline in the same run (the machine is shared and noisy),
alternating the order per round and reporting medians; the helpers here keep that uniform.
Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pika
from pika.spec import BasicProperties

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # throughput.py puts it after PYTHONPATH, to measure other revisions
    sys.path.insert(0, str(REPO))  # measure this checkout's runtime, not an installed copy

from slingshot_runtime import devstack  # noqa: E402
from slingshot_runtime.broker import Broker  # noqa: E402
from slingshot_runtime.pipeline import ProcessFn  # noqa: E402
from slingshot_runtime.retry import RetryPolicy  # noqa: E402
from slingshot_runtime.service import Service  # noqa: E402
from slingshot_runtime.settings import Settings  # noqa: E402
from slingshot_runtime.sysmap import ConfigServer, SystemMap  # noqa: E402

DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
PARAMS = pika.ConnectionParameters("127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"))
PERSISTENT = BasicProperties(delivery_mode=2)
STALL_TIMEOUT = 60.0  # seconds without progress before a run is declared failed
Side = TypeVar("Side")
Moment = TypeVar("Moment")  # time.perf_counter() seconds, or a richer mark (throughput.py adds CPU times)


def log(bench: str, message: str) -> None:
    print(f"{bench}: {message}", file=sys.stderr, flush=True)


@dataclass
class LocalStack:
    s3: devstack.S3Server
    passwords: devstack.PassStore
    config: ConfigServer
    document: dict[str, Any]
    root: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_service(self, prefix: str = "bench-cold", buckets: dict[str, str] | None = None) -> str:
        """A uniquely named service ``NAME-in`` → ``NAME-out`` in the config service's system map."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        for bucket in (buckets or {}).values():
            self.s3.create_bucket(bucket)
        with self._lock:
            self.document["services"][name] = {
                "in": f"{name}-in", "out": [{"case": True, "queues": [f"{name}-out"]}], "buckets": buckets or {},
            }
            self.config.system = SystemMap(self.document)
        return name

    def worker_env(self, service: str, **settings: str) -> dict[str, str]:
        """The environment of ``python -m slingshot_runtime`` for ``service``; ``settings`` become
        ``SLINGSHOT_*`` variables."""
        env = dict(os.environ, **self.passwords.env())
        env.update(
            SLINGSHOT_SERVICE=service,
            SLINGSHOT_CONFIG_HOST=self.config.url,
            SLINGSHOT_DATABASE_URL=DATABASE_URL,
            SLINGSHOT_HEALTH_PORT="0",
            SLINGSHOT_LOG_FORMAT="text",
            PYTHONPATH=str(REPO),
        )
        env.update({f"SLINGSHOT_{key.upper()}": value for key, value in settings.items()})
        return env


@contextlib.contextmanager
def local_stack() -> Iterator[LocalStack]:
    """SeaweedFS, a pass store and the config service, private to this run; RabbitMQ and
    PostgreSQL are the shared ones. The services' queues are deleted at the end."""
    devstack.ensure_rabbitmq()
    devstack.ensure_postgres()
    root = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    document: dict[str, Any] = {"services": {}}
    with contextlib.ExitStack() as cleanup:  # each part is stopped even when a later one fails to start
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        cleanup.callback(lambda: devstack.delete_queues(list(document["services"])))
        s3 = devstack.start_s3(root / "s3")
        cleanup.callback(s3.stop)
        passwords = devstack.make_pass_store(
            root / "pass", {"s3/access-key": s3.access_key, "s3/secret-key": s3.secret_key, "postgres/password": "postgres"}
        )
        cleanup.callback(passwords.close)
        document.update(devstack.config_sections(s3))
        config = ConfigServer(SystemMap(document))
        config.start()
        cleanup.callback(config.stop)
        yield LocalStack(s3, passwords, config, document, root)


# -- queues ---------------------------------------------------------------------------------


@contextlib.contextmanager
def channel() -> Iterator[Any]:
    """A BlockingChannel for filling, polling and deleting queues."""
    connection = pika.BlockingConnection(PARAMS)
    try:
        yield connection.channel()
    finally:
        connection.close()


def fill(amqp: Any, queue: str, count: int, settle: float = 0.5) -> None:
    """Declare ``queue`` and put ``count`` persistent messages ``0..count-1`` in it."""
    amqp.queue_declare(queue, durable=True)
    for i in range(count):
        amqp.basic_publish("", queue, str(i).encode(), PERSISTENT)
    while amqp.queue_declare(queue, passive=True).method.message_count < count:
        amqp.connection.sleep(0.05)
    amqp.connection.sleep(settle)  # let the broker finish writing the fill before the clock starts


def depth(amqp: Any, queue: str) -> int:
    return int(amqp.queue_declare(queue, passive=True).method.message_count)


@dataclass
class Counter:
    """Messages handled by one consumer, with the moment of the first."""

    count: int = 0
    first: float | None = None

    def tick(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.count += 1


@contextlib.contextmanager
def filled(amqp: Any, inbound: str, output: str, count: int, settle: float = 0.5, extra: tuple[str, ...] = ()) -> Iterator[None]:
    """``inbound`` filled by :func:`fill` and an empty durable ``output``; both, and ``extra``, deleted after."""
    try:
        fill(amqp, inbound, count, settle)
        amqp.queue_declare(output, durable=True)
        yield
    finally:
        for queue in (inbound, output, *extra):
            amqp.queue_delete(queue)


def wait_done(amqp: Any, output: str, count: int, handled: Callable[[], int], first: Callable[[], float | None],
              alive: Callable[[], bool]) -> float:
    """Seconds from the first delivery until ``output`` holds ``count`` messages."""
    start, end = wait_marks(amqp, output, count, handled, first, alive, time.perf_counter)
    return end - start


def wait_marks(amqp: Any, output: str, count: int, handled: Callable[[], int], first: Callable[[], Moment | None],
               alive: Callable[[], bool], mark: Callable[[], Moment]) -> tuple[Moment, Moment]:
    """The first delivery's moment and ``mark()`` once ``output`` holds ``count`` messages. Asks
    RabbitMQ only once ``handled`` reaches ``count``: polling it all along costs the measured CPU."""
    progress, stalled_since = -1, time.monotonic()
    while handled() < count or depth(amqp, output) < count:
        if handled() != progress:
            progress, stalled_since = handled(), time.monotonic()
        if not alive() or time.monotonic() - stalled_since > STALL_TIMEOUT:
            raise RuntimeError(f"{output}: consumer stopped or stalled at {handled()} of {count} messages")
        amqp.connection.sleep(0.01 if handled() < count else 0.002)  # sleep() also answers heartbeats
    end, start = mark(), first()
    if start is None:
        raise RuntimeError("no delivery was recorded")
    return start, end


# -- slingshot in process -------------------------------------------------------------------


@contextlib.contextmanager
def first_delivery(mark: Callable[[], Moment]) -> Iterator[Callable[[], Moment | None]]:
    """``mark()`` when the service's I/O thread receives its first message (a bench-only patch)."""
    original, marks = Broker._on_message, list[Moment]()

    def on_message(self: Broker, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if not marks:
            marks.append(mark())
        original(self, channel, method, properties, body)

    Broker._on_message = on_message  # type: ignore[method-assign]
    try:
        yield lambda: marks[0] if marks else None
    finally:
        Broker._on_message = original  # type: ignore[method-assign]


def run_service(stack: LocalStack, amqp: Any, process: ProcessFn, count: int, prefix: str,
                buckets: dict[str, str] | None = None, **settings: Any) -> float:
    """The real :class:`Service` on a thread over a pre-filled queue of ``count`` messages;
    seconds from its first delivery until all copies are in its output queue."""
    start, end = run_service_marks(stack, amqp, process, count, prefix, time.perf_counter, buckets, **settings)
    return end - start


def run_service_marks(stack: LocalStack, amqp: Any, process: ProcessFn, count: int, prefix: str, mark: Callable[[], Moment],
                      buckets: dict[str, str] | None = None, settle: float = 0.5, **settings: Any) -> tuple[Moment, Moment]:
    """:func:`run_service` with ``mark()`` at its first delivery and once all copies are out."""
    os.environ.update(stack.passwords.env())  # pass_show reads the process environment
    name = stack.add_service(prefix, buckets)
    inbound, output = f"{name}-in", f"{name}-out"
    options = Settings.load(name, stack.config.url, environ={}, database_url=DATABASE_URL, health_port=0, **settings)
    policy = RetryPolicy(name, inbound, options.max_attempts, options.retry_delay, options.max_retry_delay)
    with filled(amqp, inbound, output, count, settle, tuple(spec.name for spec in policy.queues())):
        service = Service(options, process)
        thread = threading.Thread(target=service.serve, name="slingshot-service", daemon=True)
        with first_delivery(mark) as first:
            thread.start()
            try:
                moments = wait_marks(amqp, output, count, lambda: service.processed, first, thread.is_alive, mark)
            finally:
                service.handle_signal(15, None)  # drain and stop, as on SIGTERM
                thread.join(60)
        if thread.is_alive() or service.processed != count:
            raise RuntimeError(f"slingshot: processed {service.processed} of {count}, still running: {thread.is_alive()}")
        return moments


# -- results --------------------------------------------------------------------------------


def rounds(count: int, sides: list[Side]) -> Iterator[tuple[int, Side]]:
    """(round, side) in alternating order: A B, B A, A B, …"""
    for round_ in range(count):
        for side in sides if round_ % 2 == 0 else list(reversed(sides)):
            yield round_, side


def rate_summary(seconds: list[float], count: int) -> dict[str, Any]:
    rates = [count / s for s in seconds]
    return {"median": round(statistics.median(rates), 1), "rates": [round(r, 1) for r in rates]}


def header(benchmark: str) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
    }


def revision(checkout: Path = REPO) -> str | None:
    """The commit measured, ``+dirty`` when slingshot_runtime/ has uncommitted changes."""
    git = ["git", "-C", str(checkout)]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "slingshot_runtime"], capture_output=True, text=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    return None


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))


def paired_arguments(doc: str | None, messages: int, prefetch: int, rounds: int = 3) -> argparse.ArgumentParser:
    """The options every two-sided benchmark takes; the caller may add its own, then parse with
    :func:`parse_quietly`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--messages", type=int, default=messages, help=f"messages per run (default {messages})")
    parser.add_argument("--prefetch", type=int, default=prefetch, help=f"prefetch of both sides (default {prefetch})")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds, each running both sides (default {rounds})")
    return parser


def parse_quietly(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, and send only warnings (to stderr): stdout is the JSON result."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args
