"""Health probes, Prometheus metrics, JSON logs, concurrency and the exit conditions of ScaledJob workers."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from conftest import Amqp, RunningService, Stack, put_object
from slingshot_runtime import devstack
from slingshot_runtime.errors import ExitCode
from slingshot_runtime.logs import JsonFormatter


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


def test_health_readiness_and_metrics(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    put_object(stack, service.buckets["in"], 1, b"x" * 1000)
    entered, release = threading.Event(), threading.Event()

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        write_file("out", request).write(read_file("in", 1).read())
        if request == 2:
            entered.set()
            release.wait(30)
        if request == 3:
            raise RuntimeError("bad one")
        yield (request, True)

    port = devstack.free_port()
    running = run_service(service, process, health_port=port, max_attempts=1)
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    ready = requests.get(base + "/readyz", timeout=5)
    assert ready.status_code == 200 and "consuming" in ready.text
    amqp.send(service.inbound, 1)
    amqp.send(service.inbound, 3)
    amqp.get(service.out_queues[0])
    amqp.get(service.inbound + ".dlq")
    amqp.send(service.inbound, 2)
    assert entered.wait(20)
    metrics = requests.get(base + "/metrics", timeout=5).text
    assert _metric(metrics, "slingshot_in_flight") == 1
    release.set()
    amqp.get(service.out_queues[0])
    time.sleep(0.3)
    metrics = requests.get(base + "/metrics", timeout=5).text
    assert _metric(metrics, 'slingshot_messages_total{outcome="ok"}') == 2
    assert _metric(metrics, 'slingshot_messages_total{outcome="dead_lettered"}') == 1
    assert _metric(metrics, "slingshot_dead_letters_total") == 1
    assert _metric(metrics, 'slingshot_outputs_total{case="true"}') == 2
    assert _metric(metrics, "slingshot_bytes_read_total") == 3000
    assert _metric(metrics, "slingshot_bytes_uploaded_total") == 2000
    assert _metric(metrics, "slingshot_processing_seconds_count") == 3
    assert _metric(metrics, "slingshot_publish_confirm_seconds_count") >= 2
    assert _metric(metrics, "slingshot_last_success_timestamp_seconds") > time.time() - 60
    assert requests.get(base + "/nope", timeout=5).status_code == 404
    # Draining: not ready any more, while a message is still in hand.
    entered.clear()
    release.clear()
    amqp.send(service.inbound, 2)
    assert entered.wait(20)
    running.service.handle_signal(15, None)
    assert requests.get(base + "/readyz", timeout=5).status_code == 503
    release.set()
    running.thread.join(30)
    assert running.exit_code == ExitCode.OK


def test_liveness_fails_without_a_consumer(stack: Stack, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    running = run_service(service, lambda request, r, w, c: [(request, True)], liveness_grace=0.2)
    assert running.service.liveness()[0]
    running.service._on_consuming(False)  # what the broker thread reports when the consumer is gone
    time.sleep(0.3)
    ok, reason = running.service.liveness()
    assert not ok and "no consumer" in reason


def test_health_port_in_use_is_a_clear_error(stack: Stack, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    port = devstack.free_port()
    run_service(service, lambda request, r, w, c: [(request, True)], health_port=port)
    with pytest.raises(AssertionError, match="exit code 3"):
        run_service(service, lambda request, r, w, c: [(request, True)], health_port=port)


def test_json_log_lines_carry_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("message %s failed", "b'5'", extra={"request": "b'5'", "attempt": 2, "outcome": "retried", "duration": 0.25})
        try:
            raise ValueError("x")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["service"] == "svc" and first["level"] == "warning" and first["attempt"] == 2
    assert first["message"] == "message b'5' failed" and first["outcome"] == "retried" and first["duration"] == 0.25
    assert "ValueError: x" in second["traceback"]


def test_concurrency_runs_messages_at_once(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    active, peak = [0], [0]
    lock = threading.Lock()

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        write_file("out", request).write(b"%d" % request)
        connection.exec_driver_sql("SELECT pg_sleep(0.2)")
        with lock:
            active[0] -= 1
        yield (request, True)

    run_service(service, process, concurrency=4, prefetch=8)
    for request in range(16):
        amqp.send(service.inbound, request)
    bodies = sorted(int(body) for body, _ in amqp.get_all(service.out_queues[0], 16))
    assert bodies == list(range(16))
    assert peak[0] == 4  # the speed-up itself is measured in bench/, not asserted here


def test_max_messages_and_exit_when_idle(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    running = run_service(service, lambda request, r, w, c: [(request, True)], max_messages=3, prefetch=1)
    for request in range(5):
        amqp.send(service.inbound, request)
    running.thread.join(30)
    assert running.exit_code == ExitCode.OK
    assert len(amqp.get_all(service.out_queues[0], 3)) == 3
    assert amqp.count(service.inbound) == 2  # the rest stay for the next worker

    idle = run_service(service, lambda request, r, w, c: [(request, True)], exit_when_idle=1.0)
    idle.thread.join(30)
    assert idle.exit_code == ExitCode.OK
    assert len(amqp.get_all(service.out_queues[0], 2)) == 2


def test_trace_context_is_carried_with_a_child_span(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    service = stack.add_service()
    run_service(service, lambda request, r, w, c: [(request, True)])
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    amqp.send(service.inbound, 5, headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "k=v"})
    _, props = amqp.get(service.out_queues[0])
    _version, out_trace, out_span, _flags = props.headers["traceparent"].split("-")
    assert out_trace == trace_id and out_span != parent_id
    assert props.headers["tracestate"] == "k=v"
    (span,) = [s for s in exporter.get_finished_spans() if s.attributes.get("slingshot.service") == service.name]
    assert format(span.context.span_id, "016x") == out_span
    assert format(span.parent.span_id, "016x") == parent_id
