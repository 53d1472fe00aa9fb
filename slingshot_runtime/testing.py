"""Unit-test handlers without infrastructure.

``Harness`` runs ``process`` through the same :class:`~slingshot_runtime.pipeline.Executor`
as the worker — the same output validation, case routing, file staging, upload-then-commit
order and error types — with local directories for buckets and SQLite (or any SQLAlchemy
URL) for the database::

    harness = Harness(process, routes={True: ["next-in"]})
    harness.put("in", 7, b"hello")
    result = harness.invoke(7)
    assert result.routed == {"next-in": [7]}
    assert harness.read("out", 7) == b"HELLO"

Routes may be a dict or a list of ``(case, queues)`` pairs; use the list when both
``True`` and ``1`` (or ``False`` and ``0``) are cases, since a Python dict merges them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .database import Database
from .errors import StorageError
from .pipeline import Executor, ProcessFn
from .routing import Case, CaseKey, case_key, format_case
from .storage import ObjectStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

RoutesSpec = Mapping[Case, Iterable[str]] | Iterable[tuple[Case, Iterable[str]]]


@dataclass
class Result:
    #: ``(id, case)`` in the order ``process`` produced them.
    outputs: list[tuple[int, Case]]
    #: queue → ids published to it, in order.
    routed: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"{output_id} case={format_case(case)}" for output_id, case in self.outputs]
        lines += [f"  → {queue}: {', '.join(map(str, ids))}" for queue, ids in self.routed.items()]
        return "\n".join(lines) or "no outputs"


class _AnyCase(dict[CaseKey, tuple[str, ...]]):
    """Routes for a harness without a routing table: every valid case goes nowhere."""

    def get(self, key: CaseKey, default: Any = None) -> tuple[str, ...]:
        return super().get(key, ())


class LocalStore(ObjectStore):
    """Buckets as directories: ``ROOT/BUCKET/ID``. Reads stream from disk like S3 reads do."""

    def __init__(self, root: Path, buckets: Mapping[str, str] | None = None) -> None:
        super().__init__(self._no_credentials, lambda reference: dict(buckets or {}).get(reference, reference))
        self.root = root

    @staticmethod
    def _no_credentials() -> Any:
        raise AssertionError("LocalStore has no S3 client")

    def path(self, bucket: str, object_key: str) -> Path:
        return self.root / bucket / object_key

    def open_read(self, bucket: str, object_key: str) -> BinaryIO:
        path = self.path(bucket, object_key)
        try:
            return cast(BinaryIO, path.open("rb"))
        except FileNotFoundError:
            raise StorageError(f"cannot read s3://{bucket}/{object_key}: NoSuchKey (no file {path})") from None

    def upload(self, path: str, bucket: str, object_key: str, size: int) -> None:
        target = self.path(bucket, object_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


class Harness:
    """Calls ``process`` as the worker would, with local files and a SQLAlchemy database."""

    def __init__(
        self,
        process: ProcessFn,
        routes: RoutesSpec | None = None,
        buckets: Mapping[str, str] | None = None,
        database_url: str = "sqlite://",
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="slingshot-harness-")
        self.root = Path(root if root is not None else cast(Any, self._tmp).name)
        self.store = LocalStore(self.root / "buckets", buckets)
        self.database = Database(lambda: database_url, application_name="slingshot harness")
        staging = self.root / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        self.executor = Executor(process, _routing_table(routes), self.store, self.database, str(staging))

    @property
    def engine(self) -> Engine:
        """The database, to create tables before and check rows after ``invoke``."""
        return self.database.engine

    def put(self, reference: str, object_id: int, data: bytes) -> None:
        """An input object, as ``read_file(reference, object_id)`` will see it."""
        path = self.store.path(self.store.bucket(reference), str(object_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def read(self, reference: str, object_id: int) -> bytes:
        """What ``process`` wrote with ``write_file(reference, object_id)`` (after a successful invoke)."""
        with self.store.open_read(self.store.bucket(reference), str(object_id)) as f:
            return f.read()

    def invoke(self, request: int) -> Result:
        """Run ``process`` once; raises the worker's error types (HandlerError, BadOutputError, UnroutableError, …)."""
        routed = self.executor.execute(request)
        result = Result([(output_id, case) for output_id, case, _ in routed])
        for output_id, _, queues in routed:
            for queue in queues:
                result.routed.setdefault(queue, []).append(output_id)
        return result

    def close(self) -> None:
        self.database.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _routing_table(routes: RoutesSpec | None) -> Mapping[CaseKey, tuple[str, ...]]:
    if routes is None:
        return _AnyCase()
    pairs = routes.items() if isinstance(routes, Mapping) else routes
    table: dict[CaseKey, tuple[str, ...]] = {}
    for case, queues in pairs:
        table[case_key(case)] = (*table.get(case_key(case), ()), *queues)
    return table


__all__ = ["Harness", "LocalStore", "Result"]

