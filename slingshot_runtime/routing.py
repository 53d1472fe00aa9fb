"""Message bodies, output validation and case routing: the rules every path shares.

The worker, the offline test harness and ``slingshot invoke`` all call these, so a
routing decision is the same wherever it is made.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import BadOutputError, BadRequestError, UnroutableError

U64_MAX = 2**64 - 1
#: ``("bool", True)``, ``("int", 1)`` and ``("str", "1")`` are three different cases.
CaseKey = tuple[str, bool | int | str]
Case = bool | int | str


def case_key(case: Any) -> CaseKey:
    """Type-and-value key of a case; ``TypeError`` for anything but bool, int or str."""
    if isinstance(case, bool):
        return ("bool", case)
    if isinstance(case, int):
        return ("int", case)
    if isinstance(case, str):
        return ("str", case)
    raise TypeError(f"a case must be bool, int or str, not {type(case).__name__}")


@functools.lru_cache(maxsize=1024, typed=True)  # typed: True and 1 are different cases
def format_case(case: Case) -> str:
    """The JSON spelling, which keeps the type visible: ``true``, ``1``, ``"1"``."""
    return json.dumps(case)


def is_u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def decode_id(body: bytes, body_format: str = "decimal") -> int:
    """An inbound body as a u64; anything else is a permanent BadRequestError."""
    if body_format == "be64":
        if len(body) != 8:
            raise BadRequestError(f"body must be 8 bytes (big-endian u64), got {len(body)} bytes")
        return int.from_bytes(body, "big")
    text = body.strip()
    # isdigit() on bytes is ASCII-only: no signs, spaces, underscores or non-ASCII digits.
    if not text.isdigit() or len(text) > 20:
        raise BadRequestError(f"body must be a u64 in ASCII decimal, got {_show(body)}")
    value = int(text)
    if value > U64_MAX:
        raise BadRequestError(f"body {_show(body)} is larger than 2^64-1")
    return value


def encode_id(value: int, body_format: str = "decimal") -> bytes:
    if not is_u64(value):
        raise BadOutputError(f"id must be an int in 0..2^64-1, got {value!r}")
    if body_format == "be64":
        return value.to_bytes(8, "big")
    return str(value).encode("ascii")


def iter_outputs(result: Iterable[Any] | None) -> Iterator[tuple[int, Case]]:
    """Validate what ``process`` produced, lazily, so a generator's own errors surface as they happen."""
    if result is None:
        return
    if isinstance(result, (str, bytes, Mapping)):
        raise BadOutputError(f"process must return an iterable of (id, case) pairs, not {type(result).__name__}")
    for index, item in enumerate(result):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise BadOutputError(f"output #{index} must be an (id, case) pair, got {_show(item)}")
        output_id, case = item
        if not is_u64(output_id):
            raise BadOutputError(f"output #{index}: id must be an int in 0..2^64-1, got {_show(output_id)}")
        if not isinstance(case, (bool, int, str)):
            raise BadOutputError(f"output #{index}: case must be bool, int or str, got {_show(case)}")
        yield output_id, case


def route(
    outputs: Iterable[tuple[int, Case]], routes: Mapping[CaseKey, tuple[str, ...]]
) -> list[tuple[int, Case, tuple[str, ...]]]:
    """Each output with the queues of its case; a case without a route is an error, never a silent drop."""
    routed = []
    for output_id, case in outputs:
        queues = routes.get(case_key(case))
        if queues is None:
            known = ", ".join(format_case(c) for _, c in routes) or "none"
            raise UnroutableError(f"output {output_id}: case {format_case(case)} has no route (routed cases: {known})")
        routed.append((output_id, case, queues))
    return routed


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
