"""slingshot: one ``process`` function becomes a queue-driven production worker."""

from __future__ import annotations

import logging
from typing import Any

from .errors import (
    BadOutputError,
    BadRequestError,
    BrokerError,
    ConfigError,
    DatabaseError,
    ExitCode,
    HandlerError,
    SecretError,
    SlingshotError,
    StorageError,
    UnroutableError,
)
from .settings import Settings

__version__ = "0.1.0"


class Microservice:
    """The original API: ``Microservice(name, config_host, process).start()`` blocks and serves."""

    def __init__(self, name: str, config_host: str, process: Any, **settings: Any) -> None:
        self.settings = Settings.load(name, config_host, **settings)
        self.process = process

    def start(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after a clean drain, exits non-zero otherwise."""
        from .logs import configure_logging
        from .service import Service

        configure_logging(self.settings.log_level, self.settings.log_format, self.settings.service)
        code = Service(self.settings, self.process).serve()
        if code != ExitCode.OK:
            raise SystemExit(int(code))


__all__ = [
    "BadOutputError",
    "BadRequestError",
    "BrokerError",
    "ConfigError",
    "DatabaseError",
    "ExitCode",
    "HandlerError",
    "Microservice",
    "SecretError",
    "Settings",
    "SlingshotError",
    "StorageError",
    "UnroutableError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
