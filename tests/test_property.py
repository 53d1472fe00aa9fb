"""Property: arbitrary bodies and headers never kill the worker, and every message is either
processed or dead-lettered — none lost, none doubled — while one worker keeps consuming."""

from __future__ import annotations

import collections
import decimal
import struct
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Amqp, RunningService, Stack
from slingshot_runtime.errors import BadRequestError
from slingshot_runtime.routing import decode_id

U64 = 2**64
INT64 = 2**63


class Timestamp(int):
    """An AMQP timestamp of any u64 seconds, past what Python's datetime can hold."""


def _encode_like_other_clients(original: Callable[[list[bytes], Any], int]) -> Callable[[list[bytes], Any], int]:
    """pika cannot send a double or a timestamp past year 9999; Java and Go clients can. The
    test's sender encodes them as those clients would, so the worker meets them on the wire."""

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        if isinstance(value, Timestamp):
            pieces.append(struct.pack(">cQ", b"T", int(value)))
            return 9
        return original(pieces, value)

    return encode_value


# RabbitMQ routes on CC/BCC headers itself (sender-selected distribution): not the worker's business.
keys = st.text(min_size=1, max_size=20).filter(lambda k: len(k.encode()) <= 255 and k not in ("CC", "BCC"))
scalars = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.booleans(),
    st.none(),
    st.integers(-INT64, INT64 - 1),
    # RabbitMQ refuses NaN and infinities (it closes the publisher's connection): they never reach a worker.
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(Timestamp, st.integers(0, U64 - 1)),
    st.builds(lambda raw, places: decimal.Decimal(raw).scaleb(-places), st.integers(-(2**31), 2**31 - 1), st.integers(0, 9)),
)
values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3), max_leaves=8
)
odd_headers = st.fixed_dictionaries(
    {},
    optional={
        "x-slingshot-attempt": st.one_of(
            st.sampled_from([0, -1, 1, 2, INT64 - 1, -INT64, "2", "", True, None, 2.5]), st.integers(-INT64, INT64 - 1), st.text(max_size=5)
        ),
        "x-death": st.one_of(st.text(max_size=5), st.integers(0, 10), st.lists(st.dictionaries(keys, scalars, max_size=2), max_size=2)),
        "x-slingshot-first-failure": values,
        "traceparent": values,
    },
)
headers = st.one_of(st.none(), st.builds(lambda a, b: {**a, **b}, st.dictionaries(keys, values, max_size=5), odd_headers))
bodies = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(str.encode),
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    st.integers(0, U64 - 1).map(lambda n: str(n).encode()),
    st.integers(U64 - 3, U64 + 3).map(lambda n: str(n).encode()),
    st.integers(0, 10**6).map(lambda n: f" {n}\n".encode()),
)
messages = st.lists(st.tuples(bodies, headers), min_size=1, max_size=4)


def fails(request: int) -> bool:
    return request % 3 == 0


def outcome(body: bytes) -> tuple[str, bytes]:
    """Where a body must end: ``("out", output body)`` or ``("dead", body)``."""
    try:
        request = decode_id(body)
    except BadRequestError:
        return "dead", body
    return ("dead", body) if fails(request) else ("out", str(request).encode())


def drain(amqp: Amqp, queue: str) -> list[tuple[bytes, pika.BasicProperties]]:
    found = []
    while True:
        method, properties, body = amqp.channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        found.append((body, properties))


def test_arbitrary_messages_are_processed_or_dead_lettered(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pika.data, "encode_value", _encode_like_other_clients(pika.data.encode_value))
    service = stack.add_service()
    out, dlq = service.out_queues[0], service.inbound + ".dlq"

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        if fails(request):
            raise ValueError(f"{request} is a multiple of 3")
        yield (request, True)

    running = run_service(service, process, max_attempts=2, retry_delay=0.05)
    broker = running.service.broker
    assert broker is not None
    generation = broker.generation
    totals = collections.Counter[str]()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(batch=messages)
    def check(batch: list[tuple[bytes, dict[str, Any] | None]]) -> None:
        expected = {"out": collections.Counter[bytes](), "dead": collections.Counter[bytes]()}
        for body, message_headers in batch:
            amqp.send(service.inbound, body, headers=message_headers)
            kind, result = outcome(body)
            expected[kind][result] += 1
        seen = {"out": collections.Counter[bytes](), "dead": collections.Counter[bytes]()}
        deadline = time.monotonic() + 30
        while seen["out"].total() + seen["dead"].total() < len(batch) and time.monotonic() < deadline:
            seen["out"].update(body for body, _ in drain(amqp, out))
            for body, properties in drain(amqp, dlq):
                seen["dead"][body] += 1
                assert properties.headers["x-slingshot-error-type"] in ("BadRequestError", "HandlerError")
                assert properties.headers["x-slingshot-attempts"] >= 1
            amqp.connection.sleep(0.02)
        assert seen == expected
        assert running.thread.is_alive() and broker.consuming
        totals.update(sent=len(batch), out=seen["out"].total(), dead=seen["dead"].total())

    check()
    # Nothing more arrives later (no duplicates), nothing is stuck in a retry queue.
    assert amqp.empty(out, wait=0.5) and amqp.empty(dlq, wait=0)
    assert amqp.count(service.inbound) == 0
    assert totals["out"] + totals["dead"] == totals["sent"] > 0
    # Still the first connection (no odd header broke it) and still consuming.
    assert broker.generation == generation and broker.failed is None and broker.consuming
    amqp.send(service.inbound, 7)
    assert amqp.get(out)[0] == b"7"
    print(f"property: sent {totals['sent']}, processed {totals['out']}, dead-lettered {totals['dead']}")


def test_odd_header_values_do_not_wedge_the_worker(
    stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timestamps past the year 9999 made pika raise inside the worker's I/O loop: the connection
    dropped and the same message came back forever (fixed in broker.py, ``_tolerate_odd_header_values``)."""
    monkeypatch.setattr(pika.data, "encode_value", _encode_like_other_clients(pika.data.encode_value))
    service = stack.add_service()
    running = run_service(service, lambda request, r, w, c: [(request, True)])
    broker = running.service.broker
    assert broker is not None
    generation = broker.generation
    odd = [{"t": Timestamp(U64 - 1)}, {"t": Timestamp(INT64)}, {"a": [Timestamp(10**12)]}, {"n": {"t": Timestamp(253402300800)}}]
    for number, message_headers in enumerate(odd, start=1):
        amqp.send(service.inbound, number, headers=message_headers)
    assert sorted(body for body, _ in amqp.get_all(service.out_queues[0], len(odd), timeout=20)) == [b"1", b"2", b"3", b"4"]
    assert broker.generation == generation
