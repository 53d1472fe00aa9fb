"""Prometheus metrics of one worker, in its own registry (several services may share a process in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"service": service}
        messages = Counter(
            "slingshot_messages", "Messages handled, by outcome (ok, retried, dead_lettered).", ["outcome"],
            registry=self.registry,
        )
        # Children bound once: labels() costs more than the increment on the per-message path.
        self._by_outcome = {outcome: messages.labels(outcome=outcome) for outcome in ("ok", "retried", "dead_lettered")}
        self.processing = Histogram(
            "slingshot_processing_seconds", "Time from taking a message to handing its outputs to the broker.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._outputs = Counter(
            "slingshot_outputs", "Outputs handed to the broker, by case (JSON spelling: true, 1, \"1\").", ["case"],
            registry=self.registry,
        )
        self._by_case: dict[str, Any] = {}
        # Read when scraped, so the per-message path does not pay for them.
        self.in_flight: Callable[[], int] = lambda: 0  # the service points this at its workers
        self._last_success = 0.0
        Gauge("slingshot_in_flight", "Messages being processed now.", registry=self.registry).set_function(
            lambda: self.in_flight()
        )
        self.retries = Counter("slingshot_retries", "Messages sent to a retry queue.", registry=self.registry)
        self.dead_letters = Counter("slingshot_dead_letters", "Messages sent to the dead-letter queue.", registry=self.registry)
        self.bytes_read = Counter("slingshot_bytes_read", "Bytes read from object storage.", registry=self.registry)
        self.bytes_uploaded = Counter("slingshot_bytes_uploaded", "Bytes uploaded to object storage.", registry=self.registry)
        self.confirm_latency = Histogram(
            "slingshot_publish_confirm_seconds", "Time from publishing a message's outputs to the broker's last confirm.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        Gauge(
            "slingshot_last_success_timestamp_seconds", "Unix time of the last message processed successfully.",
            registry=self.registry,
        ).set_function(lambda: self._last_success)
        info = Gauge("slingshot_info", "The service this worker runs.", ["service"], registry=self.registry)
        info.labels(**labels).set(1)

    def finished(self, outcome: str, seconds: float) -> None:
        """One message handled: ``ok``, ``retried`` or ``dead_lettered``."""
        self._by_outcome[outcome].inc()
        self.processing.observe(seconds)
        if outcome == "ok":
            self._last_success = time.time()
        elif outcome == "retried":
            self.retries.inc()
        else:
            self.dead_letters.inc()

    def output(self, case: str) -> None:
        """One output handed to the broker; ``case`` in its JSON spelling."""
        child = self._by_case.get(case)
        if child is None:
            child = self._by_case[case] = self._outputs.labels(case=case)
        child.inc()
