"""Dead letters for operators: list, show, replay and purge a service's ``{inbound}.dlq``.

RabbitMQ cannot peek: reading a message means taking it. So every operation here takes
the dead letters with ``basic.get`` *without* acking them and then settles each one: it
acks what it replayed (only after the broker confirmed the replayed copy) or purged, and
returns the rest with ``basic.nack(requeue=True)`` one by one, oldest first. A classic
queue (what the runtime declares) puts a returned message back at its old position, so the
DLQ keeps its order and the index ``list`` shows stays valid until the DLQ changes. A
quorum queue (RabbitMQ 3.10, measured) appends returned messages in the order returned,
behind any that arrived while they were held. A crash at any point leaves each dead
letter in the DLQ, in the inbound queue or (at worst, after a crash between the confirm and
the ack) in both: never in neither. The protocol is in docs/failure-handling.md.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import decimal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from .broker import connect_blocking, describe_error
from .errors import BrokerError, ExitCode, SlingshotError
from .retry import (
    BROKER_HEADERS,
    HEADER_ATTEMPT,
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILURE,
    HEADER_QUEUE,
    HEADER_SERVICE,
    HEADER_TRACEBACK,
    dead_letter_queue,
)

NOT_FOUND = 404
#: Counts how often a message was replayed, so an operator can spot a replay loop.
HEADER_REPLAYS = "x-slingshot-replays"
#: The failure bookkeeping a replay removes: the message starts over at attempt 1.
REPLAY_REMOVED = (
    HEADER_ATTEMPT,
    HEADER_ATTEMPTS,
    HEADER_FIRST_FAILURE,
    HEADER_ERROR_TYPE,
    HEADER_ERROR,
    HEADER_TRACEBACK,
    HEADER_SERVICE,
    HEADER_QUEUE,
)


class OperatorError(SlingshotError):
    """The operator's input names nothing usable (an unknown index or message id, a missing option)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read from the DLQ; ``index`` is its 1-based position then."""

    index: int
    body: bytes
    properties: BasicProperties
    tag: int

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    @property
    def message_id(self) -> str | None:
        value = self.properties.message_id
        return str(value) if value else None

    def _text(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    @property
    def error_type(self) -> str | None:
        return self._text(HEADER_ERROR_TYPE)

    @property
    def error(self) -> str | None:
        return self._text(HEADER_ERROR)

    @property
    def traceback(self) -> str | None:
        return self._text(HEADER_TRACEBACK)

    @property
    def first_failure(self) -> str | None:
        return self._text(HEADER_FIRST_FAILURE)

    @property
    def attempts(self) -> int | None:
        value = self.headers.get(HEADER_ATTEMPTS)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def summary(self) -> dict[str, Any]:
        """What ``list --json`` prints: JSON-safe, one object per dead letter."""
        return {
            "index": self.index,
            "message_id": self.message_id,
            "body": _body_text(self.body),
            "body_base64": base64.b64encode(self.body).decode("ascii"),
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "first_failure": self.first_failure,
            "service": self._text(HEADER_SERVICE),
        }

    def details(self) -> dict[str, Any]:
        """What ``show --json`` prints: the summary plus every property and header."""
        properties = {
            name: jsonable(getattr(self.properties, name))
            for name in ("content_type", "delivery_mode", "message_id", "correlation_id", "timestamp", "type", "app_id")
            if getattr(self.properties, name) is not None
        }
        return {**self.summary(), "traceback": self.traceback, "properties": properties, "headers": jsonable(self.headers)}


def replay_properties(properties: BasicProperties) -> BasicProperties:
    """The replayed copy's properties: attempt count and error headers removed, the rest kept."""
    headers = {
        key: value
        for key, value in (properties.headers or {}).items()
        if key not in REPLAY_REMOVED and not key.startswith(BROKER_HEADERS)
    }
    replays = headers.get(HEADER_REPLAYS)
    headers[HEADER_REPLAYS] = (replays if isinstance(replays, int) and not isinstance(replays, bool) and replays >= 0 else 0) + 1
    replayed = copy.copy(properties)
    replayed.headers = headers
    replayed.delivery_mode = 2
    return replayed


class DeadLetterQueue:
    """A blocking session on one service's DLQ; use it as a context manager."""

    def __init__(self, params: pika.ConnectionParameters, inbound: str) -> None:
        self.params = params
        self.inbound = inbound
        self.name = dead_letter_queue(inbound)
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._unsettled: dict[int, DeadLetter] = {}

    def __enter__(self) -> DeadLetterQueue:
        self._connection = connect_blocking(self.params)
        try:
            self._channel = self._connection.channel()
        except pika.exceptions.AMQPError as exc:
            self._connection.close()
            raise BrokerError(f"cannot open a channel at {self.params.host}:{self.params.port}: {describe_error(exc)}") from exc
        try:
            self.count()  # fails clearly when the DLQ does not exist
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()  # returns anything still held, should an error have skipped that

    @property
    def channel(self) -> BlockingChannel:
        if self._channel is None:
            raise BrokerError("the dead-letter session is not open")
        return self._channel

    def count(self) -> int:
        """Dead letters waiting now."""
        try:
            return int(self.channel.queue_declare(self.name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == NOT_FOUND:
                raise BrokerError(f"dead-letter queue {self.name!r} does not exist (no worker of this service has started yet?)") from exc
            raise BrokerError(f"cannot inspect {self.name!r}: {describe_error(exc)}") from exc
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot inspect {self.name!r}: {describe_error(exc)}") from exc

    # -- operations --------------------------------------------------------------------------

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        """The first ``limit`` dead letters (all without a limit), left in the DLQ in order."""
        with self._held(limit) as letters:
            return letters

    def find(self, selectors: Sequence[str]) -> list[DeadLetter]:
        """The dead letters named by index or message id, left in the DLQ."""
        with self._held(None) as letters:
            return select(letters, selectors, self.name)

    def replay(self, selectors: Sequence[str] | None, limit: int | None = None) -> list[DeadLetter]:
        """Move the named dead letters (all of them for ``None``) to the inbound queue, attempts reset.

        Each copy is published persistent, ``mandatory`` and confirmed before its DLQ copy is
        acked; the first refusal stops the replay with the rest left in the DLQ.
        """
        channel = self.channel
        channel.confirm_delivery()
        with self._held(None) as letters:
            chosen = select(letters, selectors, self.name) if selectors is not None else letters
            chosen = chosen[:limit] if limit is not None else chosen
            done: list[DeadLetter] = []
            for letter in chosen:
                try:
                    channel.basic_publish("", self.inbound, letter.body, replay_properties(letter.properties), mandatory=True)
                except pika.exceptions.UnroutableError as exc:
                    raise BrokerError(
                        f"replay stopped after {len(done)}: the inbound queue {self.inbound!r} does not exist"
                    ) from exc
                except pika.exceptions.NackError as exc:
                    raise BrokerError(f"replay stopped after {len(done)}: the broker refused the copy of #{letter.index}") from exc
                except pika.exceptions.AMQPError as exc:
                    raise BrokerError(f"replay stopped after {len(done)}: {describe_error(exc)}") from exc
                self._remove(letter)
                done.append(letter)
            return done

    def purge(
        self,
        selectors: Sequence[str] | None,
        limit: int | None = None,
        confirm: Callable[[Sequence[DeadLetter]], bool] = lambda letters: True,
    ) -> int:
        """Delete the named dead letters (the first ``limit``, or all, for ``None``); returns how many.

        ``confirm`` sees exactly the dead letters about to go while they are held, so what the
        operator agreed to is what is deleted even if more arrive meanwhile.
        """
        with self._held(None if selectors is not None else limit) as letters:
            chosen = select(letters, selectors, self.name) if selectors is not None else letters
            chosen = chosen[:limit] if limit is not None else chosen
            if not chosen or not confirm(chosen):
                return 0
            for letter in chosen:
                self._remove(letter)
            return len(chosen)

    # -- taking and returning ------------------------------------------------------------------

    def _take(self, limit: int | None) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, unacked. Bounded by the count at the start, so dead
        letters arriving meanwhile (a replay failing again) cannot make it loop."""
        waiting = self.count()
        wanted = waiting if limit is None else min(limit, waiting)
        letters: list[DeadLetter] = []
        try:
            while len(letters) < wanted:
                method, properties, body = self.channel.basic_get(self.name, auto_ack=False)
                if method is None:
                    break
                letters.append(DeadLetter(len(letters) + 1, body, properties, method.delivery_tag))
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot read {self.name!r}: {describe_error(exc)}") from exc
        return letters

    @contextlib.contextmanager
    def _held(self, limit: int | None) -> Iterator[list[DeadLetter]]:
        """Take dead letters; whatever the block does not settle goes back, oldest first."""
        letters = self._take(limit)
        self._unsettled = {letter.tag: letter for letter in letters}
        try:
            yield letters
        finally:
            unsettled, self._unsettled = self._unsettled, {}
            channel = self._channel
            if channel is not None and channel.is_open:
                try:
                    for tag in sorted(unsettled):
                        channel.basic_nack(tag, requeue=True)
                except pika.exceptions.AMQPError:
                    pass  # the channel is gone: the broker returns unacked messages itself

    def _remove(self, letter: DeadLetter) -> None:
        """Ack a held dead letter: it leaves the DLQ for good."""
        try:
            self.channel.basic_ack(letter.tag)
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot remove dead letter #{letter.index}: {describe_error(exc)}") from exc
        self._unsettled.pop(letter.tag, None)


def select(letters: Sequence[DeadLetter], selectors: Sequence[str], queue: str) -> list[DeadLetter]:
    """The dead letters named by 1-based index (a number) or message id, in the order named;
    any name that matches nothing fails the whole selection before anything is changed."""
    by_id: dict[str, DeadLetter] = {}
    for letter in letters:
        if letter.message_id is not None:
            by_id.setdefault(letter.message_id, letter)
    chosen: dict[int, DeadLetter] = {}
    for selector in selectors:
        text = selector.strip()
        if text.isdigit():
            index = int(text)
            if not 1 <= index <= len(letters):
                held = f"it holds {len(letters)}" if letters else "it is empty"
                raise OperatorError(f"no dead letter #{index} in {queue!r} ({held}; indexes start at 1)")
            letter = letters[index - 1]
        elif text in by_id:
            letter = by_id[text]
        else:
            raise OperatorError(f"no dead letter with index or message id {selector!r} in {queue!r}")
        chosen.setdefault(letter.tag, letter)
    return list(chosen.values())


def jsonable(value: Any) -> Any:
    """Header values as JSON: bytes become text (or base64), timestamps ISO-8601, decimals strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        text = _body_text(value)
        return text if text is not None else {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _body_text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None

