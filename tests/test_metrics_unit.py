"""Per-thread tallies add up to the exported Prometheus families."""

from __future__ import annotations

import threading

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from slingshot_runtime.metrics import Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_tallies_of_all_threads_are_summed() -> None:
    metrics = Metrics("svc")

    def work(outcome: str, seconds: float, count: int) -> None:
        for _ in range(count):
            metrics.finished(outcome, seconds)
            metrics.output("true")
        metrics.confirmed(seconds)

    threads = [threading.Thread(target=work, args=("ok", 0.003, 1000)), threading.Thread(target=work, args=("retried", 2.0, 7))]
    for thread in threads:
        thread.start()
    work("dead_lettered", 0.0005, 3)
    for thread in threads:
        thread.join()
    samples = _samples(metrics)
    assert samples[("slingshot_messages_total", (("outcome", "ok"),))] == 1000
    assert samples[("slingshot_messages_total", (("outcome", "retried"),))] == 7
    assert samples[("slingshot_messages_total", (("outcome", "dead_lettered"),))] == 3
    assert samples[("slingshot_retries_total", ())] == 7
    assert samples[("slingshot_dead_letters_total", ())] == 3
    assert samples[("slingshot_outputs_total", (("case", "true"),))] == 1010
    # Buckets are cumulative and "le" is inclusive: 0.0005 → le=0.001, 0.003 → le=0.005, 2.0 → le=2.5.
    assert samples[("slingshot_processing_seconds_bucket", (("le", "0.001"),))] == 3
    assert samples[("slingshot_processing_seconds_bucket", (("le", "0.0025"),))] == 3
    assert samples[("slingshot_processing_seconds_bucket", (("le", "0.005"),))] == 1003
    assert samples[("slingshot_processing_seconds_bucket", (("le", "1.0"),))] == 1003
    assert samples[("slingshot_processing_seconds_bucket", (("le", "2.5"),))] == 1010
    assert samples[("slingshot_processing_seconds_bucket", (("le", "+Inf"),))] == 1010
    assert samples[("slingshot_processing_seconds_count", ())] == 1010
    assert abs(samples[("slingshot_processing_seconds_sum", ())] - (1000 * 0.003 + 7 * 2.0 + 3 * 0.0005)) < 1e-9
    assert samples[("slingshot_publish_confirm_seconds_count", ())] == 3


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    metrics = Metrics("svc")
    metrics.finished("ok", 0.01)
    samples = _samples(metrics)
    assert samples[("slingshot_processing_seconds_bucket", (("le", "0.005"),))] == 0
    assert samples[("slingshot_processing_seconds_bucket", (("le", "0.01"),))] == 1
