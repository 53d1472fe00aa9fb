"""The offline harness makes the same decisions as the real worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import Amqp, RunningService, Stack, put_object, read_object
from slingshot_runtime.errors import BadOutputError, HandlerError, StorageError, UnroutableError
from slingshot_runtime.testing import Harness


def classify(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
    """Route by the content of the input: a handler with real decisions to compare."""
    text_in = read_file("in", request).read().decode()
    write_file("out", request).write(text_in[::-1].encode())
    connection.execute(text("CREATE TABLE IF NOT EXISTS seen (id BIGINT)"))
    connection.execute(text("INSERT INTO seen (id) VALUES (:id)"), {"id": request})
    if "!" in text_in:
        yield (request, True)
    yield (request + 1000, len(text_in) % 3)
    yield (request + 2000, "long" if len(text_in) > 5 else "short")


ROUTES: list[tuple[Any, list[str]]] = [(True, ["bang"]), (0, ["m0"]), (1, ["m1"]), (2, ["m2"]), ("long", ["long"]), ("short", ["short"])]
INPUTS = {1: b"hi!", 2: b"hello world", 3: b"abcd", 4: b"x!yz!!"}


def test_harness_matches_the_real_worker(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], tmp_path: Path) -> None:
    suffix = stack.add_service().name  # a unique name to build queue names from
    routes = [(case, [f"{suffix}-{q}" for q in queues]) for case, queues in ROUTES]
    service = stack.add_service(routes=routes)
    for request, data in INPUTS.items():
        put_object(stack, service.buckets["in"], request, data)
    run_service(service, classify, database_url=f"sqlite:///{tmp_path / 'worker.db'}")
    for request in INPUTS:
        amqp.send(service.inbound, request)

    harness = Harness(classify, routes=routes, database_url=f"sqlite:///{tmp_path / 'harness.db'}")
    expected: dict[str, list[int]] = {}
    for request, data in INPUTS.items():
        harness.put("in", request, data)
        for queue, ids in harness.invoke(request).routed.items():
            expected.setdefault(queue, []).extend(ids)

    seen: dict[str, list[int]] = {}
    for queue in service.out_queues:
        while amqp.count(queue) or len(seen.get(queue, [])) < len(expected.get(queue, [])):
            seen.setdefault(queue, []).append(int(amqp.get(queue)[0]))
    assert {q: sorted(v) for q, v in seen.items()} == {q: sorted(v) for q, v in expected.items()}
    for request, data in INPUTS.items():
        assert harness.read("out", request) == read_object(stack, service.buckets["out"], request) == data[::-1]
    with harness.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM seen")).scalar() == len(INPUTS)
    harness.close()


def test_harness_raises_the_worker_errors() -> None:
    with Harness(lambda request, r, w, c: [(request, "nope")], routes={True: ["q"]}) as harness:
        with pytest.raises(UnroutableError, match='case "nope" has no route'):
            harness.invoke(1)
    with Harness(lambda request, r, w, c: [(-1, True)]) as harness:
        with pytest.raises(BadOutputError, match="id must be"):
            harness.invoke(1)
    with Harness(lambda request, r, w, c: [(request, c.no_such_thing)]) as harness:
        with pytest.raises(HandlerError, match="AttributeError"):
            harness.invoke(1)
    with Harness(lambda request, r, w, c: [r("in", request).read()]) as harness:
        with pytest.raises(StorageError, match="NoSuchKey"):
            harness.invoke(5)


def test_failed_invoke_leaves_no_files() -> None:
    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        write_file("out", request).write(b"partial")
        raise RuntimeError("boom")

    with Harness(process) as harness:
        with pytest.raises(HandlerError):
            harness.invoke(3)
        with pytest.raises(StorageError):
            harness.read("out", 3)


def test_without_routes_cases_are_reported_not_routed() -> None:
    with Harness(lambda request, r, w, c: [(request, True), (request + 1, 1)]) as harness:
        result = harness.invoke(4)
    assert result.outputs == [(4, True), (5, 1)] and result.routed == {}
