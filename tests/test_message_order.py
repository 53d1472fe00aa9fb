"""Nothing is published before its files and rows are durable; failures publish nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy
from sqlalchemy import text

from conftest import Amqp, RunningService, Stack, put_object, read_object


def test_files_and_rows_are_durable_when_the_id_arrives(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], engine: sqlalchemy.Engine, table: str
) -> None:
    service = stack.add_service()
    put_object(stack, service.buckets["in"], 11, b"abc")

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        data = read_file("in", request).read()
        write_file("out", request).write(data.upper())
        connection.execute(text(f"INSERT INTO {table} (id, note) VALUES (:id, :note)"), {"id": request, "note": data.decode()})
        yield (request, True)

    run_service(service, process)
    amqp.send(service.inbound, 11)
    assert amqp.get(service.out_queues[0])[0] == b"11"
    assert read_object(stack, service.buckets["out"], 11) == b"ABC"
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT note FROM {table} WHERE id = 11")).scalar() == "abc"


def test_failing_commit_publishes_nothing(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], engine: sqlalchemy.Engine, table: str
) -> None:
    """A deferred constraint fails at COMMIT, after process() and the upload succeeded."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {table}_u UNIQUE (note) DEFERRABLE INITIALLY DEFERRED")
    service = stack.add_service()

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        write_file("out", request).write(b"x")
        connection.execute(text(f"INSERT INTO {table} (id, note) VALUES (1, 'same'), (2, 'same')"))
        yield (request, True)

    run_service(service, process, max_attempts=2, retry_delay=0.1)
    amqp.send(service.inbound, 3)
    body, props = amqp.get(service.inbound + ".dlq")
    assert body == b"3"
    assert props.headers["x-slingshot-error-type"] == "DatabaseError"
    assert "commit failed" in props.headers["x-slingshot-error"]
    assert props.headers["x-slingshot-attempts"] == 2
    assert amqp.empty(service.out_queues[0])
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0


def test_handler_error_rolls_back_and_removes_staging(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], engine: sqlalchemy.Engine, table: str, tmp_path: Any
) -> None:
    service = stack.add_service()

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        write_file("out", request).write(b"partial")
        connection.execute(text(f"INSERT INTO {table} (id) VALUES (:id)"), {"id": request})
        raise RuntimeError("boom")

    run_service(service, process, max_attempts=1, staging_dir=str(tmp_path))
    amqp.send(service.inbound, 4)
    amqp.get(service.inbound + ".dlq")
    assert list(tmp_path.iterdir()) == []
    assert amqp.empty(service.out_queues[0])
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
    objects = stack.s3.client().list_objects_v2(Bucket=service.buckets["out"]).get("KeyCount", 0)
    assert objects == 0


def test_s3_down_during_a_message_publishes_nothing_then_recovers(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    entered, release = threading.Event(), threading.Event()

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        write_file("out", request).write(b"payload")
        if request == 1:
            entered.set()
            release.wait(60)
        yield (request, True)

    run_service(service, process, max_attempts=10, retry_delay=0.5)
    amqp.send(service.inbound, 1)
    assert entered.wait(30)
    stack.s3.stop()
    try:
        release.set()
        # The upload fails: no output, and the message waits in the retry queue instead.
        assert amqp.empty(service.out_queues[0], wait=3.0)
        assert amqp.count(service.inbound + ".dlq") == 0
    finally:
        stack.s3.start()
    body, _ = amqp.get(service.out_queues[0], timeout=60)
    assert body == b"1"
    assert read_object(stack, service.buckets["out"], 1) == b"payload"
