"""One typed settings object, built from arguments and ``SLINGSHOT_*`` variables."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "SLINGSHOT_"


@dataclass(frozen=True)
class Settings:
    """Everything the worker reads from its environment, validated once at start."""

    service: str
    config_host: str
    #: Messages the broker may push ahead of processing (``basic.qos``).
    prefetch: int = 20
    #: AMQP heartbeat in seconds; ``None`` accepts the broker's proposal.
    heartbeat: int | None = None
    #: Seconds to finish the message in hand after SIGTERM before giving it back.
    drain_timeout: float = 25.0
    #: Attempts before a failing message is dead-lettered.
    max_attempts: int = 5
    #: First retry delay in seconds; doubles per attempt, capped at ``max_retry_delay``.
    retry_delay: float = 5.0
    max_retry_delay: float = 900.0
    #: ``decimal`` (ASCII digits, the default) or ``be64`` (8-byte big-endian) message bodies.
    body_format: str = "decimal"
    #: Overrides the ``/postgres`` document when set (tests, local work).
    database_url: str | None = None
    #: Where per-message staging directories are created.
    staging_dir: str = field(default_factory=tempfile.gettempdir)
    #: Seconds for each config-service request.
    config_timeout: float = 10.0
    #: Attempts to reach the config service at start before giving up.
    config_attempts: int = 5
    #: Warn when one message runs longer than this (RabbitMQ's consumer_timeout is 30 min).
    slow_handler_warning: float = 25 * 60.0
    log_level: str = "INFO"
    #: ``json`` (one object per line), ``text``, or ``auto``: JSON inside a container.
    log_format: str = "auto"
    #: Port of /healthz, /readyz and /metrics; 0 turns the server off.
    health_port: int = 8080
    #: Seconds without a consumer (after a reconnect) before /healthz fails.
    liveness_grace: float = 60.0
    #: Messages processed at once, each on its own thread with its own DB connection.
    concurrency: int = 1
    #: Exit cleanly after this many idle seconds (KEDA ScaledJob workers).
    exit_when_idle: float | None = None
    #: Exit cleanly after this many messages.
    max_messages: int | None = None
    #: Declare an absent inbound queue as a quorum queue that dead-letters a message to
    #: ``{in}.dlq`` after this many redeliveries: the guard against a message that kills the
    #: worker process (an exception never does). Counts exactly with ``prefetch`` 1.
    delivery_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.service:
            raise ConfigError("the service name is empty (argument or SLINGSHOT_SERVICE)")
        if not self.config_host:
            raise ConfigError("the config host is empty (argument or SLINGSHOT_CONFIG_HOST)")
        for name in ("prefetch", "max_attempts", "config_attempts", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SLINGSHOT_{name.upper()} must be at least 1, got {getattr(self, name)}")
        for name in ("drain_timeout", "retry_delay", "max_retry_delay", "config_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SLINGSHOT_{name.upper()} must not be negative, got {getattr(self, name)}")
        if self.log_format not in ("auto", "json", "text"):
            raise ConfigError(f"SLINGSHOT_LOG_FORMAT must be 'auto', 'json' or 'text', got {self.log_format!r}")
        if not 0 <= self.health_port < 65536:
            raise ConfigError(f"SLINGSHOT_HEALTH_PORT must be a TCP port or 0 (off), got {self.health_port}")
        for name in ("max_messages", "delivery_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"SLINGSHOT_{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.exit_when_idle is not None and self.exit_when_idle <= 0:
            raise ConfigError(f"SLINGSHOT_EXIT_WHEN_IDLE must be positive, got {self.exit_when_idle}")
        if self.body_format not in ("decimal", "be64"):
            raise ConfigError(f"SLINGSHOT_BODY_FORMAT must be 'decimal' or 'be64', got {self.body_format!r}")

    @classmethod
    def load(
        cls,
        service: str | None = None,
        config_host: str | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """``SLINGSHOT_*`` variables fill what the arguments leave open.

        The one exception is documented in docs/protocol.md: ``SLINGSHOT_CONFIG_HOST``
        overrides the argument, so one image can be pointed at another environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        if service:
            values["service"] = service
        if config_host is not None and "config_host" not in values:
            values["config_host"] = config_host
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("service", "")
        values.setdefault("config_host", "")
        return cls(**values)


def _parse(name: str, type_name: str, raw: str) -> Any:
    variable = ENV_PREFIX + name.upper()
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{variable} must be a number, got {raw!r}") from None
    return raw
