"""Types for handler authors: what ``process`` receives and may return."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, Protocol

from sqlalchemy.engine.base import Connection

#: A routing case: matched by type and value, so ``True``, ``1`` and ``"1"`` differ.
CaseVariable = bool | int | str


class ReadFileFn(Protocol):
    """``read_file(key, id)``: a streaming binary reader of object ``id`` in bucket reference ``key``."""

    def __call__(self, key: str, id: int, /) -> BinaryIO: ...


class WriteFileFn(Protocol):
    """``write_file(key, id)``: a binary file staged locally, uploaded after ``process`` returns."""

    def __call__(self, key: str, id: int, /) -> BinaryIO: ...


class ProcessFn(Protocol):
    """``process(request, read_file, write_file, connection)`` yielding ``(id, case)`` pairs."""

    def __call__(
        self,
        request: int,
        read_file: ReadFileFn,
        write_file: WriteFileFn,
        connection: Connection,
        /,
    ) -> Iterable[tuple[int, CaseVariable]] | None: ...


__all__ = ["CaseVariable", "ProcessFn", "ReadFileFn", "WriteFileFn"]
