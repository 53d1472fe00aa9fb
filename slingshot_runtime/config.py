"""Client of the config service (protocol: docs/protocol.md).

Every document is validated into a typed record here, so a malformed answer fails at
start with the URL and the field, not later inside a message.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from .errors import ConfigError
from .routing import CaseKey, case_key

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

RESERVED_NAMES = frozenset({"rabbitmq", "object-storage", "postgres"})


@dataclass(frozen=True)
class ServiceConfig:
    inbound: str
    routes: Mapping[CaseKey, tuple[str, ...]]

    @property
    def outbound_queues(self) -> tuple[str, ...]:
        return tuple(sorted({q for queues in self.routes.values() for q in queues}))


@dataclass(frozen=True)
class RabbitConfig:
    host: str
    port: int
    username: str
    password: str
    vhost: str = "/"
    tls: bool = False

    def __repr__(self) -> str:  # keeps the password out of logs and tracebacks
        return f"RabbitConfig(host={self.host!r}, port={self.port}, username={self.username!r}, vhost={self.vhost!r}, tls={self.tls})"


@dataclass(frozen=True)
class StorageConfig:
    endpoint: str
    region: str
    #: GNU pass entry names, not the keys themselves.
    access_key_entry: str
    secret_key_entry: str


@dataclass(frozen=True)
class PostgresConfig:
    host: str
    port: int
    database: str
    username: str
    #: GNU pass entry name of the password.
    password_entry: str

    def url(self, password: str) -> URL:
        """The SQLAlchemy URL, once the password entry has been resolved."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2", username=self.username, password=password, host=self.host, port=self.port, database=self.database
        )


def base_url(host: str) -> str:
    """``https://HOST`` unless HOST already names a scheme."""
    host = host.strip().rstrip("/")
    if "://" in host:
        scheme = host.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"config host {host!r}: scheme must be http or https")
        return host
    return f"https://{host}"


class ConfigClient:
    """Fetches and validates documents; one HTTP session, TLS verified (REQUESTS_CA_BUNDLE honoured)."""

    def __init__(self, host: str, service: str, timeout: float = 10.0) -> None:
        if service in RESERVED_NAMES or not service or "/" in service:
            raise ConfigError(f"invalid service name {service!r}")
        self.base = base_url(host)
        self.service = service
        self.timeout = timeout
        self._session = requests.Session()
        self._buckets: dict[str, str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._session.close()

    def url(self, *segments: str) -> str:
        return "/".join([self.base, *(quote(s, safe="") for s in segments)])

    def get(self, *segments: str) -> Any:
        """GET one document; any failure is a ConfigError naming the URL."""
        url = self.url(*segments)
        try:
            response = self._session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConfigError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ConfigError(f"GET {url} returned HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            return _PlainText(response.text)

    def get_with_retries(self, attempts: int, first_delay: float = 0.5) -> ServiceConfig:
        """The first document, retried with backoff: at start the config service may still be coming up."""
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                return self.service_config()
            except ConfigError as exc:
                if attempt == attempts or not _is_transient(exc):
                    raise
                log.warning("config service not reachable (attempt %d/%d): %s", attempt, attempts, exc)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def service_config(self) -> ServiceConfig:
        url = self.url(self.service)
        doc = _require_object(self.get(self.service), url)
        inbound = _field(doc, "in", str, url)
        out = doc.get("out", [])
        if not isinstance(out, list):
            raise ConfigError(f"{url}: field 'out' must be a list, got {type(out).__name__}")
        routes: dict[CaseKey, tuple[str, ...]] = {}
        for index, entry in enumerate(out):
            where = f"out[{index}]"
            if not isinstance(entry, dict) or "case" not in entry:
                raise ConfigError(f"{url}: field '{where}' must be an object with 'case' and 'queues'")
            try:
                key = case_key(entry["case"])
            except TypeError:
                raise ConfigError(f"{url}: field '{where}.case' must be a boolean, integer or string, got {entry['case']!r}") from None
            queues = entry.get("queues")
            if not isinstance(queues, list) or not all(isinstance(q, str) and q for q in queues):
                raise ConfigError(f"{url}: field '{where}.queues' must be a list of queue names")
            routes[key] = tuple(dict.fromkeys([*routes.get(key, ()), *queues]))
        return ServiceConfig(inbound=inbound, routes=routes)

    def rabbitmq(self) -> RabbitConfig:
        url = self.url("rabbitmq")
        doc = _require_object(self.get("rabbitmq"), url)
        return RabbitConfig(
            host=_field(doc, "host", str, url),
            port=_port(doc, url, 5672),
            username=_field(doc, "username", str, url),
            password=_field(doc, "password", str, url, secret=True),
            vhost=_optional(doc, "vhost", str, url, "/"),
            tls=_optional(doc, "tls", bool, url, False),
        )

    def object_storage(self) -> StorageConfig:
        url = self.url("object-storage")
        doc = _require_object(self.get("object-storage"), url)
        host = _field(doc, "host", str, url)
        return StorageConfig(
            endpoint=host if "://" in host else f"https://{host}",
            region=_optional(doc, "region", str, url, "us-east-1"),
            access_key_entry=_field(doc, "access-key", str, url),
            secret_key_entry=_field(doc, "secret-key", str, url),
        )

    def postgres(self) -> PostgresConfig:
        url = self.url("postgres")
        doc = _require_object(self.get("postgres"), url)
        return PostgresConfig(
            host=_field(doc, "host", str, url),
            port=_port(doc, url, 5432),
            database=_field(doc, "database", str, url),
            username=_field(doc, "username", str, url),
            password_entry=_field(doc, "password", str, url),
        )

    def bucket(self, reference: str) -> str:
        """The real bucket behind a reference, fetched once per reference."""
        with self._lock:
            cached = self._buckets.get(reference)
        if cached is not None:
            return cached
        url = self.url(self.service, reference)
        value = self.get(self.service, reference)
        name = str(value) if isinstance(value, _PlainText) else value
        if isinstance(name, str):
            name = name.strip()
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{url}: expected a bucket name as a JSON string, got {value!r}")
        with self._lock:
            self._buckets[reference] = name
        return name


class _PlainText(str):
    """A non-JSON body; only bucket lookups accept it."""


def _is_transient(exc: ConfigError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, (requests.ConnectionError, requests.Timeout)) or " returned HTTP 5" in str(exc)


def _require_object(doc: Any, url: str) -> dict[str, Any]:
    if isinstance(doc, _PlainText) or not isinstance(doc, dict):
        raise ConfigError(f"{url}: expected a JSON object, got {_describe(doc)}")
    return doc


def _field(doc: Mapping[str, Any], name: str, kind: type, url: str, secret: bool = False) -> Any:
    if name not in doc:
        raise ConfigError(f"{url}: missing field '{name}'")
    value = doc[name]
    if not isinstance(value, kind) or (kind is str and not value):
        got = type(value).__name__ if secret else _describe(value)
        raise ConfigError(f"{url}: field '{name}' must be a non-empty {kind.__name__}, got {got}")
    return value


def _optional(doc: Mapping[str, Any], name: str, kind: type, url: str, default: Any) -> Any:
    return default if doc.get(name) is None else _field(doc, name, kind, url)


def _port(doc: Mapping[str, Any], url: str, default: int) -> int:
    value = doc.get("port", default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"{url}: field 'port' must be a TCP port number, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, _PlainText):
        return f"non-JSON text {str(value)[:40]!r}"
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return json.dumps(value)[:60] if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
