"""ingest: a raw review upload becomes normalised text for the rest of the pipeline.

Reads object ``request`` of bucket reference ``raw`` (any bytes: invalid UTF-8 is replaced,
not fatal) and writes ``text``: Unicode NFKC (full-width letters become ASCII), lower case,
single spaces. Every request goes on with case ``true`` (the system map routes it to classify).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

from sqlalchemy.engine import Connection

from slingshot_runtime.typing import CaseVariable, ReadFileFn, WriteFileFn


def normalise(raw: bytes) -> str:
    text = unicodedata.normalize("NFKC", raw.decode("utf-8", errors="replace"))
    return " ".join(text.lower().split())


def process(
    request: int,
    read_file: ReadFileFn,
    write_file: WriteFileFn,
    connection: Connection,
) -> Iterator[tuple[int, CaseVariable]]:
    with read_file("raw", request) as source:
        text = normalise(source.read())
    with write_file("text", request) as target:
        target.write(text.encode())
    yield (request, True)
