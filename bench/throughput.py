"""Throughput of a no-op slingshot handler against a raw pika baseline, on the real local stack.

Every side consumes a pre-filled queue of persistent messages, publishes one persistent copy
per message with publisher confirms pipelined, and acks inbound messages once their copy is
confirmed. The baseline (bench/pika_baseline.py) runs in a process of its own on pika as
shipped, and publishes the same message a slingshot worker does (the protocol's properties
and headers, ``mandatory``); ``minimal`` is that baseline publishing ``delivery_mode=2``
only, for reference. slingshot is timed from its first delivery until the output queue holds
all N copies, the baseline from its first delivery to its last confirm.

    python bench/throughput.py --messages 20000 --prefetch 500 --rounds 3

Prints one JSON object on stdout (progress goes to stderr). Not a test.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Measure this checkout's runtime, not whichever copy is pip-installed; PYTHONPATH still wins
# (bench/common.py leaves this entry where it is).
sys.path.insert(1 + len([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), str(Path(__file__).resolve().parents[1]))

import pika
from common import (
    STALL_TIMEOUT,
    LocalStack,
    channel,
    depth,
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
)
from pika_baseline import Mark, _broker_stat

import slingshot_runtime

TARGET_RATIO = 0.7
BASELINE = Path(__file__).resolve().parent / "pika_baseline.py"
SIDES = ("baseline", "minimal", "slingshot")


def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterator[tuple[int, bool]]:
    yield (request, True)


def run_baseline(stack: LocalStack, amqp: Any, count: int, prefetch: int, settle: float, messages: str) -> Mark:
    """One round of bench/pika_baseline.py in its own process (unpatched pika)."""
    inbound = f"bench-pika-{uuid.uuid4().hex[:8]}-in"
    output = inbound[:-2] + "out"
    with filled(amqp, inbound, output, count, settle):
        command = [sys.executable, str(BASELINE), "--inbound", inbound, "--output", output, "--count", str(count),
                   "--prefetch", str(prefetch), "--messages", messages]
        done = subprocess.run(command, capture_output=True, text=True, timeout=STALL_TIMEOUT * 2)
        if done.returncode != 0:
            raise RuntimeError(f"baseline failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        marks = json.loads(done.stdout)
        if marks["nacked"] or depth(amqp, output) != count:
            raise RuntimeError(f"baseline: {marks['nacked']} nacked, {depth(amqp, output)} of {count} in {output}")
        return Mark(**marks["last"]).since(Mark(**marks["first"]))


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
    parser.add_argument("--only", choices=SIDES, help="run one side only (for profiling)")
    args = parse_quietly(parser, argv)
    runners: dict[str, Callable[[LocalStack, Any, int, int, float], Mark]] = {
        "baseline": functools.partial(run_baseline, messages="same"),
        "minimal": functools.partial(run_baseline, messages="minimal"),
        "slingshot": run_slingshot,
    }
    runs: dict[str, list[Mark]] = {name: [] for name in SIDES if args.only in (None, name)}
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
    if "slingshot" in runs and "baseline" in runs:
        ratio = result["slingshot"]["median"] / result["baseline"]["median"]
        cpu = result["slingshot"]["client_cpu_us_per_msg"] / result["baseline"]["client_cpu_us_per_msg"]
        # CPU per message varies less than rates on a shared box: a steadier view of the overhead.
        result.update(ratio=round(ratio, 3), meets_target=ratio >= TARGET_RATIO, client_cpu_ratio=round(cpu, 2))
    if "slingshot" in runs and "minimal" in runs:
        result["ratio_to_minimal"] = round(result["slingshot"]["median"] / result["minimal"]["median"], 3)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
