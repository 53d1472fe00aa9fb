"""Refuse answers that would generate a broken project, before any file is written.

Each value is embedded as JSON (``tojson``) in a raw ``'''`` string, so no answer can break this
script's syntax: ``tojson`` escapes ``'`` and JSON has no raw newlines (keep these quotes single).
Every problem is one ``error:`` line on stderr; exit status 1.
"""

from __future__ import annotations

import json
import re
import sys

SERVICE_NAME: str = json.loads(r'''{{ cookiecutter.service_name | tojson }}''')
DESCRIPTION: str = json.loads(r'''{{ cookiecutter.description | tojson }}''')
CONFIG_HOST: str = json.loads(r'''{{ cookiecutter.config_host | tojson }}''')
BASE_IMAGE: str = json.loads(r'''{{ cookiecutter.base_image | tojson }}''')
BASE_IMAGE_TAG: str = json.loads(r'''{{ cookiecutter.base_image_tag | tojson }}''')
IMAGE_REPOSITORY: str = json.loads(r'''{{ cookiecutter.image_repository | tojson }}''')
REQUIREMENTS: list[str] = json.loads(r'''{{ cookiecutter.__requirements | tojson }}''').splitlines()

DNS_LABEL_RULE = "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
# Repository names are lowercase (a registry host may carry a port): they go into the Dockerfile and the Makefile.
IMAGE = re.compile(r"[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SPEC = r"(===|[<>=!~]=|[<>])[A-Za-z0-9.*+!_-]+"
REQUIREMENT = re.compile(rf"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._,-]+\])?({_SPEC}(,{_SPEC})*)?")


def dns_label_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label (Kubernetes object names, Helm releases), or None."""
    if not name:
        return "is empty"
    if len(name) > 63:
        return f"is {len(name)} characters long"
    bad = sorted({c for c in name if not (c.isascii() and (c.islower() or c.isdigit() or c == "-"))})
    if bad:
        return f"contains {', '.join(repr(c) for c in bad)}"
    if name[0] == "-" or name[-1] == "-":
        return "starts or ends with '-'"
    return None


def problems() -> list[str]:
    found = []
    reason = dns_label_problem(SERVICE_NAME)
    if reason:
        found.append(f"service_name {SERVICE_NAME!r} {reason}: it must be {DNS_LABEL_RULE}")
    if not DESCRIPTION.isprintable() or '"' in DESCRIPTION or "\\" in DESCRIPTION:
        found.append(f"description {DESCRIPTION!r} must be one line of printable text without '\"' or '\\' (docstring, LABEL)")
    if not re.fullmatch(r"\S+", CONFIG_HOST):
        found.append(f"config_host {CONFIG_HOST!r} must be a host name or URL without spaces (e.g. sys-map.example.com)")
    for key, value in (("base_image", BASE_IMAGE), ("image_repository", IMAGE_REPOSITORY)):
        if not IMAGE.fullmatch(value):
            found.append(f"{key} {value!r} is not an image repository (lowercase letters, digits, '._/:-'; e.g. ghcr.io/team/name)")
    if not TAG.fullmatch(BASE_IMAGE_TAG):
        found.append(f"base_image_tag {BASE_IMAGE_TAG!r} is not an image tag (letters, digits, '_.-'; at most 128; no leading '.' or '-')")
    for requirement in REQUIREMENTS:
        if not REQUIREMENT.fullmatch(requirement):
            found.append(
                f"extra requirement {requirement!r} is not NAME[EXTRAS][SPECIFIERS] (e.g. requests>=2.31): "
                "add URLs, markers and pip options to requirements.txt after generating"
            )
    return found


def main() -> int:
    found = problems()
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
