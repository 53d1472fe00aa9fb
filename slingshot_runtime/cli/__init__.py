"""The ``slingshot`` command: one group, one module per area of subcommands."""

from __future__ import annotations

import click

from .. import __version__
from .dlq import dlq
from .new import new
from .run import run
from .sysmap import sysmap
from .tools import invoke, peek, send


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="slingshot")
def main() -> None:
    """slingshot: run, inspect and operate queue-driven services."""


main.add_command(run)
main.add_command(dlq)
main.add_command(sysmap)
main.add_command(invoke)
main.add_command(send)
main.add_command(peek)
main.add_command(new)

__all__ = ["main"]
