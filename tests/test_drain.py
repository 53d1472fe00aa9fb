"""SIGTERM drains: finish the message in hand, give back the unstarted ones, exit 0 —
or, past the deadline or on a second signal, leave it to the broker and exit non-zero."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from conftest import Amqp, RunningService, Stack
from slingshot_runtime.errors import ExitCode


def _blocking_handler(entered: threading.Event, seconds: float) -> Callable[..., Any]:
    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        write_file("out", request).write(b"done")
        entered.set()
        time.sleep(seconds)
        yield (request, True)

    return process


def test_stop_mid_message_completes_it_and_returns_the_rest(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    entered = threading.Event()
    running = run_service(service, _blocking_handler(entered, 1.5), prefetch=10)
    for request in range(1, 6):
        amqp.send(service.inbound, request)
    assert entered.wait(20)
    time.sleep(0.2)  # let the broker push the rest into the prefetch buffer
    started = time.monotonic()
    assert running.stop() == ExitCode.OK
    assert time.monotonic() - started < 1.5 + 1.0  # the remaining work plus a second
    assert amqp.get(service.out_queues[0])[0] == b"1"
    assert amqp.empty(service.out_queues[0], wait=0.3)
    assert amqp.count(service.inbound) == 4  # prefetched, unstarted: back in the queue, not acked


def test_drain_deadline_leaves_the_message_to_the_broker(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]
) -> None:
    service = stack.add_service()
    entered = threading.Event()
    running = run_service(service, _blocking_handler(entered, 5.0), drain_timeout=0.5)
    amqp.send(service.inbound, 21)
    assert entered.wait(20)
    started = time.monotonic()
    assert running.stop() == ExitCode.DRAIN_TIMEOUT
    assert time.monotonic() - started < 3.0
    body, _ = amqp.get(service.inbound, timeout=10)  # redelivered, not lost
    assert body == b"21"
    assert amqp.count(service.out_queues[0]) == 0


def test_second_signal_stops_at_once(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    entered = threading.Event()
    running = run_service(service, _blocking_handler(entered, 10.0), drain_timeout=25)
    amqp.send(service.inbound, 22)
    assert entered.wait(20)
    started = time.monotonic()
    running.service.handle_signal(15, None)
    time.sleep(0.3)
    assert running.stop() == ExitCode.DRAIN_TIMEOUT  # stop() sends the second signal
    assert time.monotonic() - started < 3.0
    assert amqp.get(service.inbound, timeout=10)[0] == b"22"
