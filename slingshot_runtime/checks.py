"""``entrypoint check``: resolve settings, handler, secrets, config and every connection once.

Each step prints one line, ``NAME: ok (detail)`` or ``NAME: FAILED: reason``; a step whose
prerequisite failed is ``skipped``. The exit code is the named :class:`ExitCode` of the
first failure, so a Kubernetes Job or a CI step can tell "secret" from "broker". Secret
values are never printed: a secret line says only that the entry decrypted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from .errors import BrokerError, DatabaseError, ExitCode, SlingshotError, StorageError

if TYPE_CHECKING:
    from .config import ConfigClient, PostgresConfig, RabbitConfig, ServiceConfig, StorageConfig
    from .settings import Settings

T = TypeVar("T")
DEFAULT_HANDLER = "/app/handler.py"


class Report:
    """Runs steps, prints a line for each, remembers the first failure's exit code."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.exit_code = ExitCode.OK
        self.failed: list[str] = []

    def step(self, name: str, action: Callable[[], T], describe: Callable[[T], str]) -> T | None:
        try:
            value = action()
        except SlingshotError as exc:
            self._fail(name, str(exc), exc.exit_code)
            return None
        except Exception as exc:  # a check must report, never crash
            self._fail(name, f"{type(exc).__name__}: {exc}", ExitCode.FAILURE)
            return None
        self._print(f"{name}: ok ({describe(value)})")
        return value

    def skip(self, name: str, needs: str) -> None:
        self._print(f"{name}: skipped (needs {needs})")

    def _fail(self, name: str, reason: str, code: ExitCode) -> None:
        self.failed.append(name)
        if self.exit_code == ExitCode.OK:
            self.exit_code = code
        self._print(f"{name}: FAILED: {reason}")

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def run_checks(
    environ: Mapping[str, str] | None = None,
    buckets: Sequence[str] = (),
    out: TextIO | None = None,
) -> ExitCode:
    """Check everything the service needs at start and at its first message; the first failure's code."""
    from .config import ConfigClient
    from .loader import load_handler
    from .secrets import discard_gnupghome, prepare_secrets
    from .settings import Settings

    env = dict(os.environ if environ is None else environ)
    report = Report(out or sys.stdout)
    settings = report.step(
        "settings", lambda: Settings.load(environ=env), lambda s: f"service {s.service!r}, config host {s.config_host}"
    )
    handler = env.get("SLINGSHOT_HANDLER") or DEFAULT_HANDLER
    report.step("handler", lambda: load_handler(handler), lambda _: handler)
    pass_env = report.step("gpg keys", lambda: prepare_secrets(env), _describe_keys)
    try:
        if pass_env is not None:
            env.update(pass_env)
        if settings is None:
            for name in ("config service", "secrets", "rabbitmq", "object storage", "postgres"):
                report.skip(name, "settings")
            return report.exit_code
        client = ConfigClient(settings.config_host, settings.service, settings.config_timeout)
        try:
            _check_services(report, settings, client, env if pass_env is not None else None, buckets)
        finally:
            client.close()
    finally:
        if pass_env is not None:
            discard_gnupghome(pass_env["GNUPGHOME"])
    return report.exit_code


def _check_services(
    report: Report, settings: Settings, client: ConfigClient, pass_env: dict[str, str] | None, buckets: Sequence[str]
) -> None:
    """Config documents, then secrets, then the connections that need them."""
    service = report.step(f"config {settings.service}", client.service_config, _describe_service)
    rabbit = report.step("config rabbitmq", client.rabbitmq, lambda r: f"{r.host}:{r.port} vhost {r.vhost}")
    storage = report.step("config object-storage", client.object_storage, lambda s: f"{s.endpoint} ({s.region})")
    postgres: PostgresConfig | None = None
    if not settings.database_url:
        postgres = report.step("config postgres", client.postgres, lambda p: f"{p.host}:{p.port}/{p.database} as {p.username}")

    def secret(entry: str) -> str | None:
        from .secrets import pass_show

        name = f"secret {entry}"
        if pass_env is None:
            report.skip(name, "gpg keys")
            return None
        return report.step(name, lambda: pass_show(entry, pass_env), lambda _: "decrypted")

    access = secret_key = password = None
    if storage is not None:
        access = secret(storage.access_key_entry)
        secret_key = secret(storage.secret_key_entry)
    if postgres is not None:
        password = secret(postgres.password_entry)

    if rabbit is None or service is None:
        report.skip("rabbitmq", "its config")
    else:
        report.step("rabbitmq", lambda: _check_rabbitmq(rabbit, service, settings), str)

    if storage is None or access is None or secret_key is None:
        report.skip("object storage", "its config and secrets")
    else:
        report.step("object storage", lambda: _check_storage(storage, access, secret_key, client, buckets), str)

    if settings.database_url:
        report.step("postgres", lambda: _check_database(settings.database_url or ""), str)
    elif postgres is None or password is None:
        report.skip("postgres", "its config and password")
    else:
        report.step("postgres", lambda: _check_database(postgres.url(password)), str)


def _describe_keys(pass_env: dict[str, str]) -> str:
    return f"imported into {pass_env['GNUPGHOME']}, store {pass_env['PASSWORD_STORE_DIR']}"


def _describe_service(config: ServiceConfig) -> str:
    return f"in {config.inbound!r}, {len(config.routes)} cases to {len(config.outbound_queues)} queues"


def _check_rabbitmq(rabbit: RabbitConfig, service: ServiceConfig, settings: Settings) -> str:
    import pika
    import pika.exceptions

    from .broker import connection_parameters, describe_error

    params = connection_parameters(rabbit, settings.heartbeat, f"slingshot {settings.service} check")
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise BrokerError(f"cannot connect to {rabbit.host}:{rabbit.port}: {describe_error(exc)}") from exc
    try:
        channel = connection.channel()
        try:
            declared = channel.queue_declare(service.inbound, passive=True).method
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise BrokerError(f"queue {service.inbound!r}: {describe_error(exc)}") from exc
            return f"connected to {rabbit.host}:{rabbit.port}; queue {service.inbound!r} not declared yet (the service declares it)"
        return (
            f"connected to {rabbit.host}:{rabbit.port}; queue {service.inbound!r}: "
            f"{declared.message_count} ready, {declared.consumer_count} consumers"
        )
    except pika.exceptions.AMQPError as exc:
        raise BrokerError(f"{rabbit.host}:{rabbit.port}: {describe_error(exc)}") from exc
    finally:
        if connection.is_open:
            connection.close()


def _check_storage(storage: StorageConfig, access: str, secret: str, client: ConfigClient, buckets: Sequence[str]) -> str:
    """List buckets (an AccessDenied still proves the keys are valid), then head each named reference."""
    from .storage import ObjectStore, S3Credentials, describe_error

    credentials = S3Credentials(storage.endpoint, storage.region, access, secret)
    store = ObjectStore(lambda: credentials, client.bucket)
    try:
        listed: Any = store.client.list_buckets()
        summary = f"{storage.endpoint}: {len(listed.get('Buckets', []))} buckets visible"
    except Exception as exc:
        if _error_code(exc) != "AccessDenied":
            raise StorageError(f"{storage.endpoint}: {describe_error(exc)}") from exc
        summary = f"{storage.endpoint}: keys accepted (listing buckets is not allowed)"
    for reference in buckets:
        bucket = store.bucket(reference)
        try:
            store.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise StorageError(f"bucket {reference!r} ({bucket}): {describe_error(exc)}") from exc
        summary += f"; {reference} -> {bucket} ok"
    return summary


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _check_database(url: Any) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    from .database import Database, describe_error

    database = Database(lambda: url, application_name="slingshot check")
    try:
        transaction = database.begin()
        try:
            value = transaction.connection.exec_driver_sql("SELECT 1").scalar()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"SELECT 1 failed: {describe_error(exc)}") from exc
        finally:
            transaction.rollback()
        if value != 1:
            raise DatabaseError(f"SELECT 1 returned {value!r}")
        backend = database.engine.url
        return f"SELECT 1 on {backend.host}:{backend.port}/{backend.database}"
    finally:
        database.dispose()
