"""The runtime's error hierarchy and process exit codes.

Every outside system's client exceptions are translated into one of these (with
``raise ... from``), so callers handle one family and messages never carry secrets.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes; documented in docs/operations.md and docs/failure-handling.md."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    SECRET = 4
    BROKER = 5
    STORAGE = 6
    DATABASE = 7
    HANDLER = 8
    DRAIN_TIMEOUT = 9
    HANDLER_LOAD = 10
    INTERRUPTED = 130


class SlingshotError(Exception):
    """Base of every error the runtime raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE
    #: Permanent errors are not retried: the message goes straight to the dead-letter queue.
    permanent: bool = False


class ConfigError(SlingshotError):
    """The config service is unreachable or returned a document we cannot use."""

    exit_code = ExitCode.CONFIG


class SecretError(SlingshotError):
    """A pass entry is missing or cannot be decrypted. Names the entry, never the value."""

    exit_code = ExitCode.SECRET


class StorageError(SlingshotError):
    """Object storage failed (read, upload, bucket resolution)."""

    exit_code = ExitCode.STORAGE


class DatabaseError(SlingshotError):
    """PostgreSQL failed (connect, commit)."""

    exit_code = ExitCode.DATABASE


class BrokerError(SlingshotError):
    """RabbitMQ failed (connect, declare, publish not confirmed)."""

    exit_code = ExitCode.BROKER


class HandlerError(SlingshotError):
    """The user's ``process`` raised; the original exception is the ``__cause__``."""

    exit_code = ExitCode.HANDLER


class MessageError(SlingshotError):
    """A message that can never succeed: retrying it would only loop."""

    permanent = True


class BadRequestError(MessageError):
    """The inbound body is not a u64."""


class BadOutputError(MessageError):
    """``process`` produced an output that is not a ``(u64, case)`` pair."""


class UnroutableError(MessageError):
    """An output's case has no route in the service's config."""


class BadKeyError(MessageError):
    """A bucket reference passed to read_file/write_file is unusable."""
