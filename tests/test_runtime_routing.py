"""Strict case routing, u64 bounds and invalid outputs, through the real worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Amqp, RunningService, Stack

U64_MAX = 2**64 - 1


def test_cases_route_by_type_and_value(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service(routes=[(True, ["q-bool-" + _s()]), (1, ["q-int-" + _s()]), ("true", ["q-str-" + _s(), "q-str2-" + _s()])])
    q_bool, q_int, q_str, q_str2 = service.out_queues

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        yield (request + 1, True)
        yield (request + 2, 1)
        yield (request + 3, "true")

    run_service(service, process)
    amqp.send(service.inbound, 100)
    assert amqp.get(q_bool)[0] == b"101"
    assert amqp.get(q_int)[0] == b"102"
    body, props = amqp.get(q_str)
    assert body == b"103" and props.headers["x-slingshot-case"] == '"true"'
    assert amqp.get(q_str2)[0] == b"103"
    assert props.headers["x-slingshot-request"] == "100"
    for queue in (q_bool, q_int, q_str):
        assert amqp.empty(queue, wait=0.2)


def test_u64_bounds_round_trip(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    run_service(service, lambda request, r, w, c: [(request, True)])
    for value in (0, U64_MAX):
        amqp.send(service.inbound, value)
        assert amqp.get(service.out_queues[0])[0] == str(value).encode()


def test_invalid_output_ids_are_dead_lettered_and_nothing_published(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    bad: dict[int, Any] = {1: -1, 2: 2**64, 3: True}

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        yield (request, True)  # a valid output first: it must not be published either
        yield (bad[request], True)

    run_service(service, process, max_attempts=3)
    for request in bad:
        amqp.send(service.inbound, request)
    dead = amqp.get_all(service.inbound + ".dlq", 3)
    assert sorted(body for body, _ in dead) == [b"1", b"2", b"3"]
    for _, props in dead:
        assert props.headers["x-slingshot-error-type"] == "BadOutputError"
        assert "id must be an int in 0..2^64-1" in props.headers["x-slingshot-error"]
        assert props.headers["x-slingshot-attempts"] == 1  # permanent: no retries
    assert amqp.empty(service.out_queues[0])


def test_unroutable_case_is_dead_lettered(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    run_service(service, lambda request, r, w, c: [(request, "True")])
    amqp.send(service.inbound, 5)
    body, props = amqp.get(service.inbound + ".dlq")
    assert body == b"5"
    assert props.headers["x-slingshot-error-type"] == "UnroutableError"
    assert 'case "True" has no route' in props.headers["x-slingshot-error"]
    assert amqp.empty(service.out_queues[0])


def test_bad_bodies_are_dead_lettered_with_a_clear_error(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    run_service(service, lambda request, r, w, c: [(request, True)])
    bodies = [b"", b"abc", b"-1", b"18446744073709551616", "\u0661".encode()]
    for body in bodies:
        amqp.send(service.inbound, body)
    amqp.send(service.inbound, 7)
    assert amqp.get(service.out_queues[0])[0] == b"7"  # the worker survived them all
    dead = amqp.get_all(service.inbound + ".dlq", len(bodies))
    assert sorted(b for b, _ in dead) == sorted(bodies)
    assert {p.headers["x-slingshot-error-type"] for _, p in dead} == {"BadRequestError"}


def test_handler_exception_is_retried_then_dead_lettered(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    calls: list[int] = []

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        calls.append(request)
        raise ValueError(f"cannot handle {request}")

    run_service(service, process, max_attempts=3, retry_delay=0.1)
    amqp.send(service.inbound, 9)
    body, props = amqp.get(service.inbound + ".dlq")
    assert body == b"9" and calls == [9, 9, 9]
    headers = props.headers
    assert headers["x-slingshot-error-type"] == "HandlerError"
    assert "ValueError: cannot handle 9" in headers["x-slingshot-error"]
    assert "raise ValueError" in headers["x-slingshot-traceback"]
    assert headers["x-slingshot-attempts"] == 3
    assert headers["x-slingshot-service"] == service.name
    assert headers["x-slingshot-first-failure"]


def _s() -> str:
    import uuid

    return uuid.uuid4().hex[:8]
