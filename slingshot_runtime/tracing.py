"""Trace context across services: W3C ``traceparent`` in, a child ``traceparent`` out.

With the ``opentelemetry`` extra installed, each message runs in a consumer span whose
parent is the inbound ``traceparent``, and outputs carry that span's context. Without
it, ``traceparent``/``tracestate`` are copied from inbound to outbound unchanged, so a
trace is not broken by a worker that does not record spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind
except ImportError:  # the optional extra is not installed
    trace = None  # type: ignore[assignment]

TRACE_HEADERS = ("traceparent", "tracestate")


def trace_carrier(headers: Mapping[str, Any]) -> dict[str, str]:
    """The inbound trace headers, copied to the outputs when no spans are recorded."""
    out: dict[str, str] = {}
    for name in TRACE_HEADERS:
        value = headers.get(name)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str):
            out[name] = value
    return out


def recording() -> bool:
    """Whether an SDK tracer provider is set. Asked once at start: without one, the API's
    no-op spans would only cost time, and the inbound context is copied through instead."""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextlib.contextmanager
def message_span(service: str, queue: str, headers: Mapping[str, Any], request: str) -> Iterator[dict[str, str]]:
    """Runs the body inside the message's consumer span; yields the trace headers its outputs carry."""
    carrier = trace_carrier(headers)
    if trace is None:
        yield carrier
        return
    tracer = trace.get_tracer("slingshot_runtime")
    context = propagate.extract(carrier)
    attributes = {"messaging.system": "rabbitmq", "messaging.destination.name": queue, "messaging.message.id": request,
                  "slingshot.service": service}
    with tracer.start_as_current_span(f"{queue} process", context=context, kind=SpanKind.CONSUMER, attributes=attributes):
        outgoing: dict[str, str] = {}
        propagate.inject(outgoing)
        yield outgoing or carrier
