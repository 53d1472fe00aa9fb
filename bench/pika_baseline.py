"""The raw pika baseline of bench/throughput.py, in a process of its own that imports only pika.

slingshot patches pika when it is imported (coalesced frame writes, see
slingshot_runtime/broker.py); a baseline in the benchmark's own process would run on the
patched pika and measure slingshot's fix as if it were pika's. Run by throughput.py, one
round per process:

    python bench/pika_baseline.py --inbound Q --output Q2 --count N --prefetch P --messages same|minimal

``--messages same`` publishes what a slingshot worker publishes for a no-op handler (the
protocol's properties and headers, ``mandatory``); ``minimal`` only ``delivery_mode=2``.
Prints one JSON object: the marks (wall clock, this process's CPU seconds, RabbitMQ's CPU
seconds) at the first delivery and at the last confirm. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import itertools
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection
from pika.spec import Basic, BasicProperties

PARAMS = pika.ConnectionParameters("127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"))
MINIMAL = BasicProperties(delivery_mode=2)


@functools.cache
def _broker_stat() -> Path | None:
    """/proc/PID/stat of RabbitMQ's beam.smp, when it runs on this machine."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp":
                return Path(f"/proc/{pid}/stat")
    return None


def broker_cpu() -> float | None:
    """CPU seconds RabbitMQ has used so far (all its work, including other clients')."""
    if (stat := _broker_stat()) is None:
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Mark:
    """A moment (``time.perf_counter()``: CLOCK_MONOTONIC, the same in every process) with the
    CPU seconds this process and the broker had used by then; ``end.since(start)`` is the
    interval between two, in the same fields."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    broker: float | None = field(default_factory=broker_cpu)

    def since(self, start: Mark) -> Mark:
        broker = None if self.broker is None or start.broker is None else self.broker - start.broker
        return Mark(self.wall - start.wall, self.cpu - start.cpu, broker)


def slingshot_properties(service: str) -> Any:
    """Properties as a slingshot worker sets them on an output (docs/protocol.md): built per message."""
    prefix = uuid.uuid4().hex[:16]
    ids = itertools.count(1)

    def properties(body: bytes) -> BasicProperties:
        return BasicProperties(
            delivery_mode=2, content_type="text/plain", message_id=f"{prefix}-{next(ids)}", timestamp=int(time.time()),
            headers={"x-slingshot-source": service, "x-slingshot-request": body.decode(), "x-slingshot-case": "true"},
        )

    return properties


class PikaConsumer:
    """SelectConnection, consume → publish a persistent copy → ack on its confirm."""

    def __init__(self, inbound: str, output: str, prefetch: int, expected: int, same_messages: bool) -> None:
        self.inbound, self.output, self.prefetch, self.expected = inbound, output, prefetch, expected
        self.properties = slingshot_properties(inbound.removesuffix("-in")) if same_messages else lambda body: MINIMAL
        self.mandatory = same_messages
        self.first: Mark | None = None
        self.last: Mark | None = None
        self.acked = self.nacked = self.published = 0
        self._pending: collections.deque[tuple[int, int]] = collections.deque()  # (publish seq, inbound tag)
        self._connection: SelectConnection | None = None
        self._channel: Any = None

    def run(self) -> None:
        self._connection = SelectConnection(
            PARAMS,
            on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda c, e: c.ioloop.stop(),
            on_close_callback=lambda c, e: c.ioloop.stop(),
        )
        self._connection.ioloop.start()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        consume = functools.partial(channel.basic_consume, self.inbound, self._on_message)
        qos = functools.partial(channel.basic_qos, prefetch_count=self.prefetch, callback=lambda _: consume())
        channel.confirm_delivery(self._on_confirm, callback=lambda _: qos())

    def _on_message(self, channel: Any, method: Basic.Deliver, properties: BasicProperties, body: bytes) -> None:
        if self.first is None:
            self.first = Mark()
        channel.basic_publish("", self.output, body, self.properties(body), mandatory=self.mandatory)
        self.published += 1
        self._pending.append((self.published, method.delivery_tag))

    def _on_confirm(self, frame: Any) -> None:
        method, last, settled = frame.method, None, 0
        while self._pending and self._pending[0][0] <= method.delivery_tag:  # confirms arrive in order
            last = self._pending.popleft()[1]
            settled += 1
        if last is None:
            return
        if isinstance(method, Basic.Ack):
            self._channel.basic_ack(last, multiple=True)
            self.acked += settled
        else:
            self._channel.basic_nack(last, multiple=True, requeue=False)
            self.nacked += settled
        if self.acked + self.nacked >= self.expected:
            self.last = Mark()
            assert self._connection is not None
            self._connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--inbound", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--messages", choices=("same", "minimal"), default="same")
    args = parser.parse_args(argv)
    consumer = PikaConsumer(args.inbound, args.output, args.prefetch, args.count, args.messages == "same")
    consumer.run()
    if consumer.first is None or consumer.last is None:
        print(f"pika_baseline: acked {consumer.acked}, nacked {consumer.nacked} of {args.count}", file=sys.stderr)
        return 1
    json.dump({"first": asdict(consumer.first), "last": asdict(consumer.last), "acked": consumer.acked, "nacked": consumer.nacked},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
