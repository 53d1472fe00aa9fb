"""Object storage (S3 via boto3): streaming reads, staged writes, managed uploads.

boto3 costs ~0.4 s to import and set up, so the client is built on first use, not at
start. One client serves every message and thread (boto3 clients are thread-safe).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from .errors import BadKeyError, StorageError
from .routing import is_u64

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

REFERENCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
#: Objects above this size go up in parts (boto3's managed transfer); memory in flight
#: is at most part size x concurrency, whatever the object's size.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
UPLOAD_CONCURRENCY = 4
READ_BUFFER = 256 * 1024


@dataclass(frozen=True)
class S3Credentials:
    endpoint: str
    region: str
    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"S3Credentials(endpoint={self.endpoint!r}, region={self.region!r})"


class ObjectStore:
    """The shared S3 client and the bucket-reference resolver."""

    def __init__(
        self,
        credentials: Callable[[], S3Credentials],
        resolve_bucket: Callable[[str], str],
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self._on_read = on_read
        self._credentials = credentials
        self._resolve_bucket = resolve_bucket
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        creds = self._credentials()
        return boto3.session.Session().client(
            "s3",
            endpoint_url=creds.endpoint,
            region_name=creds.region,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"},
                max_pool_connections=32,
            ),
        )

    def bucket(self, reference: str) -> str:
        if not isinstance(reference, str) or not REFERENCE_PATTERN.fullmatch(reference) or reference in (".", ".."):
            raise BadKeyError(f"bucket reference must be a simple name like 'in' (no '/', not '..'), got {reference!r}")
        return self._resolve_bucket(reference)

    def open_read(self, bucket: str, object_key: str) -> BinaryIO:
        """A streaming reader: bytes arrive as the caller reads them, never all at once."""
        try:
            response = self.client.get_object(Bucket=bucket, Key=object_key)
        except Exception as exc:
            raise StorageError(f"cannot read s3://{bucket}/{object_key}: {describe_error(exc)}") from exc
        raw = _S3Body(response["Body"], f"s3://{bucket}/{object_key}", self._on_read)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=READ_BUFFER))

    def upload(self, path: str, bucket: str, object_key: str, size: int) -> None:
        """One PUT on this thread for a small file; boto3's managed multipart transfer for a big one
        (a transfer manager per file costs a thread pool: milliseconds a message for small objects)."""
        try:
            if size < MULTIPART_THRESHOLD:
                with open(path, "rb") as body:
                    self.client.put_object(Bucket=bucket, Key=object_key, Body=body)
            else:
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD, max_concurrency=UPLOAD_CONCURRENCY
                )
                self.client.upload_file(path, bucket, object_key, Config=config)
        except Exception as exc:
            raise StorageError(f"cannot upload s3://{bucket}/{object_key}: {describe_error(exc)}") from exc


class _S3Body(io.RawIOBase):
    """The S3 body stream as a raw file, with storage errors translated.

    Wrapped in a BufferedReader it is a complete binary file: read, readline,
    iteration, TextIOWrapper, shutil.copyfileobj all work without loading the object.
    """

    def __init__(self, body: Any, name: str, on_read: Callable[[int], None] | None) -> None:
        super().__init__()
        self._body = body
        self._on_read = on_read
        self.name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except Exception as exc:
            raise StorageError(f"reading {self.name} failed: {describe_error(exc)}") from exc
        buffer[: len(data)] = data
        if self._on_read is not None:
            self._on_read(len(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@dataclass
class FileSession:
    """The files one message touches: opened readers, staged writers, their uploads."""

    store: ObjectStore
    staging_root: str
    _readers: list[BinaryIO] = field(default_factory=list)
    _writers: dict[tuple[str, str], tuple[str, IO[bytes]]] = field(default_factory=dict)
    _staging: str | None = None

    def read_file(self, key: str, id: int) -> BinaryIO:
        bucket = self.store.bucket(key)
        reader = self.store.open_read(bucket, _object_key(id))
        self._readers.append(reader)
        return reader

    def write_file(self, key: str, id: int) -> BinaryIO:
        bucket = self.store.bucket(key)
        object_key = _object_key(id)
        if self._staging is None:
            self._staging = tempfile.mkdtemp(prefix="slingshot-", dir=self.staging_root)
        path = os.path.join(self._staging, f"{len(self._writers)}-{object_key}")
        previous = self._writers.get((bucket, object_key))
        if previous is not None:
            previous[1].close()
            path = previous[0]
        handle = open(path, "wb")  # noqa: SIM115 - closed in close_all
        self._writers[(bucket, object_key)] = (path, handle)
        return cast(BinaryIO, handle)

    def close_all(self) -> None:
        for reader in self._readers:
            try:
                reader.close()
            except Exception:  # a reader's close must not stop the others
                log.debug("closing a reader failed", exc_info=True)
        self._readers.clear()
        for _, handle in self._writers.values():
            handle.close()

    def upload_all(self) -> int:
        """Upload every staged file; the number of bytes sent."""
        total = 0
        for (bucket, object_key), (path, _) in self._writers.items():
            size = os.path.getsize(path)
            self.store.upload(path, bucket, object_key, size)
            total += size
        return total

    def discard(self) -> None:
        """Close everything and remove staging; safe to call twice and after errors."""
        try:
            self.close_all()
        finally:
            self._writers.clear()
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None


def _object_key(id: int) -> str:
    if not is_u64(id):
        raise BadKeyError(f"object id must be an int in 0..2^64-1, got {id!r}")
    return str(id)


def describe_error(exc: Exception) -> str:
    """botocore errors name the code and operation; credentials never appear in them."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
