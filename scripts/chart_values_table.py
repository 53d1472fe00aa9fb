#!/usr/bin/env python3
"""Generate the values table of a Helm chart's README from the `## @param` comments of values.yaml.

Bitnami readme-generator style, without Node: `## @section TITLE` starts a table,
`## @param KEY [MODIFIERS] DESCRIPTION` documents the value at dotted path KEY (a whole
object when the key holds a non-empty map), `## @skip KEY` leaves a value out. Every value
must be documented and every `@param` must name a value, so the table cannot drift from
values.yaml. The table goes between the README's markers:

    <!-- values-table:start -->
    <!-- values-table:end -->

Usage: python scripts/chart_values_table.py [--check] [CHART_DIR]
(default chart: helm/slingshot-service). `--check` writes nothing and exits 1 when a
value lacks a `@param` or the README's table is out of date (what `make test` runs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHART = REPO / "helm" / "slingshot-service"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
_PARAM = re.compile(r"^\s*##\s*@param\s+(?P<key>\S+)(?:\s+\[(?P<modifiers>[^\]]*)\])?(?:\s+(?P<description>.*))?$")
_SECTION = re.compile(r"^\s*##\s*@section\s+(?P<title>.+?)\s*$")
_SKIP = re.compile(r"^\s*##\s*@skip\s+(?P<key>\S+)\s*$")
_ANY_TAG = re.compile(r"^\s*##\s*@(\w+)")
# Bitnami's modifiers: type hints for values whose default does not show the type.
MODIFIERS = {"array", "object", "string", "nullable"}


class ValuesDocError(Exception):
    """values.yaml and its `@param` comments disagree, or the README has no table markers."""


@dataclass
class Param:
    key: str
    description: str
    line: int


@dataclass
class Section:
    title: str
    params: list[Param] = field(default_factory=list)


def parse_comments(text: str) -> tuple[list[Section], set[str]]:
    """The `@section`/`@param` structure of values.yaml, and the skipped keys."""
    sections: list[Section] = []
    skipped: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _SECTION.match(line):
            sections.append(Section(match["title"]))
        elif match := _PARAM.match(line):
            if not sections:
                raise ValuesDocError(f"values.yaml:{number}: `@param {match['key']}` comes before any `## @section`")
            if not match["description"]:
                raise ValuesDocError(f"values.yaml:{number}: `@param {match['key']}` has no description")
            modifiers = [m.strip() for m in (match["modifiers"] or "").split(",") if m.strip()]
            if unknown := set(modifiers) - MODIFIERS:
                raise ValuesDocError(f"values.yaml:{number}: unknown modifier(s) {sorted(unknown)} (known: {sorted(MODIFIERS)})")
            sections[-1].params.append(Param(match["key"], match["description"].strip(), number))
        elif match := _SKIP.match(line):
            skipped.add(match["key"])
        elif (tag := _ANY_TAG.match(line)) is not None:
            raise ValuesDocError(f"values.yaml:{number}: unknown tag `@{tag[1]}` (use @section, @param or @skip)")
    return sections, skipped


def lookup(values: Any, key: str) -> Any:
    """The value at dotted path KEY; KeyError when there is none."""
    node = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def undocumented(values: dict[str, Any], documented: set[str], prefix: str = "") -> list[str]:
    """Values that no `@param`/`@skip` covers: leaves, and maps that are empty."""
    missing: list[str] = []
    for name, value in values.items():
        key = f"{prefix}{name}"
        if key in documented:
            continue
        if isinstance(value, dict) and value:
            missing.extend(undocumented(value, documented, f"{key}."))
        else:
            missing.append(key)
    return missing


def render_default(value: Any) -> str:
    """The default as the table shows it: JSON, so strings are quoted and null is null."""
    text = json.dumps(value, separators=(", ", ": ")) if isinstance(value, dict | list) else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`"


def build_table(chart: Path) -> str:
    """The markdown between the README markers; raises ValuesDocError naming every problem."""
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValuesDocError("values.yaml: the top level is not a map")
    sections, skipped = parse_comments(text)
    problems: list[str] = []
    seen: set[str] = set()
    for section in sections:
        for param in section.params:
            if param.key in seen:
                problems.append(f"values.yaml:{param.line}: `{param.key}` is documented twice")
            seen.add(param.key)
            try:
                lookup(values, param.key)
            except KeyError:
                problems.append(f"values.yaml:{param.line}: `@param {param.key}` names no value in values.yaml")
    for key in sorted(skipped):
        try:
            lookup(values, key)
        except KeyError:
            problems.append(f"values.yaml: `@skip {key}` names no value in values.yaml")
    problems.extend(f"values.yaml: `{key}` has no `## @param` comment" for key in undocumented(values, seen | skipped))
    if problems:
        raise ValuesDocError("\n".join(problems))
    lines: list[str] = []
    for section in sections:
        if not section.params:
            continue
        lines += [f"### {section.title}", "", "| Name | Description | Default |", "| --- | --- | --- |"]
        for param in section.params:
            description = param.description.replace("|", "\\|")
            lines.append(f"| `{param.key}` | {description} | {render_default(lookup(values, param.key))} |")
        lines.append("")
    return "\n".join(lines)


def splice(readme: str, table: str) -> str:
    """README text with the table between the markers replaced."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise ValuesDocError(f"README.md: needs exactly one `{START}` followed by one `{END}`")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("chart", nargs="?", type=Path, default=DEFAULT_CHART, help="chart directory")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the README is out of date")
    args = parser.parse_args(argv)
    readme_path = args.chart / "README.md"
    try:
        current = readme_path.read_text()
        updated = splice(current, build_table(args.chart))
    except (ValuesDocError, OSError, yaml.YAMLError) as exc:
        print(f"{args.chart}: {exc}", file=sys.stderr)
        return 1
    if current == updated:
        return 0
    if args.check:
        print(f"{readme_path}: the values table is out of date; run python scripts/chart_values_table.py", file=sys.stderr)
        return 1
    readme_path.write_text(updated)
    print(f"{readme_path}: values table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
