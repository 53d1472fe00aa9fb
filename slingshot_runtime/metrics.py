"""Prometheus metrics of one worker, in its own registry (several services may share a process in tests).

The per-message counts are kept in one :class:`Tally` per thread and summed when scraped:
prometheus_client's counters and histograms take a lock on every increment (outcome,
histogram sum and bucket, output case: 1.8 µs of a no-op message's ~12 on the worker, plus
the confirm histogram on the I/O thread; 0.75 µs as tallies). A tally is written only by its
own thread, so the hot path needs no lock; a scrape reads ints that the GIL keeps whole.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
OUTCOMES = ("ok", "retried", "dead_lettered")


class Latencies:
    """One thread's histogram: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class Tally:
    """What one thread counted; only that thread writes it."""

    __slots__ = ("cases", "confirm", "outcomes", "processing")

    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.cases: collections.Counter[str] = collections.Counter()
        self.processing = Latencies()
        self.confirm = Latencies()


class Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tallies: list[Tally] = []
        self._tallies_lock = threading.Lock()
        self._local = threading.local()
        self.registry.register(_TallyCollector(self._snapshot))
        # Read when scraped, so the per-message path does not pay for them.
        self.in_flight: Callable[[], int] = lambda: 0  # the service points this at its workers
        self._last_success = 0.0
        Gauge("slingshot_in_flight", "Messages being processed now.", registry=self.registry).set_function(
            lambda: self.in_flight()
        )
        self.bytes_read = Counter("slingshot_bytes_read", "Bytes read from object storage.", registry=self.registry)
        self.bytes_uploaded = Counter("slingshot_bytes_uploaded", "Bytes uploaded to object storage.", registry=self.registry)
        Gauge(
            "slingshot_last_success_timestamp_seconds", "Unix time of the last message processed successfully.",
            registry=self.registry,
        ).set_function(lambda: self._last_success)
        info = Gauge("slingshot_info", "The service this worker runs.", ["service"], registry=self.registry)
        info.labels(service=service).set(1)

    def tally(self) -> Tally:
        """The calling thread's tally."""
        try:
            return self._local.tally  # type: ignore[no-any-return]
        except AttributeError:
            tally = self._local.tally = Tally()
            with self._tallies_lock:
                self._tallies.append(tally)
            return tally

    def finished(self, outcome: str, seconds: float) -> None:
        """One message handled: ``ok``, ``retried`` or ``dead_lettered``."""
        tally = self.tally()
        tally.outcomes[outcome] += 1
        tally.processing.observe(seconds)
        if outcome == "ok":
            self._last_success = time.time()

    def output(self, case: str) -> None:
        """One output handed to the broker; ``case`` in its JSON spelling."""
        self.tally().cases[case] += 1

    def confirmed(self, seconds: float) -> None:
        """A message's outputs are all confirmed, ``seconds`` after they were published."""
        self.tally().confirm.observe(seconds)

    def _snapshot(self) -> list[Tally]:
        with self._tallies_lock:
            return list(self._tallies)


class _TallyCollector(Collector):
    """Sums every thread's tally into the exported metric families."""

    def __init__(self, tallies: Callable[[], list[Tally]]) -> None:
        self._tallies = tallies

    def collect(self) -> Iterator[Metric]:
        tallies = self._tallies()
        outcomes: collections.Counter[str] = collections.Counter({outcome: 0 for outcome in OUTCOMES})
        cases: collections.Counter[str] = collections.Counter()
        for tally in tallies:
            outcomes.update(tally.outcomes)
            cases.update(tally.cases)
        messages = CounterMetricFamily("slingshot_messages", "Messages handled, by outcome (ok, retried, dead_lettered).",
                                       labels=["outcome"])
        for outcome, count in outcomes.items():
            messages.add_metric([outcome], count)
        yield messages
        outputs = CounterMetricFamily("slingshot_outputs", 'Outputs handed to the broker, by case (JSON spelling: true, 1, "1").',
                                      labels=["case"])
        for case, count in cases.items():
            outputs.add_metric([case], count)
        yield outputs
        yield CounterMetricFamily("slingshot_retries", "Messages sent to a retry queue.", value=outcomes["retried"])
        yield CounterMetricFamily("slingshot_dead_letters", "Messages sent to the dead-letter queue.", value=outcomes["dead_lettered"])
        yield _histogram("slingshot_processing_seconds", "Time from taking a message to handing its outputs to the broker.",
                         (t.processing for t in tallies))
        yield _histogram("slingshot_publish_confirm_seconds",
                         "Time from publishing a message's outputs to the broker's last confirm.", (t.confirm for t in tallies))


def _histogram(name: str, documentation: str, parts: Iterable[Latencies]) -> HistogramMetricFamily:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for part in parts:
        counts = [a + b for a, b in zip(counts, list(part.counts), strict=True)]
        total += part.total
    cumulative, buckets = 0, []
    for bound, count in zip((*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"), counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)
