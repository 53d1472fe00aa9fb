"""Broker connection loss and consumer cancellation: reconnect, re-declare, resume; lose nothing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from conftest import Amqp, RunningService, Stack, close_broker_connections


def _wait_consuming(running: RunningService, generation: int, timeout: float = 30.0) -> None:
    broker = running.service.broker
    assert broker is not None
    deadline = time.monotonic() + timeout
    while not (broker.consuming and broker.generation > generation):
        assert time.monotonic() < deadline, "the worker did not resume consuming"
        time.sleep(0.05)


def test_connection_closed_by_broker_reconnects(stack: Stack, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    running = run_service(service, lambda request, r, w, c: [(request, True)])
    assert running.service.broker is not None
    generation = running.service.broker.generation
    assert close_broker_connections(service.name) == 1
    _wait_consuming(running, generation)
    amqp = Amqp()
    try:
        amqp.send(service.inbound, 31)
        assert amqp.get(service.out_queues[0])[0] == b"31"
    finally:
        amqp.close()


def test_message_in_flight_at_connection_loss_is_redelivered(stack: Stack, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    calls: list[int] = []

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        calls.append(request)
        if len(calls) == 1:
            close_broker_connections(service.name)  # the connection dies while this message is in hand
        yield (request, True)

    running = run_service(service, process)
    assert running.service.broker is not None
    generation = running.service.broker.generation
    sender = Amqp()
    sender.send(service.inbound, 32)
    sender.close()
    _wait_consuming(running, generation)
    amqp = Amqp()
    try:
        bodies = [amqp.get(service.out_queues[0], timeout=30)[0]]
        while amqp.count(service.out_queues[0]):
            bodies.append(amqp.get(service.out_queues[0])[0])
        # The first attempt's outputs died with the connection; the redelivery published them.
        assert bodies == [b"32"]
        assert calls == [32, 32]
    finally:
        amqp.close()


def test_deleted_inbound_queue_is_redeclared_and_consumed(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    running = run_service(service, lambda request, r, w, c: [(request, True)])
    assert running.service.broker is not None
    generation = running.service.broker.generation
    amqp.delete(service.inbound)  # the broker cancels our consumer
    _wait_consuming(running, generation)
    amqp.send(service.inbound, 33)
    assert amqp.get(service.out_queues[0])[0] == b"33"


def test_broker_restart_is_survived(stack: Stack, run_service: Callable[..., RunningService]) -> None:
    """RabbitMQ stopped and started again (its app, as a node restart would): the worker
    reconnects with backoff, re-declares, and serves; a message sent before the stop is not lost."""
    service = stack.add_service()
    running = run_service(service, lambda request, r, w, c: [(request, True)])
    assert running.service.broker is not None
    generation = running.service.broker.generation
    sender = Amqp()
    sender.send(service.inbound, 34)
    assert sender.get(service.out_queues[0])[0] == b"34"
    sender.close()
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    try:
        time.sleep(2)  # the worker sees the connection drop and starts retrying
        assert not running.service.broker.consuming
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    _wait_consuming(running, generation, timeout=90)
    amqp = Amqp()
    try:
        amqp.send(service.inbound, 35)
        assert amqp.get(service.out_queues[0], timeout=30)[0] == b"35"
    finally:
        amqp.close()
