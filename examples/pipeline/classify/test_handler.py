"""classify scores a review and routes it by a bool case: true to positive, false to negative."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from slingshot_runtime.testing import Harness

MakeHarness = Callable[[str], Harness]


@pytest.mark.parametrize(
    "text,case,queue",
    [
        ("great food, friendly staff, would recommend", True, "pipeline.positive"),
        ("slow delivery and the box was broken", False, "pipeline.negative"),
        ("good but slow", False, "pipeline.negative"),  # a tie is not positive
        ("", False, "pipeline.negative"),
    ],
)
def test_routes_by_the_score(harness_for: MakeHarness, text: str, case: bool, queue: str) -> None:
    harness = harness_for("classify")
    harness.put("text", 3, text.encode())
    result = harness.invoke(3)
    assert result.outputs == [(3, case)]
    assert result.routed == {queue: [3]}


def test_writes_the_score(harness_for: MakeHarness) -> None:
    harness = harness_for("classify")
    harness.put("text", 4, b"love it, love it, but late")
    harness.invoke(4)
    assert json.loads(harness.read("scores", 4)) == {"score": 1, "positive": ["love", "love"], "negative": ["late"]}
