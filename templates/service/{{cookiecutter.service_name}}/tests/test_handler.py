"""``process`` offline: ``slingshot_runtime.testing.Harness`` runs it through the worker's own
executor (same output checks, routing, staging and upload-then-commit order), with local
directories for buckets and SQLite for the database. No broker, S3 or config service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slingshot_runtime.errors import StorageError
from slingshot_runtime.loader import load_handler
from slingshot_runtime.testing import Harness
from slingshot_runtime.typing import CaseVariable

HANDLER = Path(__file__).resolve().parent.parent / "handler.py"
#: Case → queues, as the config service's document lists them under ``out``.
ROUTES: dict[CaseVariable, list[str]] = {True: ["next-service-in"]}


@pytest.fixture
def harness() -> Iterator[Harness]:
    # Loaded the way the container's entrypoint loads it, signature check included.
    with Harness(load_handler(str(HANDLER)), routes=ROUTES) as harness:
        yield harness


def test_upper_cases_the_input_and_routes_the_request(harness: Harness) -> None:
    harness.put("in", 7, b"hello, world")
    result = harness.invoke(7)
    assert harness.read("out", 7) == b"HELLO, WORLD"
    assert result.outputs == [(7, True)]
    assert result.routed == {"next-service-in": [7]}


def test_streams_inputs_larger_than_one_chunk(harness: Harness) -> None:
    data = b"abc" * 1_000_000
    harness.put("in", 8, data)
    harness.invoke(8)
    assert harness.read("out", 8) == data.upper()


def test_a_missing_input_fails_the_message(harness: Harness) -> None:
    # In the worker this retries the message, then dead-letters it; nothing is routed.
    with pytest.raises(StorageError, match="NoSuchKey"):
        harness.invoke(9)
