"""Queues ops pre-declared are used as they are; heartbeats flow while process() runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from conftest import Amqp, RunningService, Stack


@pytest.mark.parametrize(
    "arguments",
    [{"x-queue-type": "quorum"}, {"x-max-length": 100000, "x-queue-mode": "lazy"}],
    ids=["quorum", "classic-with-arguments"],
)
def test_predeclared_inbound_queue_is_used_as_is(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], arguments: dict[str, Any]
) -> None:
    service = stack.add_service()
    amqp.declare(service.inbound, arguments)
    amqp.declare(service.out_queues[0], arguments)
    run_service(service, lambda request, r, w, c: [(request, True)], max_attempts=2)
    amqp.send(service.inbound, 8)
    assert amqp.get(service.out_queues[0])[0] == b"8"
    amqp.send(service.inbound, b"not-a-number")
    assert amqp.get(service.inbound + ".dlq")[0] == b"not-a-number"


def test_long_handler_keeps_heartbeats_and_is_not_redelivered(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    """A 4.5 s handler with a 1 s heartbeat: a blocked I/O loop would lose the connection after ~2 s."""
    service = stack.add_service()
    calls: list[int] = []

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        calls.append(request)
        time.sleep(4.5)  # also holds the GIL in slices, like real user code
        yield (request, True)

    running = run_service(service, process, heartbeat=1)
    generation = running.service.broker.generation if running.service.broker else 0
    amqp.send(service.inbound, 12)
    body, _ = amqp.get(service.out_queues[0], timeout=30)
    assert body == b"12"
    assert amqp.empty(service.out_queues[0], wait=2.0)
    assert calls == [12]
    assert running.service.broker is not None and running.service.broker.generation == generation
