"""Chaos: a two-service pipeline over 2,000 requests, both workers real processes, while the
test closes their broker connections, restarts S3, kills their PostgreSQL sessions, SIGKILLs
each worker and injects poison bodies. Every request must reach the sink; only the poison
bodies may be dead-lettered. Loopback only; it stops by itself within HARD_TIMEOUT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pika
import pytest
import sqlalchemy
from sqlalchemy import text

from conftest import Amqp, ServiceDef, Stack, close_broker_connections
from slingshot_runtime.dlq import DeadLetterQueue
from slingshot_runtime.retry import RetryPolicy

REQUESTS = 2000
#: Requests are fed over this many seconds, so every chaos action meets messages in flight.
FEED_SECONDS = 40.0
HARD_TIMEOUT = 360.0
#: Longer than boto3's own retries, so uploads fail and the worker's retries take over.
S3_DOWN_SECONDS = 3.0
RETRY_DELAY, MAX_RETRY_DELAY, MAX_ATTEMPTS = 0.2, 2.0, 20
POISON = [b"", b"abc", b"-1", b"18446744073709551616", "\u0661".encode(), b"1.5", b"0x10", b"\xff\xfe", b"12 34", b"+7"]

HANDLER = '''
import os

from sqlalchemy import text

TABLE = os.environ["CHAOS_TABLE"]
ROLE = os.environ["CHAOS_ROLE"]


def process(request, read_file, write_file, connection):
    if ROLE == "a":
        yield (request, True)
        return
    write_file("out", request).write(b"chaos %d" % request)
    connection.execute(text(f"INSERT INTO {TABLE} (id) VALUES (:id)"), {"id": request})
    yield (request, "done")
'''


class Worker:
    """One service as a real process (``python -m slingshot_runtime handler.py``), restartable."""

    def __init__(self, service: ServiceDef, role: str, handler: Path, env: dict[str, str], log_path: Path) -> None:
        self.service = service
        self.argv = [sys.executable, "-m", "slingshot_runtime", str(handler)]
        self.env = {**env, "SLINGSHOT_SERVICE": service.name, "CHAOS_ROLE": role}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.service.name} died by itself: {self.proc}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def outcomes(self) -> dict[str, int]:
        """Failed attempts the worker logged, by outcome (``retried``, ``dead_lettered``)."""
        counts: dict[str, int] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("outcome") in ("retried", "dead_lettered"):
                counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        return counts


@dataclass
class Sink:
    """Collects the final outputs on its own connection (the chaos never touches it)."""

    queue: str
    ids: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
            channel = connection.channel()
            channel.basic_consume(self.queue, lambda ch, method, props, body: self.ids.append(int(body)), auto_ack=True)
            while not self.stop.is_set():
                connection.process_data_events(time_limit=0.2)
            connection.close()
        except BaseException as exc:
            self.error = exc


@dataclass
class Feeder:
    """Publishes the requests at a steady rate, with confirms, a poison body every so often."""

    queue: str
    sent: int = 0
    poison_sent: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
            channel = connection.channel()
            channel.confirm_delivery()
            started = time.monotonic()
            every = REQUESTS // len(POISON)
            properties = pika.BasicProperties(delivery_mode=2)
            for request in range(1, REQUESTS + 1):
                channel.basic_publish("", self.queue, str(request).encode(), properties, mandatory=True)
                self.sent = request
                if request % every == every // 2:
                    channel.basic_publish("", self.queue, POISON[self.poison_sent], properties, mandatory=True)
                    self.poison_sent += 1
                pause = started + FEED_SECONDS * request / REQUESTS - time.monotonic()
                if pause > 0:
                    connection.sleep(pause)
            connection.close()
        except BaseException as exc:
            self.error = exc


def kill_backends(engine: sqlalchemy.Engine, *services: str) -> int:
    names = [f"slingshot {name}" for name in services]
    with engine.connect() as conn:
        query = text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = ANY(:names)")
        return int(conn.execute(query, {"names": names}).scalar_one())


@pytest.mark.timeout(HARD_TIMEOUT + 60)
def test_pipeline_loses_nothing_under_chaos(stack: Stack, amqp: Amqp, engine: sqlalchemy.Engine, tmp_path: Path) -> None:
    wall = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    sink_queue = f"chaos-sink-{suffix}"
    b = stack.add_service(f"chaos-b-{suffix}", routes=[("done", [sink_queue])], buckets={"out": f"chaos-out-{suffix}"})
    a = stack.add_service(f"chaos-a-{suffix}", routes=[(True, [b.inbound])], buckets={})
    table = f"chaos_{suffix}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id NUMERIC(20) NOT NULL)")  # no key: duplicates are counted, not refused
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLINGSHOT_")}  # no SLINGSHOT_DATABASE_URL: pass is used
    env.update(
        SLINGSHOT_CONFIG_HOST=stack.config.url,
        SLINGSHOT_RETRY_DELAY=str(RETRY_DELAY),
        SLINGSHOT_MAX_RETRY_DELAY=str(MAX_RETRY_DELAY),
        SLINGSHOT_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        SLINGSHOT_HEALTH_PORT="0",
        SLINGSHOT_LOG_FORMAT="json",
        SLINGSHOT_DRAIN_TIMEOUT="10",
        CHAOS_TABLE=table,
        PYTHONUNBUFFERED="1",
    )
    workers = {"a": Worker(a, "a", handler, env, tmp_path / "a.log"), "b": Worker(b, "b", handler, env, tmp_path / "b.log")}
    sink, feeder = Sink(sink_queue), Feeder(a.inbound)
    threads = [threading.Thread(target=sink.run, daemon=True), threading.Thread(target=feeder.run, daemon=True)]
    events: list[str] = []
    try:
        workers["b"].start()
        amqp.wait_consumer(b.inbound)
        workers["a"].start()
        amqp.wait_consumer(a.inbound)
        started = time.monotonic()

        def restart(role: str) -> Callable[[], str]:
            def act() -> str:
                workers[role].kill()
                workers[role].start()
                return f"SIGKILL {role}"

            return act

        def close_connections() -> str:
            return f"closed {close_broker_connections(a.name) + close_broker_connections(b.name)} broker connections"

        def restart_s3() -> str:
            stack.s3.stop()
            time.sleep(S3_DOWN_SECONDS)
            stack.s3.start()
            return f"restarted S3 (down {S3_DOWN_SECONDS:.0f}s)"

        def kill_pg() -> str:
            return f"killed {kill_backends(engine, a.name, b.name)} PostgreSQL backends"

        chaos: list[tuple[float, Callable[[], str]]] = [
            (3, close_connections),
            (7, kill_pg),
            (11, restart("a")),
            (15, restart_s3),
            (19, close_connections),
            (23, restart("b")),
            (27, kill_pg),
            (31, close_connections),
        ]
        for thread in threads:
            thread.start()
        for at, act in chaos:
            time.sleep(max(0.0, started + at - time.monotonic()))
            assert feeder.error is None and sink.error is None, (feeder.error, sink.error)
            flowing = f"fed {feeder.sent}, delivered {len(sink.ids)}"
            events.append(f"{time.monotonic() - started:.1f}s {act()} ({flowing})")
            assert feeder.sent < REQUESTS, f"the feed ended before the chaos did: {events}"

        expected = set(range(1, REQUESTS + 1))
        deadline = wall + HARD_TIMEOUT
        while (set(sink.ids) != expected or feeder.poison_sent < len(POISON)) and time.monotonic() < deadline:
            assert feeder.error is None and sink.error is None, (feeder.error, sink.error)
            for worker in workers.values():
                assert worker.proc is not None and worker.proc.poll() is None, f"{worker.service.name} exited: {events}"
            time.sleep(0.5)
        delivered = set(sink.ids)
        lost = sorted(expected - delivered)
        assert not lost, f"{len(lost)} requests never reached the sink, e.g. {lost[:10]}; chaos: {events}"
        assert delivered == expected  # nothing else arrived either

        params = pika.ConnectionParameters("127.0.0.1", 5672)
        while amqp.count(a.inbound + ".dlq") < len(POISON) and time.monotonic() < deadline:
            time.sleep(0.2)
        with DeadLetterQueue(params, a.inbound) as dlq:
            dead = dlq.read()
        dead_bodies = [letter.body for letter in dead]
        assert set(dead_bodies) == set(POISON), f"A's DLQ holds {dead_bodies!r}"
        assert {letter.error_type for letter in dead} == {"BadRequestError"}
        assert amqp.count(b.inbound + ".dlq") == 0, "a good request was dead-lettered by B"

        with engine.connect() as conn:
            committed, distinct = conn.execute(text(f"SELECT count(*), count(DISTINCT id) FROM {table}")).one()
        assert distinct == REQUESTS
        outcomes = [worker.outcomes() for worker in workers.values()]
        retries = sum(o.get("retried", 0) for o in outcomes)
        print(
            f"\nchaos: requests={REQUESTS} delivered={len(delivered)} duplicates={len(sink.ids) - len(delivered)}"
            f" (rows committed twice: {committed - distinct}) retries={retries} (failed attempts the workers sent"
            f" through retry queues, from their logs) dead_letters={len(dead)} (poison {len(POISON)})"
            f" lost={len(lost)} wall={time.monotonic() - wall:.1f}s chaos=[{'; '.join(events)}]"
        )
    finally:
        for worker in workers.values():
            worker.stop()
        sink.stop.set()
        for thread in threads:
            thread.join(10)
        if not stack.s3.is_running():
            stack.s3.start()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        cleanup(amqp, a, b, sink_queue)


def cleanup(amqp: Amqp, a: ServiceDef, b: ServiceDef, sink_queue: str) -> None:
    """Delete the run's queues (hundreds of persistent messages would otherwise stay behind)."""
    queues = {sink_queue}
    for service in (a, b):
        policy = RetryPolicy(service.name, service.inbound, MAX_ATTEMPTS, RETRY_DELAY, MAX_RETRY_DELAY)
        queues |= {service.inbound, *(spec.name for spec in policy.queues())}
    for queue in sorted(queues):
        amqp.delete(queue)
