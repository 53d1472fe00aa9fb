"""Throughput of a no-op slingshot handler against a raw pika baseline, on the real local stack.

Both sides consume a pre-filled queue of persistent messages, publish one persistent copy per
message with publisher confirms pipelined, and ack inbound messages once their copy is confirmed.
A run is timed from its first delivery until the output queue holds all N copies.

    python bench/throughput.py --messages 20000 --prefetch 500 --rounds 3

Prints one JSON object on stdout (progress goes to stderr). Not a test.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Measure this checkout's runtime, not whichever copy is pip-installed; PYTHONPATH still wins
# (bench/common.py leaves this entry where it is).
sys.path.insert(1 + len([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), str(Path(__file__).resolve().parents[1]))

import pika
from common import (
    PARAMS,
    PERSISTENT,
    LocalStack,
    channel,
    emit,
    filled,
    local_stack,
    log,
    paired_arguments,
    parse_quietly,
    rate_summary,
    revision,
    rounds,
    run_service_marks,
    wait_marks,
)
from pika.adapters.select_connection import SelectConnection
from pika.spec import Basic, BasicProperties

import slingshot_runtime

TARGET_RATIO = 0.7


def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterator[tuple[int, bool]]:
    yield (request, True)


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
    """A moment with the CPU seconds this process (all threads) and the broker had used by then;
    ``end.since(start)`` is the interval between two, in the same fields."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    broker: float | None = field(default_factory=broker_cpu)

    def since(self, start: Mark) -> Mark:
        broker = None if self.broker is None or start.broker is None else self.broker - start.broker
        return Mark(self.wall - start.wall, self.cpu - start.cpu, broker)


class PikaConsumer:
    """The baseline: SelectConnection, consume → publish a persistent copy → ack on its confirm."""

    def __init__(self, inbound: str, output: str, prefetch: int, expected: int) -> None:
        self.inbound, self.output, self.prefetch, self.expected = inbound, output, prefetch, expected
        self.first: Mark | None = None
        self.acked = self.nacked = self.published = 0
        self.done = threading.Event()
        self._pending: collections.deque[tuple[int, int]] = collections.deque()  # (publish seq, inbound tag)
        self._connection: SelectConnection | None = None
        self._channel: Any = None
        self.thread = threading.Thread(target=self._run, name="baseline-io", daemon=True)

    def _run(self) -> None:
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
        channel.basic_publish("", self.output, body, PERSISTENT)
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
            self.done.set()

    def stop(self) -> None:
        if self._connection is not None and self.thread.is_alive():
            self._connection.ioloop.add_callback_threadsafe(self._connection.close)
        self.thread.join(10)


def run_baseline(stack: LocalStack, amqp: Any, count: int, prefetch: int, settle: float) -> Mark:
    inbound = f"bench-pika-{uuid.uuid4().hex[:8]}-in"
    output = inbound[:-2] + "out"
    with filled(amqp, inbound, output, count, settle):
        consumer = PikaConsumer(inbound, output, prefetch, count)
        consumer.thread.start()
        try:
            start, end = wait_marks(amqp, output, count, lambda: consumer.published, lambda: consumer.first, consumer.thread.is_alive, Mark)
            if not consumer.done.wait(30) or consumer.nacked:
                raise RuntimeError(f"baseline: acked {consumer.acked}, nacked {consumer.nacked} of {count}")
        finally:
            consumer.stop()
        return end.since(start)


def run_slingshot(stack: LocalStack, amqp: Any, count: int, prefetch: int, settle: float) -> Mark:
    start, end = run_service_marks(stack, amqp, process, count, "bench-noop", Mark, settle=settle, prefetch=prefetch)
    return end.since(start)


def machine(amqp: Any) -> dict[str, Any]:
    version = amqp.connection._impl.server_properties.get("version", b"?")
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pika": pika.__version__,
        "rabbitmq": version.decode() if isinstance(version, bytes) else str(version),
        "rabbitmq_cpu_visible": _broker_stat() is not None,  # found once here, not inside a timed run
    }


def summary(runs: list[Mark], count: int) -> dict[str, Any]:
    brokers = [r.broker for r in runs if r.broker is not None]
    return {
        **rate_summary([r.wall for r in runs], count),
        "client_cpu_us_per_msg": round(statistics.median(r.cpu for r in runs) / count * 1e6, 1),
        "broker_cpu_us_per_msg": round(statistics.median(brokers) / count * 1e6, 1) if brokers else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = paired_arguments(__doc__, messages=20_000, prefetch=500)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between filling a queue and consuming it")
    parser.add_argument("--only", choices=("baseline", "slingshot"), help="run one side only (for profiling)")
    args = parse_quietly(parser, argv)
    runners: dict[str, Callable[[LocalStack, Any, int, int, float], Mark]] = {"baseline": run_baseline, "slingshot": run_slingshot}
    runs: dict[str, list[Mark]] = {name: [] for name in runners if args.only in (None, name)}
    with local_stack() as stack, channel() as amqp:
        info = machine(amqp)
        for round_, name in rounds(args.rounds, list(runs)):
            run = runners[name](stack, amqp, args.messages, args.prefetch, args.settle)
            runs[name].append(run)
            log("throughput", f"round {round_ + 1} {name}: {args.messages / run.wall:,.0f} msg/s ({run.wall:.2f} s)")
    result: dict[str, Any] = {
        "benchmark": "throughput-noop",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "prefetch": args.prefetch,
        "rounds": args.rounds,
        "runtime": str(Path(slingshot_runtime.__file__).parent),  # which checkout was measured
        "revision": revision(Path(slingshot_runtime.__file__).resolve().parent.parent),  # the runtime imported
        **{name: summary(values, args.messages) for name, values in runs.items()},
        "target_ratio": TARGET_RATIO,
        "machine": info,
    }
    if len(runs) == 2:
        ratio = result["slingshot"]["median"] / result["baseline"]["median"]
        cpu = result["slingshot"]["client_cpu_us_per_msg"] / result["baseline"]["client_cpu_us_per_msg"]
        # CPU per message varies less than rates on a shared box: a steadier view of the overhead.
        result.update(ratio=round(ratio, 3), meets_target=ratio >= TARGET_RATIO, client_cpu_ratio=round(cpu, 2))
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
