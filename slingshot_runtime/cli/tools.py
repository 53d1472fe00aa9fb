"""``slingshot invoke``, ``send`` and ``peek``: try a handler offline, feed a queue, look into one.

``invoke`` runs ``process`` once through :class:`slingshot_runtime.testing.Harness` (the
worker's own Executor: same validation, routing and upload-then-commit order) with local
files for S3 and SQLite or any SQLAlchemy URL for the database. ``send`` and ``peek`` talk
to RabbitMQ directly. Every failure is one ``error: ...`` line on stderr and a non-zero exit
(2 bad input, 5 broker, the runtime's codes otherwise: docs/cli.md).
"""

from __future__ import annotations

import datetime
import json
import time
import traceback
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

import click
import pika
import pika.exceptions

from ..broker import connect_blocking
from ..broker import describe_error as describe_amqp_error
from ..dlq import jsonable
from ..errors import ConfigError, ExitCode, SlingshotError, StorageError
from ..loader import load_handler
from ..pipeline import ProcessFn
from ..routing import U64_MAX, Case, case_key, encode_id, format_case, is_u64
from ..sysmap import SystemMapError, load_system_map
from ..testing import Harness
from .dlq import url_parameters

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
NOT_FOUND = 404


class Failure(click.ClickException):
    """A clear one-line ``error: ...`` on stderr and the given exit code."""

    def __init__(self, message: str, exit_code: int = ExitCode.FAILURE) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = int(exit_code)

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def amqp_url_option(command: Any) -> Any:
    return click.option(
        "--amqp-url",
        default=DEFAULT_AMQP_URL,
        show_default=True,
        envvar="SLINGSHOT_AMQP_URL",
        show_envvar=True,
        metavar="URL",
        help="RabbitMQ as amqp://USER:PASSWORD@HOST:PORT/VHOST (%2F is the vhost /).",
    )(command)


def parse_request(text: str, what: str = "REQUEST") -> int:
    """A u64 written in decimal; anything else is a usage error naming the value."""
    value = int(text) if text.isascii() and text.isdigit() else None
    if value is None or not is_u64(value):
        raise Failure(f"{what} must be a u64 (0..{U64_MAX}), got {text!r}", ExitCode.USAGE)
    return value


def parse_case(text: str) -> Case:
    """``true``/``false`` → bool, digits → int, ``"quoted"`` → str, any other text → str."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (bool, int, str)):
        return value
    raise Failure(f"case {text!r} must be true/false, an integer or a string (quote it: '\"{text}\"')", ExitCode.USAGE)


def parse_route(text: str) -> tuple[Case, str]:
    case, sep, queue = text.rpartition("=")
    if not sep or not case or not queue:
        raise Failure(f"--route {text!r} must look like CASE=QUEUE (e.g. true=next-in, 2=big, '\"1\"'=text-one)", ExitCode.USAGE)
    return parse_case(case), queue


def parse_input(text: str, request: int) -> tuple[str, int, Path]:
    """``REF=PATH`` (the object (REF, REQUEST)) or ``REF/ID=PATH``."""
    target, sep, path = text.partition("=")
    reference, slash, object_id = target.partition("/")
    if not sep or not reference or not path:
        raise Failure(f"--input {text!r} must look like REF=PATH or REF/ID=PATH (e.g. in=./sample.txt)", ExitCode.USAGE)
    key = parse_request(object_id, f"--input {text!r}: ID") if slash else request
    file = Path(path)
    if not file.exists() or file.is_dir():
        raise Failure(f"--input {text!r}: {path!r} is not a file", ExitCode.USAGE)
    return reference, key, file


# --------------------------------------------------------------------------- invoke


@click.command(short_help="Call a handler's process once, offline; show outputs and routes.")
@click.argument("handler", metavar="HANDLER")
@click.argument("request", metavar="REQUEST")
@click.option(
    "--input", "-i", "inputs", multiple=True, metavar="REF[/ID]=PATH", envvar="SLINGSHOT_INVOKE_INPUT", show_envvar=True,
    help="PATH becomes the object read_file(REF, REQUEST) (or REF, ID) reads. Repeatable.",
)
@click.option(
    "--output", "-o", metavar="DIR", envvar="SLINGSHOT_INVOKE_OUTPUT", show_envvar=True,
    help="Copy what process wrote to DIR/REF/ID (otherwise it is listed, then discarded).",
)
@click.option(
    "--database-url", default="sqlite://", show_default=True, metavar="URL", envvar="SLINGSHOT_DATABASE_URL", show_envvar=True,
    help="SQLAlchemy URL of the connection process gets; committed when process succeeds.",
)
@click.option(
    "--route", "-r", "routes", multiple=True, metavar="CASE=QUEUE", envvar="SLINGSHOT_INVOKE_ROUTE", show_envvar=True,
    help="Route CASE to QUEUE (true/false: bool, digits: int, \"quoted\" or other text: str). Repeatable.",
)
@click.option(
    "--system", metavar="SYSTEM.yaml", envvar="SLINGSHOT_SYSTEM_MAP", show_envvar=True,
    help="Take routes and bucket names of --service from this system map.",
)
@click.option("--service", metavar="NAME", envvar="SLINGSHOT_SERVICE", show_envvar=True, help="The service in --system.")
@click.option("--json", "as_json", is_flag=True, envvar="SLINGSHOT_INVOKE_JSON", show_envvar=True, help="Print one JSON object.")
@click.option(
    "--traceback", "show_traceback", is_flag=True, envvar="SLINGSHOT_TRACEBACK", show_envvar=True,
    help="On failure, print the traceback after the error line.",
)
def invoke(
    handler: str,
    request: str,
    inputs: Sequence[str],
    output: str | None,
    database_url: str,
    routes: Sequence[str],
    system: str | None,
    service: str | None,
    as_json: bool,
    show_traceback: bool,
) -> None:
    """Call process(REQUEST, ...) from HANDLER (PATH.py or PATH.py:FUNCTION) once, without a broker
    or S3: local files stand in for objects, SQLite (or --database-url) for PostgreSQL.

    Prints each output (id, case) and the queues it would be published to, and what process wrote.
    Without --route or --system every valid case is accepted and goes nowhere.

    \b
    slingshot invoke examples/pipeline/ingest/handler.py 7 --input raw=review.txt --output out
    slingshot invoke handler.py 7 -i in=a.txt --route true=next-in --route 0=retry-later
    slingshot invoke handler.py 7 -i in=a.txt --system system.yaml --service classify
    """
    request_id = parse_request(request)
    route_pairs = [parse_route(text) for text in routes]
    files = [parse_input(text, request_id) for text in inputs]
    buckets: dict[str, str] | None = None
    if system is not None:
        system_routes, buckets = _service_from_map(system, service)
        route_pairs = system_routes + route_pairs
    routed = system is not None or bool(route_pairs)
    try:
        process = load_handler(handler)
    except SlingshotError as exc:
        _fail_with(exc, show_traceback)
    written: list[tuple[str, int]] = []
    traced = _traced(process, written, buckets, service, system)
    table = [(case, [queue]) for case, queue in route_pairs] if routed else None
    with Harness(traced, routes=table, buckets=buckets, database_url=database_url) as harness:
        try:
            for reference, object_id, path in files:
                harness.put(reference, object_id, _read(path))
            started = time.monotonic()
            result = harness.invoke(request_id)
            elapsed = time.monotonic() - started
        except SlingshotError as exc:
            _fail_with(exc, show_traceback)
        outputs: list[dict[str, Any]] = [
            {"id": output_id, "case": case, "queues": list(harness.executor.routes.get(case_key(case), ())) if routed else None}
            for output_id, case in result.outputs
        ]
        kept = [_keep(harness, reference, object_id, output) for reference, object_id in dict.fromkeys(written)]
    if as_json:
        click.echo(json.dumps({"request": request_id, "seconds": round(elapsed, 6), "outputs": outputs, "written": kept}, indent=2))
        return
    click.echo(f"process({request_id}) returned {len(outputs)} output(s) in {1000 * elapsed:.1f} ms")
    for item in outputs:
        queues = item["queues"]
        where = "not routed (no --route or --system)" if queues is None else ", ".join(queues) or "no queue (dropped)"
        click.echo(f"  {item['id']}  case {format_case(item['case'])}  ->  {where}")
    if kept:
        click.echo("written:")
    for entry in kept:
        target = entry["path"] or "discarded (use --output DIR to keep it)"
        click.echo(f"  {entry['reference']}/{entry['id']}  {entry['bytes']} bytes  ->  {target}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror or exc}", ExitCode.USAGE) from exc


def _service_from_map(path: str, service: str | None) -> tuple[list[tuple[Case, str]], dict[str, str]]:
    if not service:
        raise Failure("--system needs --service NAME (or SLINGSHOT_SERVICE): whose routes and buckets to use", ExitCode.USAGE)
    try:
        system = load_system_map(path)
    except SystemMapError as exc:
        raise Failure(f"{exc} (run: slingshot sysmap check {path})", ExitCode.CONFIG) from exc
    spec = system.services.get(service)
    if spec is None:
        known = ", ".join(system.services) or "none"
        raise Failure(f"{path} has no service {service!r} (services: {known})", ExitCode.USAGE)
    routes = [(route["case"], queue) for route in spec["out"] for queue in route["queues"]]
    return routes, dict(spec["buckets"])


def _traced(
    process: ProcessFn, written: list[tuple[str, int]], buckets: dict[str, str] | None, service: str | None, system: str | None
) -> ProcessFn:
    """``process`` with file access recorded; with a system map, an undefined bucket reference
    fails as it would in the worker (the config service answers 404)."""

    def check(reference: str) -> None:
        if buckets is not None and reference not in buckets:
            where = f"GET /{service}/{reference} answers 404"
            raise ConfigError(f"service {service!r} has no bucket reference {reference!r} in {system} ({where})")

    def traced(request: int, read_file: Any, write_file: Any, connection: Any) -> Iterable[Any] | None:
        def read(reference: str, object_id: int) -> BinaryIO:
            check(reference)
            return read_file(reference, object_id)  # type: ignore[no-any-return]

        def write(reference: str, object_id: int) -> BinaryIO:
            check(reference)
            handle = write_file(reference, object_id)
            written.append((reference, object_id))
            return handle  # type: ignore[no-any-return]

        return process(request, read, write, connection)

    return traced


def _keep(harness: Harness, reference: str, object_id: int, output: str | None) -> dict[str, Any]:
    data = harness.read(reference, object_id)
    target: Path | None = None
    if output is not None:
        target = Path(output) / reference / str(object_id)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as exc:
            raise Failure(f"cannot write {target}: {exc.strerror}", ExitCode.FAILURE) from exc
    return {"reference": reference, "id": object_id, "bytes": len(data), "path": str(target) if target else None}


def _fail_with(exc: SlingshotError, show_traceback: bool) -> Any:
    """The runtime error as one line (and its exit code); the traceback only when asked."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    if show_traceback:
        cause = exc.__cause__ or exc
        click.echo("".join(traceback.format_exception(cause)).rstrip(), err=True)
        if len(lines) > 1:
            click.echo("\n".join(lines[1:]), err=True)
    hint = "" if show_traceback or (exc.__cause__ is None and len(lines) == 1) else " (--traceback shows more)"
    if isinstance(exc, StorageError) and "NoSuchKey" in lines[0]:
        hint = " (give the object with --input REF=PATH)"
    raise Failure(f"{type(exc).__name__}: {lines[0]}{hint}", exc.exit_code)


# --------------------------------------------------------------------------- send and peek


def _connect(url: str, name: str) -> pika.BlockingConnection:
    try:
        return connect_blocking(url_parameters(url, name))
    except SlingshotError as exc:  # a malformed URL (usage) or an unreachable broker
        raise Failure(str(exc), exc.exit_code) from None


def _queue_state(channel: Any, queue: str) -> tuple[int, int]:
    """(messages ready, consumers); a clear error when the queue does not exist."""
    try:
        method = channel.queue_declare(queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            raise Failure(f"queue {queue!r} does not exist (a worker declares its queues when it starts)", ExitCode.BROKER) from exc
        raise Failure(f"cannot inspect queue {queue!r}: {describe_amqp_error(exc)}", ExitCode.BROKER) from exc
    return int(method.message_count), int(method.consumer_count)


def _read_ids(values: Sequence[str]) -> list[int]:
    """IDs from the arguments; ``-`` reads whitespace-separated IDs from stdin."""
    texts: list[str] = []
    for value in values:
        texts.extend(click.get_text_stream("stdin").read().split() if value == "-" else [value])
    if not texts:
        raise Failure("no IDs to send", ExitCode.USAGE)
    return [parse_request(text, "ID") for text in texts]


@click.command(short_help="Publish request ids to a queue (persistent, confirmed).")
@click.argument("queue")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@amqp_url_option
@click.option(
    "--body-format", type=click.Choice(["decimal", "be64"]), default="decimal", show_default=True,
    envvar="SLINGSHOT_BODY_FORMAT", show_envvar=True, help="ASCII decimal bodies, or 8-byte big-endian.",
)
def send(queue: str, ids: Sequence[str], amqp_url: str, body_format: str) -> None:
    """Publish each ID (a u64; '-' reads IDs from stdin) to QUEUE, persistent, each confirmed by
    the broker. The queue must exist: a typo never creates one."""
    values = _read_ids(ids)
    connection = _connect(amqp_url, "slingshot send")
    try:
        channel = connection.channel()
        _queue_state(channel, queue)
        channel.confirm_delivery()
        for sent, value in enumerate(values):
            properties = pika.BasicProperties(
                delivery_mode=2,
                content_type="text/plain" if body_format == "decimal" else "application/octet-stream",
                message_id=uuid.uuid4().hex,
                timestamp=int(time.time()),
            )
            try:
                channel.basic_publish("", queue, encode_id(value, body_format), properties, mandatory=True)
            except pika.exceptions.UnroutableError as exc:
                raise Failure(f"sent {sent}, then queue {queue!r} disappeared (message returned unroutable)", ExitCode.BROKER) from exc
            except pika.exceptions.NackError as exc:
                raise Failure(f"sent {sent}, then the broker refused ID {value} (nack)", ExitCode.BROKER) from exc
    except pika.exceptions.AMQPError as exc:
        raise Failure(f"sending to {queue!r} failed: {describe_amqp_error(exc)}", ExitCode.BROKER) from exc
    finally:
        if connection.is_open:
            connection.close()
    click.echo(f"sent {len(values)} message(s) to {queue}")


@click.command(short_help="Show messages and headers without consuming them.")
@click.argument("queue")
@click.option(
    "-n", "--count", type=click.IntRange(min=1), default=10, show_default=True, envvar="SLINGSHOT_PEEK_COUNT", show_envvar=True,
    help="Show at most N messages, from the head of the queue.",
)
@amqp_url_option
@click.option("--json", "as_json", is_flag=True, envvar="SLINGSHOT_PEEK_JSON", show_envvar=True, help="Print a JSON array.")
def peek(queue: str, count: int, amqp_url: str, as_json: bool) -> None:
    """Show the first N messages of QUEUE with their properties and headers, and leave them there.

    RabbitMQ cannot peek, so this takes them without an acknowledgement and returns each with
    basic.nack(requeue=True), oldest first: a classic queue puts them back where they were. While
    held (milliseconds) consumers do not see them, and afterwards they are flagged redelivered.
    """
    connection = _connect(amqp_url, "slingshot peek")
    taken: list[tuple[int, bytes, pika.BasicProperties, bool]] = []
    try:
        channel = connection.channel()
        ready, consumers = _queue_state(channel, queue)
        try:
            while len(taken) < min(count, ready):
                method, properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                taken.append((method.delivery_tag, body, properties, bool(method.redelivered)))
        finally:
            for tag, *_ in sorted(taken, key=lambda item: item[0]):
                channel.basic_nack(tag, requeue=True)
    except pika.exceptions.AMQPError as exc:
        raise Failure(f"peeking at {queue!r} failed: {describe_amqp_error(exc)}", ExitCode.BROKER) from exc
    finally:
        if connection.is_open:
            connection.close()
    messages = [_describe_message(index, body, props, redelivered) for index, (_, body, props, redelivered) in enumerate(taken, 1)]
    if as_json:
        click.echo(json.dumps(messages, indent=2, ensure_ascii=False))
        return
    click.echo(f"{queue}: {ready} ready, {consumers} consumer(s); showing {len(messages)}, all returned to the queue", err=True)
    for message in messages:
        click.echo(_message_text(message))


def _describe_message(index: int, body: bytes, properties: pika.BasicProperties, redelivered: bool) -> dict[str, Any]:
    names = ("message_id", "content_type", "delivery_mode", "timestamp", "correlation_id", "type", "app_id")
    props = {name: jsonable(getattr(properties, name)) for name in names if getattr(properties, name) is not None}
    return {
        "index": index,
        "body": body.decode("ascii") if body.isdigit() and len(body) <= 20 else repr(body[:60]),
        "redelivered": redelivered,
        "properties": props,
        "headers": jsonable(dict(properties.headers or {})),
    }


def _message_text(message: dict[str, Any]) -> str:
    props = message["properties"]
    stamp = props.get("timestamp")
    if isinstance(stamp, int):
        props = {**props, "timestamp": f"{stamp} ({datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat()})"}
    lines = [f"#{message['index']}  body {message['body']}" + ("  (redelivered)" if message["redelivered"] else "")]
    lines += [f"    {name}: {value}" for name, value in props.items()]
    lines += [f"    {name}: {json.dumps(value, ensure_ascii=False)}" for name, value in sorted(message["headers"].items())]
    return "\n".join(lines)


__all__ = ["DEFAULT_AMQP_URL", "Failure", "invoke", "parse_case", "parse_request", "peek", "send"]
