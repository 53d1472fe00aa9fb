"""Where a failed message goes next: a delay queue for a later attempt, or the dead-letter queue.

Retries go through the broker (a queue per delay whose TTL dead-letters back to the
inbound queue), so a failing message never blocks the consumer with a sleep and never
spins in an immediate requeue loop.
"""

from __future__ import annotations

import datetime
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from pika.spec import BasicProperties

from .broker import Delivery, Outgoing, QueueSpec
from .errors import SlingshotError

HEADER_ATTEMPT = "x-slingshot-attempt"
HEADER_FIRST_FAILURE = "x-slingshot-first-failure"
HEADER_ERROR_TYPE = "x-slingshot-error-type"
HEADER_ERROR = "x-slingshot-error"
HEADER_TRACEBACK = "x-slingshot-traceback"
HEADER_ATTEMPTS = "x-slingshot-attempts"
HEADER_SERVICE = "x-slingshot-service"
HEADER_QUEUE = "x-slingshot-queue"

#: Headers RabbitMQ adds when dead-lettering through the delay queues.
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")
ERROR_LIMIT = 1000
TRACEBACK_LIMIT = 4000


def dead_letter_queue(inbound: str) -> str:
    return f"{inbound}.dlq"


def inbound_queue(inbound: str, delivery_limit: int | None) -> QueueSpec:
    """The inbound queue as the runtime declares it when absent: classic, or with a delivery
    limit a quorum queue whose broker moves a message redelivered past it to ``{in}.dlq``."""
    if delivery_limit is None:
        return QueueSpec(inbound)
    return QueueSpec(inbound, {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(inbound),
    })  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    service: str
    inbound: str
    max_attempts: int
    first_delay: float
    max_delay: float

    def delay(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt`` (1-based): doubling, capped."""
        return float(min(self.first_delay * 2 ** (attempt - 1), self.max_delay))

    def delay_queue(self, attempt: int) -> str:
        return f"{self.inbound}.retry.{round(self.delay(attempt) * 1000)}ms"

    def queues(self) -> list[QueueSpec]:
        """The delay queues of every attempt that can fail and be retried, and the DLQ."""
        specs: dict[str, QueueSpec] = {}
        for attempt in range(1, self.max_attempts):
            name = self.delay_queue(attempt)
            specs[name] = QueueSpec(
                name,
                {
                    "x-message-ttl": round(self.delay(attempt) * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.inbound,
                },
            )
        dlq = dead_letter_queue(self.inbound)
        specs[dlq] = QueueSpec(dlq)
        return list(specs.values())

    def failure(self, delivery: Delivery, error: BaseException | str) -> Outgoing:
        """The message replacing a failed delivery: same body, the attempt count and error in headers."""
        headers = _carried_headers(delivery)
        attempt = attempt_of(delivery)
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        headers.setdefault(HEADER_FIRST_FAILURE, now)
        permanent = isinstance(error, SlingshotError) and error.permanent
        if permanent or attempt >= self.max_attempts:
            headers.update(describe_error(error))
            headers[HEADER_ATTEMPTS] = attempt
            headers[HEADER_SERVICE] = self.service
            headers[HEADER_QUEUE] = self.inbound
            target = dead_letter_queue(self.inbound)
        else:
            headers[HEADER_ATTEMPT] = attempt + 1
            target = self.delay_queue(attempt)
        properties = BasicProperties(
            delivery_mode=2,
            content_type=delivery.properties.content_type,
            message_id=uuid.uuid4().hex,
            correlation_id=delivery.properties.correlation_id,
            headers=headers,
        )
        return Outgoing(target, delivery.body, properties)


def attempt_of(delivery: Delivery) -> int:
    value = delivery.headers.get(HEADER_ATTEMPT)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def describe_error(error: BaseException | str) -> dict[str, Any]:
    if isinstance(error, str):
        return {HEADER_ERROR_TYPE: "BrokerError", HEADER_ERROR: error[:ERROR_LIMIT]}
    trace = "".join(traceback.format_exception(error))
    return {
        HEADER_ERROR_TYPE: type(error).__name__,
        HEADER_ERROR: (str(error) or repr(error))[:ERROR_LIMIT],
        HEADER_TRACEBACK: trace[-TRACEBACK_LIMIT:],
    }


def _carried_headers(delivery: Delivery) -> dict[str, Any]:
    """The delivery's headers minus broker bookkeeping, provided pika can encode them again."""
    headers = {k: v for k, v in delivery.headers.items() if not k.startswith(BROKER_HEADERS)}
    try:
        BasicProperties(headers=headers).encode()
    except Exception:
        return {}
    return headers
