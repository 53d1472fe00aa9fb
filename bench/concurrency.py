"""Speed-up of SLINGSHOT_CONCURRENCY=N for a handler that waits 10 ms on I/O.

The handler sleeps 10 ms (``time.sleep`` releases the GIL as real I/O does) and routes the
message on; the real ``Service`` runs with ``concurrency`` N = 1, 2, 4, 8 and prefetch
max(20, 4N) over a pre-filled queue of persistent messages (``--per-worker`` * N of them, so each
run lasts about as long), publishing with confirms. Speed-up is each N's rate over N=1's in the
same round; the order of N alternates per round; medians; one unrecorded warm-up run first. Target: speed-up at least 0.8 * N.

    python bench/concurrency.py [--levels 1 2 4 8] [--per-worker 150] [--rounds 3]

Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from common import channel, emit, header, local_stack, log, rounds, run_service

TARGET_EFFICIENCY = 0.8
WAIT = 0.010


def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterator[tuple[int, bool]]:
    time.sleep(WAIT)
    yield (request, True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrency levels (default 1 2 4 8)")
    parser.add_argument("--per-worker", type=int, default=150, help="messages per run per unit of N (default 150)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every level (default 3)")
    args = parser.parse_args(argv)
    if 1 not in args.levels:
        parser.error("--levels must include 1 (the speed-up is measured against it)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = header("concurrency-io-10ms")
    rates: dict[int, list[float]] = {n: [] for n in args.levels}
    with local_stack() as stack, channel() as amqp:
        log("concurrency", "warm-up run (imports, first connections), not recorded")
        run_service(stack, amqp, process, 20, "bench-conc")
        for round_, level in rounds(args.rounds, list(rates)):
            count = args.per_worker * level
            seconds = run_service(
                stack, amqp, process, count, "bench-conc", concurrency=level, prefetch=max(20, 4 * level)
            )
            rates[level].append(count / seconds)
            log("concurrency", f"round {round_ + 1} N={level}: {count / seconds:,.0f} msg/s ({seconds:.2f} s)")
    levels: dict[str, Any] = {}
    for level, values in rates.items():
        speedups = [v / one for v, one in zip(values, rates[1], strict=True)]
        speedup = statistics.median(speedups)
        levels[str(level)] = {
            "rate_median": round(statistics.median(values), 1),
            "rates": [round(v, 1) for v in values],
            "speedup": round(speedup, 2),
            "speedups_per_round": [round(s, 2) for s in speedups],
            "target_speedup": round(TARGET_EFFICIENCY * level, 2),
            "meets_target": speedup >= TARGET_EFFICIENCY * level,
        }
    result.update(
        handler_wait_s=WAIT,
        per_worker=args.per_worker,
        rounds=args.rounds,
        ideal_rate_n1=round(1 / WAIT, 1),
        levels=levels,
        meets_target=all(entry["meets_target"] for entry in levels.values()),
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
