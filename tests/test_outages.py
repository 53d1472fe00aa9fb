"""Outages of the systems around a worker: PostgreSQL backends killed, the config service
missing at start; and the timing rules: retry backoff and the slow-handler warning."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text

from conftest import Amqp, RunningService, Stack
from slingshot_runtime.errors import ExitCode
from slingshot_runtime.service import Service
from slingshot_runtime.settings import Settings


def kill_backends(engine: sqlalchemy.Engine, service: str, timeout: float = 10.0) -> int:
    """Terminate the worker's PostgreSQL sessions (the runtime names them ``slingshot SERVICE``)
    and wait until they are gone, so the next message meets a dead connection."""
    name = {"name": f"slingshot {service}"}
    terminate = text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name")
    remaining = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    with engine.connect() as conn:
        killed = int(conn.execute(terminate, name).scalar_one())
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:  # a new transaction each time: pg_stat_activity is a snapshot per transaction
            if not conn.execute(remaining, name).scalar_one():
                return killed
        assert time.monotonic() < deadline, f"the backends of {name['name']!r} did not go away"
        time.sleep(0.05)


def rows(engine: sqlalchemy.Engine, table: str) -> list[int]:
    with engine.connect() as conn:
        return [int(r) for r in conn.execute(text(f"SELECT id FROM {table} ORDER BY id")).scalars()]


def inserting(table: str, calls: list[int], hook: Callable[[int, int], None] = lambda request, attempt: None) -> Callable[..., Any]:
    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        calls.append(request)
        connection.execute(text(f"INSERT INTO {table} (id) VALUES (:id)"), {"id": request})
        hook(request, calls.count(request))
        yield (request, True)

    return process


def test_backend_killed_between_messages_retries_then_the_pool_recovers(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], engine: sqlalchemy.Engine, table: str
) -> None:
    service = stack.add_service()
    out = service.out_queues[0]
    calls: list[int] = []
    run_service(service, inserting(table, calls), max_attempts=5, retry_delay=0.2)
    amqp.send(service.inbound, 1)
    assert amqp.get(out)[0] == b"1"
    assert kill_backends(engine, service.name) == 1
    for request in range(2, 7):
        amqp.send(service.inbound, request)
    assert sorted(body for body, _ in amqp.get_all(out, 5)) == [b"2", b"3", b"4", b"5", b"6"]
    assert calls.count(2) == 2  # it met the dead connection, was retried, and succeeded
    assert [calls.count(r) for r in range(3, 7)] == [1, 1, 1, 1]  # a fresh connection from then on
    assert rows(engine, table) == [1, 2, 3, 4, 5, 6]
    assert amqp.empty(out) and amqp.count(service.inbound + ".dlq") == 0


def test_backend_killed_during_a_message_rolls_back_and_retries(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], engine: sqlalchemy.Engine, table: str
) -> None:
    service = stack.add_service()
    out = service.out_queues[0]
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def hold_first_attempt(request: int, attempt: int) -> None:
        if request == 1 and attempt == 1:
            entered.set()
            release.wait(30)

    run_service(service, inserting(table, calls, hold_first_attempt), max_attempts=5, retry_delay=0.2)
    amqp.send(service.inbound, 1)
    assert entered.wait(30)
    assert kill_backends(engine, service.name) == 1  # the row is inserted, not committed
    release.set()
    assert amqp.get(out)[0] == b"1"
    assert calls == [1, 1]
    assert rows(engine, table) == [1]  # the first attempt's insert died with its transaction
    amqp.send(service.inbound, 2)
    assert amqp.get(out)[0] == b"2"
    assert rows(engine, table) == [1, 2]
    assert amqp.empty(out) and amqp.count(service.inbound + ".dlq") == 0


def test_config_service_unreachable_at_start_exits_with_the_config_code(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings.load("svc-unreachable", f"http://127.0.0.1:{port}", environ={}, config_attempts=3, health_port=0)
    service = Service(settings, lambda request, r, w, c: [])
    codes: list[ExitCode] = []
    caplog.set_level(logging.WARNING, logger="slingshot_runtime")
    started = time.monotonic()
    serving = threading.Thread(target=lambda: codes.append(service.serve()))  # off the main thread: no signal handlers
    serving.start()
    serving.join(30)
    assert not serving.is_alive(), "serve() did not give up"
    assert codes == [ExitCode.CONFIG]
    assert time.monotonic() - started < 10  # two backoff sleeps of at most 0.75 s and 1.5 s
    messages = [r.getMessage() for r in caplog.records]
    assert sum("config service not reachable (attempt" in m for m in messages) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"ConfigError: GET http://127.0.0.1:{port}/svc-unreachable failed: ConnectionError")


def test_retries_back_off_and_the_dead_letter_counts_the_attempts(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    called: list[float] = []

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        called.append(time.monotonic())
        raise RuntimeError("always")

    run_service(service, process, max_attempts=3, retry_delay=0.5)
    amqp.send(service.inbound, 5)
    body, props = amqp.get(service.inbound + ".dlq", timeout=30)
    assert body == b"5" and len(called) == 3
    first_gap, second_gap = called[1] - called[0], called[2] - called[1]
    assert 0.4 <= first_gap <= 3.0 and 0.4 <= second_gap <= 3.0, (first_gap, second_gap)
    assert second_gap > first_gap  # 0.5 s, then 1.0 s
    assert props.headers["x-slingshot-attempts"] == 3
    assert props.headers["x-slingshot-attempt"] == 3  # the header the third delivery carried
    assert amqp.count(service.inbound + ".retry.500ms") == 0 and amqp.count(service.inbound + ".retry.1000ms") == 0


def test_a_slow_handler_warns_naming_consumer_timeout(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], caplog: pytest.LogCaptureFixture
) -> None:
    service = stack.add_service()

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        time.sleep(1.5)
        yield (request, True)

    caplog.set_level(logging.WARNING, logger="slingshot_runtime")
    run_service(service, process, slow_handler_warning=0.5)
    amqp.send(service.inbound, 8)
    assert amqp.get(service.out_queues[0])[0] == b"8"
    warnings = [r for r in caplog.records if "consumer_timeout" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]
