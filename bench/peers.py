"""Slingshot against FastStream, the same no-op workload in the same run, on the real local stack.

Each side consumes a pre-filled queue of N persistent messages, publishes one persistent copy
per message with publisher confirms, and acks the inbound message. FastStream runs its
idiomatic form: ``RabbitBroker(default_channel=Channel(prefetch_count=P, publisher_confirms=True))``,
a ``@broker.subscriber`` stacked on a ``@broker.publisher(persist=True)`` returning the body
(its default ack policy acks after the handler and its publish returned); its per-message
logging is off (``logger=None``) so it is not charged for log output. Slingshot is the real
``Service`` with a no-op ``process``. Timed from the first delivery until the output queue holds
all N copies; rounds alternate the order; medians. Target: slingshot at least 2x FastStream.

    python bench/peers.py [--messages 3000] [--prefetch 100] [--rounds 3]

Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

try:
    from faststream.rabbit import Channel, RabbitBroker, RabbitMessage, RabbitQueue
except ImportError:
    sys.exit("peers: FastStream is not installed: pip install 'faststream[rabbit]'")

from common import (
    Counter,
    LocalStack,
    channel,
    emit,
    fill,
    header,
    local_stack,
    log,
    paired_arguments,
    parse_quietly,
    rate_summary,
    rounds,
    run_service,
    wait_done,
)

TARGET_RATIO = 2.0
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterator[tuple[int, bool]]:
    yield (request, True)


def run_faststream(amqp: Any, count: int, prefetch: int) -> float:
    name = f"bench-faststream-{uuid.uuid4().hex[:8]}"
    inbound, output = f"{name}-in", f"{name}-out"
    counter, stop, failure = Counter(), threading.Event(), []

    async def serve() -> None:
        broker = RabbitBroker(AMQP_URL, default_channel=Channel(prefetch_count=prefetch, publisher_confirms=True), logger=None)
        publisher = broker.publisher(RabbitQueue(output, durable=True), persist=True)

        @broker.subscriber(RabbitQueue(inbound, durable=True))
        @publisher
        async def handle(message: RabbitMessage) -> bytes:
            counter.tick()
            return message.body

        async with broker:
            await broker.start()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by the measuring thread
            failure.append(exc)

    try:
        fill(amqp, inbound, count)
        amqp.queue_declare(output, durable=True)
        thread = threading.Thread(target=thread_main, name="faststream", daemon=True)
        thread.start()
        try:
            seconds = wait_done(amqp, output, count, lambda: counter.count, lambda: counter.first, thread.is_alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; faststream: {failure[0]!r}" if failure else str(exc)) from exc
        finally:
            stop.set()
            thread.join(30)
        if failure:
            raise RuntimeError(f"faststream failed: {failure[0]!r}")
        return seconds
    finally:
        amqp.queue_delete(inbound)
        amqp.queue_delete(output)


def main(argv: list[str] | None = None) -> int:
    args = parse_quietly(paired_arguments(__doc__, messages=3000, prefetch=100), argv)
    result = header("peers-faststream")
    seconds: dict[str, list[float]] = {"faststream": [], "slingshot": []}
    stack: LocalStack
    with local_stack() as stack, channel() as amqp:
        for round_, side in rounds(args.rounds, list(seconds)):
            if side == "faststream":
                run = run_faststream(amqp, args.messages, args.prefetch)
            else:
                run = run_service(stack, amqp, process, args.messages, "bench-peers", prefetch=args.prefetch)
            seconds[side].append(run)
            log("peers", f"round {round_ + 1} {side}: {args.messages / run:,.0f} msg/s ({run:.2f} s)")
    ratios = [f / s for s, f in zip(seconds["slingshot"], seconds["faststream"], strict=True)]  # rate ratio per round
    rates = {side: rate_summary(values, args.messages) for side, values in seconds.items()}
    ratio = rates["slingshot"]["median"] / rates["faststream"]["median"]
    result.update(
        messages=args.messages,
        prefetch=args.prefetch,
        rounds=args.rounds,
        **rates,
        ratio=round(ratio, 2),
        ratios_per_round=[round(r, 2) for r in ratios],
        target_ratio=TARGET_RATIO,
        meets_target=ratio >= TARGET_RATIO,
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
