"""A message that kills the worker process (segfault, OOM kill, os._exit) cannot be caught by
the runtime: it comes back to whichever worker starts next. This proves the guard
docs/failure-handling.md describes: a quorum inbound queue with ``x-delivery-limit`` that
dead-letters to ``{in}.dlq`` (declared by ops, or by the runtime with SLINGSHOT_DELIVERY_LIMIT),
and a prefetch of 1 so that only the message in hand is counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import Amqp, RunningService, Stack
from slingshot_runtime.cli import main
from slingshot_runtime.retry import inbound_queue

HANDLER = """\
import os


def process(request, read_file, write_file, connection):
    if request == 7:
        os._exit(3)  # as a segfault or the OOM killer would: no exception, no cleanup
    yield (request, True)
"""


@pytest.mark.parametrize("declared_by", ["ops", "runtime"])
def test_a_message_that_kills_the_worker_ends_in_the_dlq_and_only_it(stack: Stack, amqp: Amqp, tmp_path: Path, declared_by: str) -> None:
    service = stack.add_service()
    dlq = service.inbound + ".dlq"
    limit = 2
    settings = {"prefetch": "1", "exit_when_idle": "1"}
    if declared_by == "ops":
        amqp.declare(dlq)
        amqp.declare(service.inbound, {"x-queue-type": "quorum", "x-delivery-limit": limit,
                                       "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})  # fmt: skip
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    if declared_by == "runtime":
        settings["delivery_limit"] = str(limit)
        first = stack.spawn_worker(service, handler, **settings)  # declares the queues, finds nothing, exits
        assert first.wait(60) == 0, first.communicate()[1]
    for request in (1, 7, 2, 3):
        amqp.send(service.inbound, request)
    crashes = 0
    # Restart the worker as Kubernetes would, until one drains the queue and exits idle.
    for _ in range(limit + 3):
        worker = stack.spawn_worker(service, handler, **settings)
        _, stderr = worker.communicate(timeout=120)
        if worker.returncode == 0:
            break
        assert worker.returncode == 3, stderr
        crashes += 1
    else:
        raise AssertionError(f"the worker still crashed after {crashes} restarts")
    assert crashes == limit + 1  # delivered limit + 1 times, then dead-lettered by the broker
    outputs = sorted(int(body) for body, _ in amqp.get_all(service.out_queues[0], 3))
    assert outputs == [1, 2, 3]
    assert amqp.empty(service.out_queues[0], wait=0.5)

    # The slingshot tools handle it like any dead letter: shown with the broker's reason,
    # replayed once the handler is fixed.
    def dlq_cli(*args: str) -> str:
        result = CliRunner().invoke(main, ["dlq", args[0], service.name, *args[1:], "--config-host", stack.config.url])
        assert result.exit_code == 0, result.output
        return result.output

    # No message id, error type or attempt count: no worker lived to write them.
    assert [line.split() for line in dlq_cli("list").splitlines()] == [["1", "-", "7", "?", "attempts=?", "first-failure=?"]]
    assert "delivery_limit" in dlq_cli("show", "1")
    dlq_cli("replay", "--all")
    handler.write_text(HANDLER.replace("request == 7", "request == -1"))
    fixed = stack.spawn_worker(service, handler, prefetch="1", exit_when_idle="1")
    _, stderr = fixed.communicate(timeout=120)
    assert fixed.returncode == 0, stderr
    assert amqp.get(service.out_queues[0])[0] == b"7"
    assert amqp.empty(dlq, wait=0.5)


def test_a_delivery_limit_that_cannot_apply_is_a_warning(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], caplog: pytest.LogCaptureFixture
) -> None:
    """An inbound queue ops declared without the limit stays as it is; the worker says the guard is
    off, and that a prefetch above 1 would count innocent messages too."""
    service = stack.add_service()
    amqp.declare(service.inbound)
    with caplog.at_level(logging.WARNING):
        run_service(service, lambda request, r, w, c: [(request, True)], delivery_limit=3)
    expected = inbound_queue(service.inbound, 3).arguments
    assert f"queue {service.inbound} exists with other arguments; using it as it is (not applied: {expected})" in caplog.text
    assert "SLINGSHOT_PREFETCH=1 and SLINGSHOT_CONCURRENCY=1 count only the message in hand" in caplog.text
    amqp.send(service.inbound, 5)
    assert amqp.get(service.out_queues[0])[0] == b"5"
