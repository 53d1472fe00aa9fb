"""Slingshot with a 4 KiB S3 read and write per message against a hand-written boto3 + pika loop.

Each message ``i`` reads object ``i`` (4 KiB) from the input bucket, writes a 4 KiB object
``i`` to the output bucket, publishes one persistent copy with publisher confirms and acks.
Slingshot: the real ``Service``, its handler ``read_file("in", i)`` → ``write_file("out", i)``.
The baseline: a BlockingConnection consumer (same prefetch, confirms on) calling boto3
``get_object`` + ``put_object``, then ``basic_publish`` (waits for its confirm), then ``basic_ack``.
Both against the same SeaweedFS, in the same run, after one unrecorded warm-up run each;
rounds alternate the order; medians.
Timed from the first delivery until the output queue holds all N copies; every output
object is counted afterwards. Target: slingshot at least 0.8x the baseline.

    python bench/s3_io.py [--messages 500] [--prefetch 20] [--rounds 3]

Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import pika
from common import (
    PARAMS,
    PERSISTENT,
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

TARGET_RATIO = 0.8
SIZE = 4096


def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterator[tuple[int, bool]]:
    source: BinaryIO
    with read_file("in", request) as source, write_file("out", request) as target:
        shutil.copyfileobj(source, target)
    yield (request, True)


def put_inputs(stack: LocalStack, bucket: str, count: int) -> None:
    stack.s3.create_bucket(bucket)
    client = stack.s3.client()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=str(i), Body=os.urandom(SIZE)), range(count)))


def count_objects(stack: LocalStack, bucket: str) -> int:
    pages = stack.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


def run_baseline(stack: LocalStack, amqp: Any, count: int, prefetch: int, in_bucket: str, out_bucket: str) -> float:
    """The hand-written loop: what a careful user writes with boto3 and pika alone."""
    name = f"bench-s3base-{uuid.uuid4().hex[:8]}"
    inbound, output = f"{name}-in", f"{name}-out"
    stack.s3.create_bucket(out_bucket)
    s3 = stack.s3.client()
    counter, failure = Counter(), []

    def loop() -> None:
        try:
            connection = pika.BlockingConnection(PARAMS)
            ch = connection.channel()
            ch.basic_qos(prefetch_count=prefetch)
            ch.confirm_delivery()
            for method, _, body in ch.consume(inbound):
                key = body.decode()
                data = s3.get_object(Bucket=in_bucket, Key=key)["Body"].read()
                s3.put_object(Bucket=out_bucket, Key=key, Body=data)
                ch.basic_publish("", output, body, PERSISTENT)  # returns once confirmed
                ch.basic_ack(method.delivery_tag)
                counter.tick()
                if counter.count >= count:
                    break
            ch.cancel()
            connection.close()
        except Exception as exc:  # reported by the measuring thread
            failure.append(exc)

    try:
        fill(amqp, inbound, count)
        amqp.queue_declare(output, durable=True)
        thread = threading.Thread(target=loop, name="s3-baseline", daemon=True)
        thread.start()
        try:
            seconds = wait_done(amqp, output, count, lambda: counter.count, lambda: counter.first, thread.is_alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; baseline: {failure[0]!r}" if failure else str(exc)) from exc
        thread.join(30)
        return seconds
    finally:
        amqp.queue_delete(inbound)
        amqp.queue_delete(output)


def main(argv: list[str] | None = None) -> int:
    args = parse_quietly(paired_arguments(__doc__, messages=500, prefetch=20), argv)
    result = header("s3-io-4k")
    seconds: dict[str, list[float]] = {"baseline": [], "slingshot": []}
    with local_stack() as stack, channel() as amqp:
        in_bucket = f"bench-in-{uuid.uuid4().hex[:8]}"
        log("s3_io", f"writing {args.messages} input objects of {SIZE} bytes")
        put_inputs(stack, in_bucket, args.messages)
        log("s3_io", "warm-up run of each side (imports, first connections), not recorded")
        run_baseline(stack, amqp, 20, args.prefetch, in_bucket, f"bench-warm-{uuid.uuid4().hex[:8]}")
        run_service(stack, amqp, process, 20, "bench-s3", {"in": in_bucket, "out": f"bench-warm-{uuid.uuid4().hex[:8]}"})
        for round_, side in rounds(args.rounds, list(seconds)):
            out_bucket = f"bench-out-{uuid.uuid4().hex[:8]}"
            if side == "baseline":
                run = run_baseline(stack, amqp, args.messages, args.prefetch, in_bucket, out_bucket)
            else:
                buckets = {"in": in_bucket, "out": out_bucket}
                run = run_service(stack, amqp, process, args.messages, "bench-s3", buckets, prefetch=args.prefetch)
            written = count_objects(stack, out_bucket)
            if written != args.messages:
                raise RuntimeError(f"{side}: {written} output objects, expected {args.messages}")
            seconds[side].append(run)
            log("s3_io", f"round {round_ + 1} {side}: {args.messages / run:,.0f} msg/s ({run:.2f} s)")
    rates = {side: rate_summary(values, args.messages) for side, values in seconds.items()}
    ratio = rates["slingshot"]["median"] / rates["baseline"]["median"]
    result.update(
        messages=args.messages,
        object_bytes=SIZE,
        prefetch=args.prefetch,
        rounds=args.rounds,
        **rates,
        ratio=round(ratio, 2),
        ratios_per_round=[round(b / s, 2) for s, b in zip(seconds["slingshot"], seconds["baseline"], strict=True)],
        target_ratio=TARGET_RATIO,
        meets_target=ratio >= TARGET_RATIO,
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
