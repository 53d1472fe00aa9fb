"""Throughput of a no-op slingshot handler against a raw pika baseline, on the real local stack.

Both sides consume a pre-filled queue of persistent messages, publish one persistent copy per
message with publisher confirms pipelined, and ack inbound messages once their copy is confirmed.
A run is timed from its first delivery until the output queue holds all N copies.

    python bench/throughput.py --messages 20000 --prefetch 500 --rounds 3

Prints one JSON object on stdout (progress goes to stderr). Not a test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import functools
import json
import logging
import os
import platform
import signal
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
from pika.adapters.select_connection import SelectConnection
from pika.spec import Basic, BasicProperties

# Measure this checkout's runtime, not whichever copy is pip-installed; PYTHONPATH still wins.
sys.path.insert(1 + len([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), str(Path(__file__).resolve().parents[1]))

import slingshot_runtime
from slingshot_runtime import devstack
from slingshot_runtime.broker import Broker
from slingshot_runtime.retry import RetryPolicy
from slingshot_runtime.service import Service
from slingshot_runtime.settings import Settings
from slingshot_runtime.sysmap import ConfigServer, SystemMap

DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TARGET_RATIO = 0.7
STALL_TIMEOUT = 60.0  # seconds without progress before a run is declared failed
PARAMS = pika.ConnectionParameters("127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"))
PERSISTENT = BasicProperties(delivery_mode=2)
T = TypeVar("T")
Probe = Callable[[], T]


def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterator[tuple[int, bool]]:
    yield (request, True)


@functools.cache
def _broker_stat() -> Path | None:
    """/proc/PID/stat of RabbitMQ's beam.smp, when it runs on this machine."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp":
                return Path(f"/proc/{pid}/stat")
    return None


def broker_cpu() -> float | None:
    """CPU seconds RabbitMQ has used so far (all its work, including other clients')."""
    if (stat := _broker_stat()) is None:
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Mark:
    """A moment with the CPU seconds this process (all threads) and the broker had used by then;
    ``end.since(start)`` is the interval between two, in the same fields."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    broker: float | None = field(default_factory=broker_cpu)

    def since(self, start: Mark) -> Mark:
        broker = None if self.broker is None or start.broker is None else self.broker - start.broker
        return Mark(self.wall - start.wall, self.cpu - start.cpu, broker)


@dataclass
class Env:
    config: ConfigServer
    document: dict[str, Any]
    amqp: Any  # a BlockingChannel for filling, polling and deleting queues


@contextlib.contextmanager
def local_stack(root: Path) -> Iterator[Env]:
    """SeaweedFS, a pass store and the config service, all private to this run."""
    devstack.ensure_rabbitmq()
    devstack.ensure_postgres()
    with contextlib.ExitStack() as stop:
        s3 = devstack.start_s3(root / "s3")
        stop.callback(s3.stop)
        secrets = {"s3/access-key": s3.access_key, "s3/secret-key": s3.secret_key, "postgres/password": "postgres"}
        passwords = devstack.make_pass_store(root / "pass", secrets)
        stop.callback(passwords.close)
        os.environ.update(passwords.env())  # pass_show reads the process environment
        document: dict[str, Any] = {"services": {}, **devstack.config_sections(s3)}
        config = ConfigServer(SystemMap(document))
        config.start()
        stop.callback(config.stop)
        connection = pika.BlockingConnection(PARAMS)
        stop.callback(connection.close)
        yield Env(config, document, connection.channel())


@contextlib.contextmanager
def queues(env: Env, inbound: str, output: str, count: int, settle: float, extra: tuple[str, ...] = ()) -> Iterator[None]:
    """Declare both queues, put ``count`` persistent messages in ``inbound`` (no confirms); delete all after."""
    try:
        for name in (inbound, output):
            env.amqp.queue_declare(name, durable=True)
        for i in range(count):
            env.amqp.basic_publish("", inbound, str(i).encode(), PERSISTENT)
        while env.amqp.queue_declare(inbound, passive=True).method.message_count < count:
            env.amqp.connection.sleep(0.05)
        env.amqp.connection.sleep(settle)  # let the broker finish writing the fill before the clock starts
        yield
    finally:
        for name in (inbound, output, *extra):
            env.amqp.queue_delete(name)


def wait_output(env: Env, queue: str, count: int, first: Probe[Mark | None], done: Probe[int], alive: Probe[bool]) -> Mark:
    """From the first delivery until ``queue`` holds ``count`` messages. Asks RabbitMQ only near the
    end (``done``: messages handled in-process): polling it all along costs the measured process CPU."""
    progress, stalled_since = -1, time.monotonic()
    while done() < count or env.amqp.queue_declare(queue, passive=True).method.message_count < count:
        if done() != progress:
            progress, stalled_since = done(), time.monotonic()
        if not alive() or time.monotonic() - stalled_since > STALL_TIMEOUT:
            raise RuntimeError(f"{queue}: consumer stopped or stalled at {done()} of {count} messages")
        env.amqp.connection.sleep(0.01 if done() < count else 0.002)  # sleep() also answers heartbeats
    end, start = Mark(), first()
    if start is None:
        raise RuntimeError("no delivery was recorded")
    return end.since(start)


class PikaConsumer:
    """The baseline: SelectConnection, consume → publish a persistent copy → ack on its confirm."""

    def __init__(self, inbound: str, output: str, prefetch: int, expected: int) -> None:
        self.inbound, self.output, self.prefetch, self.expected = inbound, output, prefetch, expected
        self.first: Mark | None = None
        self.acked = self.nacked = self.published = 0
        self.done = threading.Event()
        self._pending: collections.deque[tuple[int, int]] = collections.deque()  # (publish seq, inbound tag)
        self._connection: SelectConnection | None = None
        self._channel: Any = None
        self.thread = threading.Thread(target=self._run, name="baseline-io", daemon=True)

    def _run(self) -> None:
        self._connection = SelectConnection(
            PARAMS,
            on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda c, e: c.ioloop.stop(),
            on_close_callback=lambda c, e: c.ioloop.stop(),
        )
        self._connection.ioloop.start()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        consume = functools.partial(channel.basic_consume, self.inbound, self._on_message)
        qos = functools.partial(channel.basic_qos, prefetch_count=self.prefetch, callback=lambda _: consume())
        channel.confirm_delivery(self._on_confirm, callback=lambda _: qos())

    def _on_message(self, channel: Any, method: Basic.Deliver, properties: BasicProperties, body: bytes) -> None:
        if self.first is None:
            self.first = Mark()
        channel.basic_publish("", self.output, body, PERSISTENT)
        self.published += 1
        self._pending.append((self.published, method.delivery_tag))

    def _on_confirm(self, frame: Any) -> None:
        method, last, settled = frame.method, None, 0
        while self._pending and self._pending[0][0] <= method.delivery_tag:  # confirms arrive in order
            last = self._pending.popleft()[1]
            settled += 1
        if last is None:
            return
        if isinstance(method, Basic.Ack):
            self._channel.basic_ack(last, multiple=True)
            self.acked += settled
        else:
            self._channel.basic_nack(last, multiple=True, requeue=False)
            self.nacked += settled
        if self.acked + self.nacked >= self.expected:
            self.done.set()

    def stop(self) -> None:
        if self._connection is not None and self.thread.is_alive():
            self._connection.ioloop.add_callback_threadsafe(self._connection.close)
        self.thread.join(10)


def run_baseline(env: Env, count: int, prefetch: int, settle: float) -> Mark:
    inbound = f"bench-pika-{uuid.uuid4().hex[:8]}-in"
    output = inbound[:-2] + "out"
    with queues(env, inbound, output, count, settle):
        consumer = PikaConsumer(inbound, output, prefetch, count)
        consumer.thread.start()
        try:
            run = wait_output(env, output, count, lambda: consumer.first, lambda: consumer.published, consumer.thread.is_alive)
            if not consumer.done.wait(30) or consumer.nacked:
                raise RuntimeError(f"baseline: acked {consumer.acked}, nacked {consumer.nacked} of {count}")
        finally:
            consumer.stop()
        return run


@contextlib.contextmanager
def first_delivery_hook() -> Iterator[Callable[[], Mark | None]]:
    """Note when the service's I/O thread receives its first message (a bench-only patch)."""
    original = Broker._on_message
    marks: list[Mark] = []

    def on_message(self: Broker, *args: Any) -> None:
        if not marks:
            marks.append(Mark())
        original(self, *args)

    Broker._on_message = on_message  # type: ignore[method-assign,assignment]
    try:
        yield lambda: marks[0] if marks else None
    finally:
        Broker._on_message = original  # type: ignore[method-assign]


def run_slingshot(env: Env, count: int, prefetch: int, settle: float) -> Mark:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    inbound, output = f"{name}-in", f"{name}-out"
    # health_port=0: no /metrics server (Metrics are still recorded); 8080 may be taken on a shared box.
    settings = Settings.load(name, env.config.url, environ={}, prefetch=prefetch, database_url=DATABASE_URL, health_port=0)
    policy = RetryPolicy(name, inbound, settings.max_attempts, settings.retry_delay, settings.max_retry_delay)
    env.document["services"][name] = {"in": inbound, "out": [{"case": True, "queues": [output]}], "buckets": {}}
    env.config.system = SystemMap(env.document)
    try:
        with queues(env, inbound, output, count, settle, tuple(spec.name for spec in policy.queues())):
            service = Service(settings, process)
            thread = threading.Thread(target=service.serve, name="slingshot-service", daemon=True)
            with first_delivery_hook() as first:
                thread.start()
                try:
                    run = wait_output(env, output, count, first, lambda: service.processed, thread.is_alive)
                finally:
                    service.handle_signal(signal.SIGTERM, None)  # drain and stop, as on SIGTERM
                    thread.join(60)
            if thread.is_alive() or service.processed != count:
                raise RuntimeError(f"slingshot: processed {service.processed} of {count}, still running: {thread.is_alive()}")
            return run
    finally:
        del env.document["services"][name]
        env.config.system = SystemMap(env.document)


def revision() -> str | None:
    """The commit measured, ``+dirty`` when slingshot_runtime/ has uncommitted changes."""
    git = ["git", "-C", str(Path(slingshot_runtime.__file__).resolve().parent.parent)]  # the runtime imported
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "slingshot_runtime"], capture_output=True, text=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    return None


def machine(env: Env) -> dict[str, Any]:
    version = env.amqp.connection._impl.server_properties.get("version", b"?")
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pika": pika.__version__,
        "rabbitmq": version.decode() if isinstance(version, bytes) else str(version),
        "rabbitmq_cpu_visible": _broker_stat() is not None,  # found once here, not inside a timed run
    }


def summary(runs: list[Mark], count: int) -> dict[str, Any]:
    brokers = [r.broker for r in runs if r.broker is not None]
    return {
        "median": round(statistics.median(count / r.wall for r in runs), 1),
        "rates": [round(count / r.wall, 1) for r in runs],
        "client_cpu_us_per_msg": round(statistics.median(r.cpu for r in runs) / count * 1e6, 1),
        "broker_cpu_us_per_msg": round(statistics.median(brokers) / count * 1e6, 1) if brokers else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between filling a queue and consuming it")
    parser.add_argument("--only", choices=("baseline", "slingshot"), help="run one side only (for profiling)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # stderr
    runners: dict[str, Callable[[Env, int, int, float], Mark]] = {"baseline": run_baseline, "slingshot": run_slingshot}
    runs: dict[str, list[Mark]] = {name: [] for name in runners if args.only in (None, name)}
    with tempfile.TemporaryDirectory(prefix="sl-bench-") as tmp, local_stack(Path(tmp)) as env:
        info = machine(env)
        for round_ in range(args.rounds):
            for name in list(runs) if round_ % 2 == 0 else list(reversed(runs)):
                run = runners[name](env, args.messages, args.prefetch, args.settle)
                runs[name].append(run)
                print(f"round {round_ + 1} {name}: {args.messages / run.wall:,.0f} msg/s ({run.wall:.2f} s)", file=sys.stderr)
    result: dict[str, Any] = {
        "benchmark": "throughput-noop",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "prefetch": args.prefetch,
        "rounds": args.rounds,
        "runtime": str(Path(slingshot_runtime.__file__).parent),  # which checkout was measured
        "revision": revision(),
        **{name: summary(values, args.messages) for name, values in runs.items()},
        "target_ratio": TARGET_RATIO,
        "machine": info,
    }
    if len(runs) == 2:
        ratio = result["slingshot"]["median"] / result["baseline"]["median"]
        cpu = result["slingshot"]["client_cpu_us_per_msg"] / result["baseline"]["client_cpu_us_per_msg"]
        # CPU per message varies less than rates on a shared box: a steadier view of the overhead.
        result.update(ratio=round(ratio, 3), meets_target=ratio >= TARGET_RATIO, client_cpu_ratio=round(cpu, 2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
