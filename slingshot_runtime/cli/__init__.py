"""The ``slingshot`` command: one group, one module per area of subcommands."""

from __future__ import annotations

import click

from .. import __version__
from .run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="slingshot")
def main() -> None:
    """slingshot: run, inspect and operate queue-driven services."""


main.add_command(run)

__all__ = ["main"]
