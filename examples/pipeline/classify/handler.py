"""classify: is a normalised review positive? A ``bool`` case routes it.

Reads ``text``, counts words of two small lexicons, writes the score to ``scores`` (JSON)
and yields case ``true`` when there are more positive than negative words (the system map
routes that to the positive service), ``false`` otherwise (to the negative service).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Connection

from slingshot_runtime.typing import CaseVariable, ReadFileFn, WriteFileFn

POSITIVE = frozenset({"great", "good", "love", "excellent", "amazing", "perfect", "happy", "fast", "friendly", "recommend"})
NEGATIVE = frozenset({"bad", "poor", "broken", "slow", "terrible", "awful", "hate", "refund", "worst", "late", "rude"})


def score(text: str) -> dict[str, Any]:
    words = re.findall(r"[a-z']+", text)
    good = [word for word in words if word in POSITIVE]
    bad = [word for word in words if word in NEGATIVE]
    return {"score": len(good) - len(bad), "positive": good, "negative": bad}


def process(
    request: int,
    read_file: ReadFileFn,
    write_file: WriteFileFn,
    connection: Connection,
) -> Iterator[tuple[int, CaseVariable]]:
    with read_file("text", request) as source:
        result = score(source.read().decode())
    with write_file("scores", request) as target:
        target.write(json.dumps(result).encode())
    yield (request, result["score"] > 0)
