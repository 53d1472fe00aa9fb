"""reply (the positive and negative services) writes a reply object and upserts one row."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import text

from slingshot_runtime.errors import UnroutableError
from slingshot_runtime.testing import Harness

MakeHarness = Callable[[str], Harness]


@pytest.mark.parametrize("service,score,verdict", [("positive", 2, "positive"), ("negative", -1, "negative")])
def test_writes_the_reply_and_the_row(harness_for: MakeHarness, service: str, score: int, verdict: str) -> None:
    harness = harness_for(service)
    harness.put("text", 11, b"great and fast")
    harness.put("scores", 11, json.dumps({"score": score, "positive": ["great", "fast"], "negative": []}).encode())
    result = harness.invoke(11)
    assert result.outputs == [] and result.routed == {}
    reply = json.loads(harness.read("results", 11))
    assert reply["request"] == 11 and reply["verdict"] == verdict and reply["review"] == "great and fast"
    with harness.engine.connect() as conn:
        rows = conn.execute(text("SELECT request, verdict, words FROM review_results")).all()
    assert [tuple(row) for row in rows] == [(11, verdict, 3)]


def test_a_redelivered_message_updates_its_row(harness_for: MakeHarness) -> None:
    harness = harness_for("negative")
    harness.put("text", 12, b"rude")
    harness.put("scores", 12, b'{"score": -1, "positive": [], "negative": ["rude"]}')
    harness.invoke(12)
    harness.invoke(12)  # at-least-once delivery: the same request again
    with harness.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM review_results")).scalar() == 1


def test_the_sinks_have_no_routes(harness_for: MakeHarness) -> None:
    # A sink that started yielding would fail loudly, not drop its outputs.
    harness = harness_for("positive")
    harness.executor.process = lambda request, read_file, write_file, connection: [(request, True)]
    with pytest.raises(UnroutableError, match="has no route"):
        harness.invoke(13)
