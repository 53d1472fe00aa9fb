"""ingest normalises raw uploads and hands every request to classify."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from slingshot_runtime.errors import StorageError
from slingshot_runtime.testing import Harness

MakeHarness = Callable[[str], Harness]


def test_normalises_the_text_and_routes_to_classify(harness_for: MakeHarness) -> None:
    harness = harness_for("ingest")
    fullwidth_great = "\uff27\uff52\uff45\uff41\uff54"  # NFKC makes it "Great"
    harness.put("raw", 7, f"  {fullwidth_great}   SERVICE!\n\tLove it ".encode())
    result = harness.invoke(7)
    assert harness.read("text", 7) == b"great service! love it"
    assert result.outputs == [(7, True)]
    assert result.routed == {"pipeline.classify": [7]}


def test_bytes_that_are_not_utf8_are_replaced_not_fatal(harness_for: MakeHarness) -> None:
    harness = harness_for("ingest")
    harness.put("raw", 8, b"ok \xff\xfe fine")
    harness.invoke(8)
    assert harness.read("text", 8) == "ok \ufffd\ufffd fine".encode()


def test_a_missing_upload_fails_the_message(harness_for: MakeHarness) -> None:
    # The worker retries it, then dead-letters it; nothing is routed.
    with pytest.raises(StorageError, match="NoSuchKey"):
        harness_for("ingest").invoke(9)
