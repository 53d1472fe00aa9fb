"""Jinja filters of the service template (cookiecutter ``_extensions``).

Kept apart from the hooks because cookiecutter renders ``cookiecutter.json`` before any hook
runs: the pre-generation hook then validates the lines this filter produced.
"""

from __future__ import annotations

import re

from cookiecutter.utils import simple_filter

_OPERATOR = re.compile(r"\s*(===|[<>=!~]=|[<>])\s*")
# A comma separates requirements, except before a version operator (``numpy>=1.26,<2``) or
# inside extras (``boto3[crt,s3]``).
_SEPARATOR = re.compile(r"\s+|,(?![<>=!~])(?![^\[\]]*\])")


@simple_filter
def requirement_lines(text: str) -> str:
    """``"requests >= 2, numpy>=1.26, <2 rich[jupyter]"`` → one requirement per line."""
    joined = _OPERATOR.sub(r"\1", text)
    joined = re.sub(r"\s*,\s*(?=[<>=!~])", ",", joined)
    return "\n".join(part for part in _SEPARATOR.split(joined) if part)
