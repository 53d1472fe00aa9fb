"""``slingshot dlq``: inspect, replay and purge a service's dead letters (``{inbound}.dlq``).

The operations live in :mod:`slingshot_runtime.dlq`; this module only parses options,
finds the queue and the broker, and prints. Every failure is one ``error: ...`` line on
stderr with a named exit code (2 bad input, 3 config service, 5 broker).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import click
import pika

from ..broker import connection_parameters
from ..config import ConfigClient
from ..dlq import DeadLetter, DeadLetterQueue, OperatorError
from ..errors import ConfigError, SlingshotError

P = ParamSpec("P")
R = TypeVar("R")

#: Width of the error message in ``list`` lines; ``show`` prints it whole.
ERROR_WIDTH = 80


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Runtime errors become one ``error:`` line and the error's exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SlingshotError as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(int(exc.exit_code))

    return wrapper


def _target_options(command: Callable[P, R]) -> Callable[P, R]:
    """Where the DLQ is: the config service, or a queue name and an AMQP URL."""
    decorators = [
        click.option(
            "--config-host",
            envvar="SLINGSHOT_CONFIG_HOST",
            show_envvar=True,
            help="Config service host or URL: gives SERVICE's inbound queue and the RabbitMQ connection.",
        ),
        click.option(
            "--queue",
            envvar="SLINGSHOT_INBOUND_QUEUE",
            show_envvar=True,
            metavar="NAME",
            help="The inbound queue, instead of looking SERVICE up; the DLQ is NAME.dlq.",
        ),
        click.option(
            "--amqp-url",
            envvar="SLINGSHOT_AMQP_URL",
            show_envvar=True,
            metavar="URL",
            help="amqp://USER:PASSWORD@HOST:PORT/VHOST, instead of the config service's /rabbitmq.",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return _one_line_errors(command)


def _selection_options(verb: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def apply(command: Callable[P, R]) -> Callable[P, R]:
        command = click.option(
            "--limit",
            envvar="SLINGSHOT_DLQ_LIMIT",
            show_envvar=True,
            type=click.IntRange(min=1),
            help=f"{verb} at most N (the oldest first with --all).",
        )(command)
        command = click.option(
            "--all", "everything", is_flag=True, envvar="SLINGSHOT_DLQ_ALL", show_envvar=True, help=f"{verb} every dead letter."
        )(command)
        return click.argument("ids", nargs=-1, metavar="[IDS]...")(command)

    return apply


def _session(service: str, config_host: str | None, queue: str | None, amqp_url: str | None) -> DeadLetterQueue:
    """The DLQ session for SERVICE, from whichever sources the options name."""
    name = f"slingshot-dlq {service}"
    params = url_parameters(amqp_url, name) if amqp_url else None
    if queue is None or params is None:
        if not config_host:
            raise OperatorError(
                "say where the queue is: --config-host (or SLINGSHOT_CONFIG_HOST) to look SERVICE up, "
                "or --queue NAME with --amqp-url URL"
            )
        client = ConfigClient(config_host, service)
        try:
            if queue is None:
                try:
                    queue = client.service_config().inbound
                except ConfigError as exc:
                    raise ConfigError(f"cannot look up service {service!r}: {exc}") from exc
            if params is None:
                params = connection_parameters(client.rabbitmq(), None, name)
        finally:
            client.close()
    return DeadLetterQueue(params, queue)


def url_parameters(url: str, name: str) -> pika.ConnectionParameters:
    """``--amqp-url`` as connection parameters; shared by every command that talks to the broker."""
    usage = "--amqp-url (SLINGSHOT_AMQP_URL) must look like amqp://USER:PASSWORD@HOST:PORT/VHOST"
    if not url.startswith(("amqp://", "amqps://")):
        raise OperatorError(usage)
    try:
        params = pika.URLParameters(url)
    except Exception:  # its message may quote the URL, password included
        raise OperatorError(usage) from None
    params.client_properties = {"connection_name": name}
    return params


def _selectors(ids: Sequence[str], everything: bool, verb: str) -> list[str] | None:
    if everything and ids:
        raise OperatorError(f"give either IDS or --all to {verb}, not both")
    if not everything and not ids:
        raise OperatorError(f"name the dead letters to {verb} (indexes or message ids from 'slingshot dlq list'), or --all")
    return None if everything else list(ids)


def _show_body(body: bytes) -> str:
    """Request ids as they are; anything else as a Python bytes literal, so odd bodies stay visible."""
    if body.isdigit() and len(body) <= 20:
        return body.decode("ascii")
    text = repr(body[:40])
    return text + ("..." if len(body) > 40 else "")


def _line(letter: DeadLetter) -> str:
    error = " ".join((letter.error or "").split())
    if len(error) > ERROR_WIDTH:
        error = error[: ERROR_WIDTH - 3] + "..."
    attempts = letter.attempts if letter.attempts is not None else "?"
    return (
        f"{letter.index:>4}  {letter.message_id or '-'}  {_show_body(letter.body)}  {letter.error_type or '?'}"
        f"  attempts={attempts}  first-failure={letter.first_failure or '?'}  {error}"
    ).rstrip()


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group()
def dlq() -> None:
    """Inspect, replay and purge a service's dead letters (the queue INBOUND.dlq).

    Reading never removes a dead letter: each is taken without an ack and returned in order.
    """


@dlq.command("list", short_help="One line per dead letter; leaves the DLQ as it was.")
@click.argument("service")
@_target_options
@click.option("--json", "as_json", is_flag=True, envvar="SLINGSHOT_DLQ_JSON", show_envvar=True, help="Print a JSON array.")
@click.option("--limit", envvar="SLINGSHOT_DLQ_LIMIT", show_envvar=True, type=click.IntRange(min=1), help="Show the oldest N only.")
def list_command(service: str, config_host: str | None, queue: str | None, amqp_url: str | None, as_json: bool, limit: int | None) -> None:
    """One line per dead letter of SERVICE: index, message id, body, error type, attempts,
    first failure and the error (trimmed); the DLQ is left as it was."""
    with _session(service, config_host, queue, amqp_url) as session:
        letters = session.read(limit)
    if as_json:
        _emit_json([letter.summary() for letter in letters])
        return
    if not letters:
        click.echo(f"{session.name} is empty", err=True)
    for letter in letters:
        click.echo(_line(letter))


@dlq.command(short_help="All headers and the traceback of one dead letter.")
@click.argument("service")
@click.argument("which", metavar="INDEX|MESSAGE-ID")
@_target_options
@click.option("--json", "as_json", is_flag=True, envvar="SLINGSHOT_DLQ_JSON", show_envvar=True, help="Print a JSON object.")
def show(service: str, which: str, config_host: str | None, queue: str | None, amqp_url: str | None, as_json: bool) -> None:
    """Every property and header of one dead letter, and its traceback."""
    with _session(service, config_host, queue, amqp_url) as session:
        (letter,) = session.find([which])
    if as_json:
        _emit_json(letter.details())
        return
    details = letter.details()
    click.echo(f"dead letter #{letter.index} of {session.name}")
    click.echo(f"  body: {_show_body(letter.body)}")
    for name, value in details["properties"].items():
        click.echo(f"  {name}: {value}")
    click.echo("headers:")
    for name, value in sorted(details["headers"].items()):
        shown = "(below)" if name == "x-slingshot-traceback" else json.dumps(value, ensure_ascii=False)
        click.echo(f"  {name}: {shown}")
    click.echo("traceback:")
    click.echo(letter.traceback.rstrip() if letter.traceback else "  (none recorded)")


@dlq.command(short_help="Re-drive dead letters to the inbound queue, attempts reset.")
@click.argument("service")
@_selection_options("Replay")
@_target_options
def replay(
    service: str,
    ids: tuple[str, ...],
    everything: bool,
    limit: int | None,
    config_host: str | None,
    queue: str | None,
    amqp_url: str | None,
) -> None:
    """Send dead letters back to SERVICE's inbound queue with the attempt count reset.

    IDS are indexes from 'slingshot dlq list' or message ids. The body and other headers are
    kept; each copy is confirmed by the broker before the dead letter is removed.
    """
    selectors = _selectors(ids, everything, "replay")
    with _session(service, config_host, queue, amqp_url) as session:
        done = session.replay(selectors, limit)
    for letter in done:
        click.echo(f"replayed #{letter.index}  {letter.message_id or '-'}  {_show_body(letter.body)}")
    click.echo(f"replayed {len(done)} dead letter(s) from {session.name} to {session.inbound}", err=not done)


@dlq.command(short_help="Delete dead letters for good (asks first).")
@click.argument("service")
@_selection_options("Delete")
@_target_options
@click.option("--yes", "-y", is_flag=True, envvar="SLINGSHOT_DLQ_YES", show_envvar=True, help="Do not ask for confirmation.")
def purge(
    service: str,
    ids: tuple[str, ...],
    everything: bool,
    limit: int | None,
    config_host: str | None,
    queue: str | None,
    amqp_url: str | None,
    yes: bool,
) -> None:
    """Delete dead letters of SERVICE for good, after a confirmation prompt (unless --yes)."""
    selectors = _selectors(ids, everything, "purge")

    def confirm(letters: Sequence[DeadLetter]) -> bool:
        if yes:
            return True
        return click.confirm(f"Delete {len(letters)} dead letter(s) from {session.name} for good?", abort=True)

    with _session(service, config_host, queue, amqp_url) as session:
        deleted = session.purge(selectors, limit, confirm)
    click.echo(f"deleted {deleted} dead letter(s) from {session.name}", err=not deleted)
