"""PostgreSQL through SQLAlchemy: one engine per process, one transaction per message.

Each worker thread keeps its connection between messages, so an idle worker pays no
round trip per message; after a quiet spell the connection goes back through the
pool's pre-ping, so a restarted PostgreSQL is noticed before a message depends on it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

log = logging.getLogger(__name__)

#: Seconds a held connection may sit idle before it is re-checked with a ping.
IDLE_RECHECK = 5.0


class Database:
    def __init__(self, url: Callable[[], str | URL], pool_size: int = 1, application_name: str = "slingshot") -> None:
        """``application_name`` shows in ``pg_stat_activity``: ``slingshot SERVICE``."""
        self._url = url
        self._application_name = application_name
        self._pool_size = pool_size
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from sqlalchemy import create_engine
                    from sqlalchemy.engine import make_url

                    url = make_url(self._url())
                    options: dict[str, Any] = {}
                    if url.get_backend_name() == "postgresql":
                        options["connect_args"] = {"connect_timeout": 10, "application_name": self._application_name}
                    if url.get_backend_name() != "sqlite":
                        options.update(pool_size=self._pool_size, max_overflow=2, pool_recycle=3600)
                    self._engine = create_engine(url, pool_pre_ping=True, **options)
        return self._engine

    def begin(self) -> Transaction:
        """This thread's connection for one message.

        Its transaction begins with the first statement (SQLAlchemy's autobegin), so a
        message that never touches the database costs no round trip at all.
        """
        conn: Connection | None = getattr(self._local, "connection", None)
        last_used: float = getattr(self._local, "last_used", 0.0)
        try:
            if conn is not None and (conn.invalidated or conn.closed or time.monotonic() - last_used > IDLE_RECHECK):
                conn.close()
                conn = None
            if conn is None:
                conn = self.engine.connect()
                self._local.connection = conn
            elif conn.in_transaction():
                conn.rollback()  # left open by a message that ended abnormally
            return Transaction(conn, self._touch)
        except sqlalchemy_error() as exc:
            self._forget()
            raise DatabaseError(f"cannot open a database transaction: {describe_error(exc)}") from exc

    def _touch(self) -> None:
        self._local.last_used = time.monotonic()

    def _forget(self) -> None:
        conn = getattr(self._local, "connection", None)
        self._local.connection = None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                log.debug("dropping a broken connection failed", exc_info=True)

    def check(self) -> None:
        """Connect once now (for start-up checks); raises DatabaseError."""
        self.begin().rollback()

    def dispose(self) -> None:
        self._forget()
        if self._engine is not None:
            self._engine.dispose()


class Transaction:
    """One message's transaction: committed only after its files are uploaded."""

    def __init__(self, connection: Connection, on_end: Callable[[], None]) -> None:
        self.connection = connection
        self._on_end = on_end

    def commit(self) -> None:
        """Commit what ``process`` did, including a transaction it began itself."""
        try:
            if self.connection.in_transaction():
                self.connection.commit()
        except sqlalchemy_error() as exc:
            self.rollback()
            raise DatabaseError(f"commit failed: {describe_error(exc)}") from exc
        finally:
            self._on_end()

    def rollback(self) -> None:
        """Undo everything; also frees a connection whose commit failed (no transaction, yet not reusable)."""
        try:
            self.connection.rollback()
        except Exception:  # the connection is already gone; the pool replaces it
            log.debug("rollback failed", exc_info=True)
            try:
                self.connection.invalidate()
            except Exception:
                log.debug("invalidate failed", exc_info=True)
        finally:
            self._on_end()


@functools.cache
def sqlalchemy_error() -> type[Exception]:
    """SQLAlchemy's base error, imported on first failure: an ``import`` statement on the
    per-message path costs 0.6 µs each time, even once the module is loaded."""
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError


def describe_error(exc: Exception) -> str:
    """The driver's first line; SQLAlchemy's message can carry SQL but never the password."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0] if text else ''}"
