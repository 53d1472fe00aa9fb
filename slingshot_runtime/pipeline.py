"""One message, in order: decode → begin transaction → process → close files → upload →
commit → publish with confirms → ack. Nothing is published before its files and rows
are durable, and nothing the user's function does can break the loop that calls it."""

from __future__ import annotations

import enum
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pika.spec import BasicProperties

from . import tracing
from .broker import Broker, Delivery, Outgoing
from .database import Database
from .errors import HandlerError, SlingshotError
from .metrics import Metrics
from .retry import HEADER_ATTEMPT, RetryPolicy, attempt_of, dead_letter_queue
from .routing import Case, CaseKey, decode_id, encode_id, format_case, iter_outputs, route
from .storage import FileSession, ObjectStore
from .tracing import message_span, trace_carrier

log = logging.getLogger(__name__)

HEADER_SOURCE = "x-slingshot-source"
HEADER_REQUEST = "x-slingshot-request"
HEADER_CASE = "x-slingshot-case"

ProcessFn = Callable[..., Iterable[Any] | None]


class Outcome(enum.Enum):
    OK = "ok"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


Routed = tuple[int, Case, tuple[str, ...]]


class Executor:
    """The transactional heart of a message: process → close files → upload → commit.

    The worker and the offline test harness both run this, so a handler behaves the
    same under test as in production.
    """

    def __init__(
        self,
        process: ProcessFn,
        routes: Mapping[CaseKey, tuple[str, ...]],
        store: ObjectStore,
        database: Database,
        staging_dir: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.process = process
        self.routes = routes
        self.store = store
        self.database = database
        self.staging_dir = staging_dir
        self.metrics = metrics

    def execute(self, request: int) -> list[Routed]:
        """Each output with its queues, once its files are uploaded and its rows committed.

        Raises on any failure, leaving nothing behind: rolled back, staging removed.
        """
        files = FileSession(self.store, self.staging_dir)
        transaction = None
        try:
            transaction = self.database.begin()
            try:
                result = self.process(request, files.read_file, files.write_file, transaction.connection)
                routed = route(iter_outputs(result), self.routes)
            except SlingshotError:
                raise
            except BaseException as exc:
                raise HandlerError(f"process({request}) raised {type(exc).__name__}: {exc}") from exc
            files.close_all()
            uploaded = files.upload_all()
            transaction.commit()
            transaction = None
        finally:
            if transaction is not None:
                transaction.rollback()
            files.discard()
        if self.metrics is not None and uploaded:
            self.metrics.bytes_uploaded.inc(uploaded)
        return routed


class Pipeline:
    """Turns a delivery into its outgoing messages and hands them to the broker."""

    def __init__(
        self,
        service: str,
        executor: Executor,
        broker: Broker,
        policy: RetryPolicy,
        metrics: Metrics,
        body_format: str = "decimal",
    ) -> None:
        self.service = service
        self.executor = executor
        self.broker = broker
        self.policy = policy
        self.body_format = body_format
        self.metrics = metrics
        self._spans = tracing.recording()

    def handle(self, delivery: Delivery) -> Outcome:
        """Process one delivery and hand the result to the broker; never raises."""
        started = time.monotonic()
        outcome = self._handle(delivery, started)
        self.metrics.finished(outcome.value, time.monotonic() - started)
        return outcome

    def _handle(self, delivery: Delivery, started: float) -> Outcome:
        try:
            outgoing = self.run(delivery)
        except BaseException as exc:  # the user's function can never kill the loop
            error = exc if isinstance(exc, SlingshotError) else HandlerError(f"{type(exc).__name__}: {exc}")
            if error is not exc:
                error.__cause__ = exc
            replacement = self.policy.failure(delivery, error)
            outcome = Outcome.DEAD_LETTERED if replacement.queue == dead_letter_queue(self.policy.inbound) else Outcome.RETRIED
            request, attempt = _show_body(delivery.body), attempt_of(delivery)
            log.warning(
                "message %s failed on attempt %d (%s: %s); %s",
                request,
                attempt,
                type(error).__name__,
                error,
                "dead-lettered" if outcome is Outcome.DEAD_LETTERED else f"retrying via {replacement.queue}",
                exc_info=isinstance(error, HandlerError),
                extra={"request": request, "attempt": attempt, "outcome": outcome.value, "error_type": type(error).__name__,
                       "duration": round(time.monotonic() - started, 6)},
            )
            self.broker.complete(delivery, (replacement,), None)
            return outcome
        self.broker.complete(delivery, outgoing, self.policy.failure)
        if log.isEnabledFor(logging.DEBUG):
            request, duration = _show_body(delivery.body), round(time.monotonic() - started, 6)
            log.debug("message %s processed in %.3fs", request, duration,
                      extra={"request": request, "attempt": attempt_of(delivery), "outcome": Outcome.OK.value,
                             "outputs": len(outgoing), "duration": duration})
        return Outcome.OK

    def run(self, delivery: Delivery) -> list[Outgoing]:
        """Everything up to the publish; raises on any failure."""
        request = decode_id(delivery.body, self.body_format)
        if self._spans:
            with message_span(self.service, self.policy.inbound, delivery.headers, str(request)) as trace_headers:
                routed = self.executor.execute(request)
        else:
            trace_headers = trace_carrier(delivery.headers)
            routed = self.executor.execute(request)
        for _, case, _ in routed:
            self.metrics.output(format_case(case))
        return [
            Outgoing(queue, encode_id(output_id, self.body_format), self._properties(request, case, trace_headers))
            for output_id, case, queues in routed
            for queue in queues
        ]

    def _properties(self, request: int, case: Case, trace_headers: Mapping[str, str]) -> BasicProperties:
        headers: dict[str, Any] = {
            HEADER_SOURCE: self.service,
            HEADER_REQUEST: str(request),
            HEADER_CASE: format_case(case),
            **trace_headers,
        }
        return BasicProperties(
            delivery_mode=2,
            content_type="text/plain" if self.body_format == "decimal" else "application/octet-stream",
            message_id=next(_message_ids),
            timestamp=int(time.time()),
            headers=headers,
        )


def _unique_ids() -> Iterator[str]:
    """Unique message ids at the cost of a counter: a random per-process prefix (uuid4 per
    publish is a system call, a measurable share of the per-message cost)."""
    prefix = uuid.uuid4().hex[:16]
    return (f"{prefix}-{n}" for n in itertools.count(1))


_message_ids = _unique_ids()


def _show_body(body: bytes) -> str:
    text = repr(body[:40])
    return text + ("..." if len(body) > 40 else "")


__all__ = ["HEADER_ATTEMPT", "Executor", "Outcome", "Pipeline", "ProcessFn", "Routed"]
