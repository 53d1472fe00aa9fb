"""``slingshot new``: a service project from the cookiecutter template, without prompts.

The template's pre-generation hook is the one authority on valid answers (DNS-1123 service
names, image references, requirements): this command only maps options to template
variables, and turns cookiecutter's failures into one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from ..errors import ExitCode

#: The template as installed from a wheel (pyproject.toml maps it into the package) ...
PACKAGED_TEMPLATE = Path(__file__).resolve().parents[1] / "service_template"
#: ... and in a source checkout or editable install (``templates/service`` next to the package).
CHECKOUT_TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "service"


def default_template() -> Path | None:
    for candidate in (PACKAGED_TEMPLATE, CHECKOUT_TEMPLATE):
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    return None


def split_image(reference: str) -> tuple[str, str | None]:
    """``"localhost:5000/x/runtime:dev"`` → ``("localhost:5000/x/runtime", "dev")``; no tag → None."""
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:  # the colon was a registry port, or there is none
        return reference, None
    return repository, tag


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(int(ExitCode.USAGE))


@click.command()
@click.argument("name")
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
    help="Where the project directory NAME is created.",
)  # fmt: skip
@click.option("--description", help="One-line description of the service.")
@click.option("--config-host", help="Config service host or URL the service will use.")
@click.option("--base-image", metavar="IMAGE[:TAG]", help="slingshot base image, e.g. localhost/slingshot-runtime:dev for a local build.")
@click.option("--image-repository", metavar="IMAGE", help="The service's own image repository.")
@click.option("--requirements", metavar="LIST", help="Extra Python requirements, separated by spaces or commas.")
@click.option(
    "--template", envvar="SLINGSHOT_TEMPLATE", show_envvar=True, metavar="DIR",
    help="The cookiecutter template (default: the one installed with slingshot).",
)  # fmt: skip
def new(
    name: str,
    output_dir: Path,
    description: str | None,
    config_host: str | None,
    base_image: str | None,
    image_repository: str | None,
    requirements: str | None,
    template: str | None,
) -> None:
    """Create the project NAME (a DNS-1123 label): handler, tests, Dockerfile, chart values, Makefile."""
    try:
        from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException  # type: ignore[import-untyped]
        from cookiecutter.main import cookiecutter  # type: ignore[import-untyped]
    except ImportError:
        _fail("slingshot new needs cookiecutter: pip install cookiecutter")
    installed = default_template()
    if template is None and installed is None:
        _fail(f"no service template installed (looked in {PACKAGED_TEMPLATE} and {CHECKOUT_TEMPLATE}): pass --template DIR")
    source = template or str(installed)
    context: dict[str, Any] = {"service_name": name}
    if base_image is not None:
        context["base_image"], tag = split_image(base_image)
        if tag is not None:
            context["base_image_tag"] = tag
    options = {"description": description, "config_host": config_host, "image_repository": image_repository,
               "extra_requirements": requirements}  # fmt: skip
    context.update({key: value for key, value in options.items() if value is not None})
    # cookiecutter logs a failed hook with its traceback; the hook's own lines say what is wrong.
    logging.getLogger("cookiecutter").setLevel(logging.CRITICAL)
    try:
        project = cookiecutter(source, no_input=True, extra_context=context, output_dir=str(output_dir))
    except FailedHookException:
        # The hook has printed what is wrong, one "error:" line per problem.
        sys.exit(int(ExitCode.USAGE))
    except OutputDirExistsException:
        _fail(f"{output_dir / name} already exists: choose another NAME or --output-dir")
    except CookiecutterException as exc:
        _fail(f"cannot generate from template {source!r}: {' '.join(str(exc).split())}")
    click.echo(f"created {os.path.relpath(project)}: cd there, then make test, make build, make deploy (see README.md)")


__all__ = ["new", "split_image"]
