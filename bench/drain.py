"""Drain: SIGTERM to a worker mid-message, timed until the process exits.

A worker subprocess (``python -m slingshot_runtime handler.py``, prefetch 5) takes the first of
``--queued`` messages; its handler notes the moment it started (CLOCK_MONOTONIC is shared by
all processes) and sleeps ``--handler-seconds``. ``--signal-at`` seconds into the message the
worker gets SIGTERM; the time from the signal to its exit is measured. After the exit the
message must have been finished and acked (its copy is in the output queue, nothing unacked
came back) and the unstarted prefetched messages given back (the inbound queue holds the
rest). Target: signal → exit at most the remaining handler time + 1 s, exit code 0.

    python bench/drain.py [--handler-seconds 3] [--signal-at 1] [--runs 3]

Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import LocalStack, channel, depth, emit, fill, header, local_stack, log

SLACK = 1.0
HANDLER = """\
import os
import time


def process(request, read_file, write_file, connection):
    with open(os.environ["BENCH_STARTED"], "w") as marker:
        marker.write(repr(time.monotonic()))
    time.sleep(float(os.environ["BENCH_HANDLER_SECONDS"]))
    yield (request, True)
"""


def one_run(stack: LocalStack, amqp: Any, handler: Path, handler_seconds: float, signal_at: float, queued: int) -> dict[str, Any]:
    name = stack.add_service("bench-drain")
    inbound, output = f"{name}-in", f"{name}-out"
    marker = stack.root / f"{name}.started"
    fill(amqp, inbound, queued, settle=0)
    amqp.queue_declare(output, durable=True)
    env = stack.worker_env(name, prefetch="5")
    env.update(BENCH_STARTED=str(marker), BENCH_HANDLER_SECONDS=str(handler_seconds))
    worker_log = stack.root / f"{name}.log"
    with open(worker_log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "slingshot_runtime", str(handler)], env=env, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker never started the message:\n{worker_log.read_text()[-3000:]}")
            time.sleep(0.005)
        started = float(marker.read_text())
        time.sleep(max(0.0, started + signal_at - time.monotonic()))
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(handler_seconds + 60)
        seconds = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    remaining = started + handler_seconds - signalled
    outputs, left = depth(amqp, output), depth(amqp, inbound)
    return {
        "signal_to_exit_s": round(seconds, 3),
        "remaining_at_signal_s": round(remaining, 3),
        "exit_code": exit_code,
        "output_published": outputs == 1,
        "acked": left == queued - 1,  # an unacked message would be back in the queue
        "prefetched_returned": left,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--handler-seconds", type=float, default=3.0, help="how long the handler runs (default 3)")
    parser.add_argument("--signal-at", type=float, default=1.0, help="seconds into the message to send SIGTERM (default 1)")
    parser.add_argument("--queued", type=int, default=3, help="messages in the queue (default 3; one is in flight)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    args = parser.parse_args(argv)
    if not 0 <= args.signal_at < args.handler_seconds:
        parser.error("--signal-at must be within the handler's run (0 <= signal-at < handler-seconds)")
    result = header("drain-sigterm")
    runs = []
    with local_stack() as stack, channel() as amqp:
        handler = stack.root / "handler.py"
        handler.write_text(HANDLER)
        for index in range(args.runs):
            run = one_run(stack, amqp, handler, args.handler_seconds, args.signal_at, args.queued)
            runs.append(run)
            log("drain", f"run {index + 1}: {run}")
    overshoot = statistics.median(r["signal_to_exit_s"] - r["remaining_at_signal_s"] for r in runs)
    worst = max(r["signal_to_exit_s"] - r["remaining_at_signal_s"] for r in runs)
    correct = all(r["exit_code"] == 0 and r["output_published"] and r["acked"] for r in runs)
    result.update(
        handler_seconds=args.handler_seconds,
        signal_at_s=args.signal_at,
        queued=args.queued,
        runs=runs,
        signal_to_exit_median_s=round(statistics.median(r["signal_to_exit_s"] for r in runs), 3),
        beyond_remaining_median_s=round(overshoot, 3),
        beyond_remaining_worst_s=round(worst, 3),
        target_beyond_remaining_s=SLACK,
        all_exit_0_acked_published=correct,
        meets_target=worst <= SLACK and correct,
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
