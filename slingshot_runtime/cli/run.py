"""``slingshot run``: serve a handler file, as the container entrypoint does."""

from __future__ import annotations

import sys

import click

from ..errors import SlingshotError
from ..loader import load_handler
from ..logs import configure_logging
from ..service import Service
from ..settings import Settings


@click.command()
@click.argument("handler", envvar="SLINGSHOT_HANDLER", default="handler.py")
@click.option("--service", envvar="SLINGSHOT_SERVICE", help="Service name in the config service.")
@click.option("--config-host", envvar="SLINGSHOT_CONFIG_HOST", help="Config service host or URL.")
def run(handler: str, service: str | None, config_host: str | None) -> None:
    """Serve HANDLER (PATH.py or PATH.py:FUNCTION) until SIGTERM; other settings come from SLINGSHOT_* variables."""
    try:
        settings = Settings.load(service, config_host)
        configure_logging(settings.log_level, settings.log_format, settings.service)
        process = load_handler(handler)
    except SlingshotError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    sys.exit(int(Service(settings, process).serve()))
