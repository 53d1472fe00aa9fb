"""The reference config service: one YAML "system map" served by the config protocol.

A :class:`SystemMap` holds a system's wiring (services with their inbound queue, routes by
case and bucket references; the ``rabbitmq``, ``object-storage`` and ``postgres`` sections).
Tests build one from a dict; ``slingshot sysmap`` reads YAML with :func:`load_system_map`,
which is strict and reports every problem with its line (:func:`check_system_map`).
:class:`ConfigServer` serves a map over real HTTP(S) and :class:`SystemMapWatcher` reloads
the file when it changes, keeping the last good map when an edit is broken.
:func:`topology` and :func:`to_mermaid` / :func:`to_dot` draw the pipeline.

Protocol (docs/protocol.md): ``GET /rabbitmq``, ``/object-storage``, ``/postgres`` → that
section; ``GET /NAME`` → ``{"in", "out"}``; ``GET /NAME/REF`` → the bucket name as a JSON
string; anything else → 404. The YAML format is in docs/system-map.md.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, cast
from urllib.parse import unquote, urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .routing import Case, case_key, format_case
from .storage import REFERENCE_PATTERN as REFERENCE_NAME

__all__ = [
    "ConfigServer",
    "Diagnostic",
    "SystemMap",
    "SystemMapError",
    "SystemMapWatcher",
    "Topology",
    "check_system_map",
    "load_system_map",
    "make_self_signed_cert",
    "to_dot",
    "to_mermaid",
    "topology",
]

log = logging.getLogger(__name__)

SECTIONS = ("rabbitmq", "object-storage", "postgres")


class SystemMapError(ValueError):
    """The system document is malformed (a ValueError, so callers may catch either)."""

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic] = ()) -> None:
        super().__init__(message)
        #: Every problem found, with its line, when the map came from YAML.
        self.diagnostics = list(diagnostics)


def _check_service(name: str, spec: object) -> dict[str, Any]:
    """Validate one service entry so mistakes surface at construction, not in a worker."""
    if not isinstance(spec, Mapping):
        raise SystemMapError(f"service {name!r}: expected a mapping, got {type(spec).__name__}")
    queue = spec.get("in")
    if not isinstance(queue, str) or not queue:
        raise SystemMapError(f"service {name!r}: 'in' must be a non-empty string")
    outs = spec.get("out", [])
    if not isinstance(outs, list):
        raise SystemMapError(f"service {name!r}: 'out' must be a list")
    for i, out in enumerate(outs):
        if not isinstance(out, Mapping) or "case" not in out:
            raise SystemMapError(f"service {name!r}: out[{i}] needs 'case' and 'queues'")
        if not isinstance(out["case"], bool | int | str):
            raise SystemMapError(f"service {name!r}: out[{i}].case must be bool, int or str")
        queues = out.get("queues")
        if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
            raise SystemMapError(f"service {name!r}: out[{i}].queues must be a list of strings")
    buckets = spec.get("buckets", {})
    if not isinstance(buckets, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in buckets.items()
    ):
        raise SystemMapError(f"service {name!r}: 'buckets' must map reference names to bucket names")
    return {
        "in": queue,
        "out": [{"case": o["case"], "queues": list(o["queues"])} for o in outs],
        "buckets": dict(buckets),
    }


class SystemMap:
    """The whole system's wiring: services, their queues and buckets, shared endpoints.

    From a dict the sections are served as given (tests serve broken ones on purpose);
    :func:`load_system_map` checks them strictly first.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        services = document.get("services", {})
        if not isinstance(services, Mapping):
            raise SystemMapError("'services' must be a mapping")
        self.services: dict[str, dict[str, Any]] = {}
        for name, spec in services.items():
            if not isinstance(name, str) or not name:
                raise SystemMapError(f"service name must be a non-empty string: {name!r}")
            if name in SECTIONS:
                raise SystemMapError(f"service name {name!r} is reserved for the {name} section")
            self.services[name] = _check_service(name, spec)
        self.sections: dict[str, dict[str, Any]] = {}
        for section in SECTIONS:
            value = document.get(section)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise SystemMapError(f"{section!r} must be a mapping")
            self.sections[section] = copy.deepcopy(dict(value))

    def lookup(self, path: str) -> object | None:
        """The JSON value served at ``path``, or None for 404."""
        raw = urlsplit(path).path
        if not raw.startswith("/"):
            return None
        segments = [unquote(s) for s in raw[1:].split("/")]
        if any(not s for s in segments):
            return None
        if len(segments) == 1:
            (name,) = segments
            if name in self.sections:
                return copy.deepcopy(self.sections[name])
            service = self.services.get(name)
            if service is None:
                return None
            return {"in": service["in"], "out": copy.deepcopy(service["out"])}
        if len(segments) == 2:
            name, ref = segments
            service = self.services.get(name)
            if service is None:
                return None
            bucket: str | None = service["buckets"].get(ref)
            return bucket
        return None


# --------------------------------------------------------------------------- YAML


_NULL, _BOOL, _INT, _FLOAT, _STR, _MERGE = (
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "merge")
)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core schema: only ``true``/``false`` (any case) are booleans, so the YAML 1.1
    words ``yes``, ``no``, ``on``, ``off`` stay strings; ``010`` is ten, dates stay strings.

    It composes nodes only (their marks give line numbers); :class:`_Reader` makes the values.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: Untagged plain scalars: their type is re-resolved after ``${VAR}`` substitution.
        self.plain: set[ScalarNode] = set()

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_scalar_node(anchor)
        if event.tag is None and event.implicit[0]:
            self.plain.add(node)
        return node


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in (_NULL, _MERGE)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)

#: What YAML 1.1 reads as booleans and a system map reads as strings: worth a warning.
YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})
#: ``${NAME}``, ``${NAME:-default}``, ``$${`` (a literal ``${``), or a ``${`` that is none of them.
_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")

TOP_KEYS = ("services", *SECTIONS)
SERVICE_KEYS = ("in", "out", "buckets")
ROUTE_KEYS = ("case", "queues")
#: section → field → (type, required). Port defaults are the protocol's.
SECTION_FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "rabbitmq": {
        "host": (str, True), "port": (int, False), "username": (str, True),
        "password": (str, True), "vhost": (str, False), "tls": (bool, False),
    },
    "object-storage": {"host": (str, True), "region": (str, False), "access-key": (str, True), "secret-key": (str, True)},
    "postgres": {
        "host": (str, True), "port": (int, False), "database": (str, True),
        "username": (str, True), "password": (str, True),
    },
}  # fmt: skip
#: Fields holding GNU pass entry names (the worker runs ``pass show -- NAME``), not secrets.
PASS_ENTRY_FIELDS = frozenset({("object-storage", "access-key"), ("object-storage", "secret-key"), ("postgres", "password")})
#: Literal secrets (the protocol serves RabbitMQ's password as it is): never quoted in a message.
SECRET_FIELDS = frozenset({("rabbitmq", "password")})
#: What a missing section means for the workers.
MISSING_SECTION = {
    "rabbitmq": ("warning", "no 'rabbitmq' section: workers cannot start (GET /rabbitmq answers 404)"),
    "object-storage": ("warning", "no 'object-storage' section: read_file/write_file fail (GET /object-storage answers 404)"),
    "postgres": ("note", "no 'postgres' section: workers need SLINGSHOT_DATABASE_URL"),
}


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One finding about a system map file; ``line`` is 1-based, 0 for the file as a whole."""

    line: int
    severity: str  # "error", "warning" or "note"
    message: str

    def format(self, filename: str) -> str:
        """``FILE:LINE: error: message``, the shape compilers use (editors jump to it)."""
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class _Lines:
    """Where things are in the file, for messages about relations between services."""

    service: dict[str, int] = field(default_factory=dict)
    inbound: dict[str, int] = field(default_factory=dict)
    #: (service, queue) → line of the first route from the service to the queue.
    route: dict[tuple[str, str], int] = field(default_factory=dict)


def _line(node: Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _show(value: Any) -> str:
    """A value as the user would write it in YAML-ish JSON: ``true``, ``1``, ``"1"``, ``null``."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


class _Reader:
    """Walks the composed YAML tree once: checks it with line numbers and builds the document."""

    def __init__(self, loader: _Loader, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.environ = environ
        self.diagnostics: list[Diagnostic] = []
        self.lines = _Lines()

    def report(self, severity: str, node: Node | int | None, message: str) -> None:
        line = node if isinstance(node, int) else _line(node)
        self.diagnostics.append(Diagnostic(line, severity, message))

    def error(self, node: Node | int | None, message: str) -> None:
        self.report("error", node, message)

    # -- values ------------------------------------------------------------------------------

    def scalar(self, node: ScalarNode) -> Any:
        """The node's value with ``${VAR}`` substituted; a plain scalar is typed after substitution."""
        text, tag = node.value, node.tag
        if "${" in text and (tag == _STR or node in self.loader.plain):
            text = _VARIABLE.sub(lambda m: self._substitute(m, node), text)
            if node in self.loader.plain:
                tag = self.loader.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        try:
            return _construct(tag, text)
        except ValueError as exc:
            self.error(node, str(exc))
            return None

    def _substitute(self, match: re.Match[str], node: Node) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name is None:
            self.error(node, "'${' starts no variable: write ${NAME} or ${NAME:-default}, or $${ for a literal '${'")
            return match.group(0)
        value = self.environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            self.error(node, f"${{{name}}} is not set in the environment (set it, or write ${{{name}:-default}})")
            return match.group(0)
        return value

    def value(self, node: Node) -> Any:
        """Any node as plain data (lists, string-keyed dicts, scalars)."""
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            return [self.value(item) for item in node.value]
        return {key: self.value(value) for key, _, value in self.pairs(node, "a value")}

    def pairs(self, node: Node, what: str, known: Sequence[str] | None = None) -> Iterator[tuple[Any, Node, Node]]:
        """(key, key node, value node) of a mapping, with ``<<`` merges applied; duplicate and
        unknown keys are reported; keys starting with ``x-`` are ignored (for YAML anchors)."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping, got {_kind(self.value(node))}")
            return
        merged: dict[tuple[str, Any], tuple[Any, Node, Node]] = {}
        explicit: dict[tuple[str, Any], tuple[Any, Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    for key, inner_key, inner_value in self.pairs(source, "a '<<' merge"):
                        merged.setdefault((type(key).__name__, key), (key, inner_key, inner_value))
                continue
            key = self.key(key_node, what)
            if key is None:
                continue
            ident = (type(key).__name__, key)  # True and 1 are different keys
            if ident in explicit:
                first = _line(explicit[ident][1])
                self.error(key_node, f"{what}: duplicate key {_show(key)} (first on line {first}); YAML would keep only the last")
            explicit[ident] = (key, key_node, value_node)
        for key, key_node, value_node in {**merged, **explicit}.values():
            if isinstance(key, str) and key.startswith("x-"):
                continue
            if known is not None and key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                self.error(key_node, f"{what}: unknown key {_show(key)} (expected {', '.join(known)}){suggestion}")
                continue
            yield key, key_node, value_node

    def key(self, node: Node, what: str) -> Any:
        """A mapping key as written (no ``${VAR}`` substitution in keys); None after an error."""
        if not isinstance(node, ScalarNode):
            self.error(node, f"{what}: a key must be a name, not a list or mapping")
            return None
        try:
            key = _construct(node.tag, node.value)
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None
        if key is None:
            self.error(node, f"{what}: empty key")
        return key

    # -- the document -------------------------------------------------------------------------

    def document(self, root: Node | None) -> dict[str, Any]:
        if root is None or (isinstance(root, ScalarNode) and self.scalar(root) is None):
            self.error(0, "the file is empty: expected a mapping with 'services' and the rabbitmq, object-storage and postgres sections")
            return {}
        document: dict[str, Any] = {}
        services_node: Node | None = None
        for key, _, value in self.pairs(root, "the system map", TOP_KEYS):
            if key == "services":
                services_node = value
                document["services"] = self.services(value)
            else:
                values = self.section(key, value)
                if values is not None:
                    document[key] = values
        if isinstance(root, MappingNode) and not document.get("services"):
            self.report("warning", services_node or root, "no services defined")
        for section in SECTIONS:
            if section not in document and isinstance(root, MappingNode):
                severity, message = MISSING_SECTION[section]
                self.report(severity, 0, message)
        return document

    def section(self, name: str, node: Node) -> dict[str, Any] | None:
        fields = SECTION_FIELDS[name]
        result: dict[str, Any] = {}
        present: set[str] = set()
        for key, _, value_node in self.pairs(node, f"section {name!r}", tuple(fields)):
            present.add(key)
            value = self.value(value_node)
            kind, _ = fields[key]
            if not self._typed(value, kind, value_node, f"{name}.{key}", secret=(name, key) in SECRET_FIELDS):
                continue
            if key == "port" and not 0 < value < 65536:
                self.error(value_node, f"{name}.port must be a TCP port (1-65535), got {value}")
                continue
            if (name, key) in PASS_ENTRY_FIELDS:
                problem = _pass_entry_problem(value)
                if problem is not None:
                    self.error(value_node, f"{name}.{key} is a GNU pass entry name (not the secret) and {problem}, got {_show(value)}")
                    continue
            result[key] = value
        if not isinstance(node, MappingNode):
            return None
        for key, (_, required) in fields.items():
            if required and key not in present:
                self.error(node, f"section {name!r} is missing {key!r}")
        return result

    def _typed(self, value: Any, kind: type, node: Node, what: str, secret: bool = False) -> bool:
        """Report a value of the wrong type (a secret's value never appears); a YAML 1.1 boolean
        word gets its own hint."""
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is str and isinstance(value, str) and value:
            return True
        if kind is bool and isinstance(value, bool):
            return True
        wanted = {int: "an integer", str: "a non-empty string", bool: "true or false"}[kind]
        hint = ""
        if kind is bool and isinstance(value, str) and value.lower() in YAML11_BOOLEANS:
            hint = " (only true and false are booleans in a system map)"
        shown = "" if secret else f" {_show(value)}"
        self.error(node, f"{what} must be {wanted}, got {_kind(value)}{shown}{hint}")
        return False

    def services(self, node: Node) -> dict[str, Any]:
        if isinstance(node, ScalarNode) and self.scalar(node) is None:
            return {}
        services: dict[str, Any] = {}
        for name, key_node, value_node in self.pairs(node, "'services'"):
            if not isinstance(name, str) or not name:
                self.error(key_node, f"a service name must be a non-empty string, got {_kind(name)} {_show(name)}")
            elif name in SECTIONS:
                self.error(key_node, f"service name {name!r} is reserved for the {name} section (GET /{name})")
            elif "/" in name:
                self.error(key_node, f"service name {name!r} cannot contain '/' (it is one path segment of GET /NAME)")
            else:
                self.lines.service[name] = _line(key_node)
                service = self.service(name, value_node)
                if service is not None:
                    services[name] = service
        return services

    def service(self, name: str, node: Node) -> dict[str, Any] | None:
        what = f"service {name!r}"
        inbound: str | None = None
        outs: list[dict[str, Any]] = []
        buckets: dict[str, str] = {}
        present: set[str] = set()
        for key, _, value_node in self.pairs(node, what, SERVICE_KEYS):
            present.add(key)
            if key == "in":
                value = self.value(value_node)
                if self._queue(value, value_node, f"{what}: 'in'"):
                    inbound = value
                    self.lines.inbound[name] = _line(value_node)
            elif key == "out":
                outs = self.routes(name, value_node)
            else:
                buckets = self.buckets(name, value_node)
        if not isinstance(node, MappingNode):
            return None
        if inbound is None:
            if "in" not in present:
                self.error(node, f"{what} has no 'in' (its inbound queue)")
            return None
        return {"in": inbound, "out": outs, "buckets": buckets}

    def _queue(self, value: Any, node: Node, what: str) -> bool:
        if not isinstance(value, str) or not value:
            self.error(node, f"{what} must be a queue name (a non-empty string), got {_kind(value)} {_show(value)}")
        elif len(value.encode()) > 255:
            self.error(node, f"{what}: queue name {value[:40]!r}... is longer than AMQP's 255 bytes")
        elif value.startswith("amq."):
            self.error(node, f"{what}: queue name {value!r} starts with 'amq.', which RabbitMQ reserves")
        else:
            return True
        return False

    def routes(self, name: str, node: Node) -> list[dict[str, Any]]:
        what = f"service {name!r}"
        if isinstance(node, ScalarNode) and self.scalar(node) is None:
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what}: 'out' must be a list of {{case, queues}} entries, got {_kind(self.value(node))}")
            return []
        routes: list[dict[str, Any]] = []
        seen: list[tuple[Case, int]] = []
        for index, entry in enumerate(node.value):
            where = f"{what}: out[{index}]"
            case_node: Node | None = None
            case: Any = None
            queues: list[str] | None = None
            has_queues = False
            for key, _, value_node in self.pairs(entry, where, ROUTE_KEYS):
                if key == "case":
                    case_node, case = value_node, self.value(value_node)
                else:
                    has_queues = True
                    queues = self.route_queues(name, value_node, where)
            if not isinstance(entry, MappingNode):
                continue
            if case_node is None:
                self.error(entry, f"{where} has no 'case'")
                continue
            if isinstance(case, float) or not isinstance(case, (bool, int, str)):
                self.error(case_node, f"{where}: a case is true/false, an integer or a string, got {_kind(case)} {_show(case)}")
                continue
            if not has_queues:
                self.error(entry, f"{where} (case {format_case(case)}) has no 'queues'")
            if queues is None:
                continue
            self.case_warnings(case, case_node, seen, what)
            seen.append((case, _line(case_node)))
            routes.append({"case": case, "queues": queues})
        return routes

    def route_queues(self, name: str, node: Node, where: str) -> list[str] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{where}: 'queues' must be a list of queue names (write [{self.value(node)}] for one)")
            return None
        queues: list[str] = []
        for item in node.value:
            value = self.value(item)
            if self._queue(value, item, f"{where}: queues"):
                queues.append(value)
                self.lines.route.setdefault((name, value), _line(item))
        if not node.value:
            self.report("warning", node, f"{where}: no queues: outputs with this case are dropped")
        return queues

    def case_warnings(self, case: Case, node: Node, seen: list[tuple[Case, int]], what: str) -> None:
        key = case_key(case)
        for other, line in seen:
            if case_key(other) == key:
                self.report("warning", node, f"{what}: case {format_case(case)} is listed twice (first on line {line}); "
                                             "the config protocol merges their queues")  # fmt: skip
                return
        for other, line in seen:
            if _spellings(case) & _spellings(other):
                self.report(
                    "warning",
                    node,
                    f"{what}: case {format_case(case)} and case {format_case(other)} (line {line}) differ only in type; "
                    f"routes match type and value, so a handler yielding {format_case(case)} never takes the route of {format_case(other)}",
                )
                return
        if isinstance(case, str) and node in self.loader.plain and case.lower() in YAML11_BOOLEANS:
            self.report(
                "warning",
                node,
                f"{what}: case {case} is the string {format_case(case)} (only true and false are booleans here, "
                f"YAML 1.1 tools read it as a boolean): write true/false, or quote it",
            )

    def buckets(self, name: str, node: Node) -> dict[str, str]:
        what = f"service {name!r}: buckets"
        result: dict[str, str] = {}
        for reference, key_node, value_node in self.pairs(node, what):
            bucket = self.value(value_node)
            if not isinstance(reference, str) or not REFERENCE_NAME.fullmatch(reference) or reference in (".", ".."):
                self.error(key_node, f"{what}: reference {_show(reference)} is not a simple name like 'in' ([A-Za-z0-9][A-Za-z0-9._-]*)")
            elif not isinstance(bucket, str):
                self.error(value_node, f"{what}.{reference} must be a bucket name, got {_kind(bucket)} {_show(bucket)}")
            else:
                problem = _bucket_problem(bucket)
                if problem is not None:
                    self.error(value_node, f"{what}.{reference}: {bucket!r} is not a valid S3 bucket name: {problem}")
                else:
                    result[reference] = bucket
        return result

    # -- relations between services -----------------------------------------------------------

    def relations(self, system: SystemMap) -> None:
        topo = topology(system)
        lines = self.lines
        for queue, consumers in topo.consumers.items():
            for other in consumers[1:]:
                self.error(
                    lines.inbound.get(other, 0),
                    f"queue {queue!r} is consumed by both {consumers[0]!r} (line {lines.inbound.get(consumers[0], 0)}) and {other!r}: "
                    "each message would reach only one of them",
                )
        for queue, service in topo.entries:
            line = lines.inbound.get(service, 0)
            self.report("note", line, f"entry point: {service!r} consumes {queue!r}, which no service here routes to")
        for queue in topo.sinks:
            producers = [edge for edge in topo.edges if edge.queue == queue]
            sources = ", ".join(f"{edge.source} (case {format_case(edge.case)})" for edge in producers)
            first = min(lines.route.get((edge.source, queue), 0) for edge in producers)
            self.report("note", first, f"sink: queue {queue!r} is consumed by no service here (routed to by {sources})")
        for name in topo.terminal:
            self.report("note", lines.service.get(name, 0), f"sink: service {name!r} routes nowhere (no 'out')")
        for cycle in topo.cycles:
            self.report(
                "warning",
                lines.service.get(cycle[0], 0),
                f"cycle: {' -> '.join(cycle)}: a message can loop unless a handler stops routing it",
            )


def _construct(tag: str, text: str) -> Any:
    """A scalar's value under the core schema; ValueError for what a system map cannot hold."""
    if tag == _NULL:
        return None
    if tag == _BOOL:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() == "true"
    if tag == _INT:
        try:
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text, 10)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if tag == _FLOAT:
        special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
        try:
            return special.get(text.lower()) or float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if tag == _STR:
        return text
    raise ValueError(f"the YAML tag {tag} is not supported in a system map")


def _spellings(case: Case) -> set[str]:
    """How a case reads to a person: ``true``, ``1`` and ``"true"`` all read alike."""
    if isinstance(case, bool):
        return {str(case).lower(), str(int(case))}
    if isinstance(case, int):
        return {str(case)} | ({"true" if case else "false"} if case in (0, 1) else set())
    return {case.strip().lower()}


def _bucket_problem(name: str) -> str | None:
    """Why ``name`` breaks the S3 bucket naming rules, or None."""
    if not _S3_BUCKET.fullmatch(name):
        return "use 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    if ".." in name:
        return "two adjacent periods"
    if _IPV4.fullmatch(name):
        return "formatted as an IP address"
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3", "--x-s3")):
        return "a prefix or suffix that S3 reserves"
    return None


def _pass_entry_problem(name: str) -> str | None:
    if name.startswith("/") or ".." in name.split("/"):
        return "must be relative to the password store (no leading '/', no '..')"
    if any(ch.isspace() and ch != " " for ch in name):
        return "cannot contain line breaks or tabs"
    return None


def check_system_map(text: str, environ: Mapping[str, str] | None = None) -> tuple[SystemMap | None, list[Diagnostic]]:
    """Parse and check a YAML system map; the map is None when there is an error.

    ``${NAME}`` and ``${NAME:-default}`` in string values come from ``environ``
    (default: ``os.environ``).
    """
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join(filter(None, (exc.context, exc.problem)))
            return None, [Diagnostic(mark.line + 1 if mark is not None else 0, "error", f"YAML syntax: {problem}")]
        except yaml.YAMLError as exc:
            return None, [Diagnostic(0, "error", f"YAML: {exc}")]
        reader = _Reader(loader, os.environ if environ is None else environ)
        document = reader.document(root)
    finally:
        loader.dispose()
    system: SystemMap | None = None
    if not any(d.severity == "error" for d in reader.diagnostics):
        system = SystemMap(document)
        reader.relations(system)
    diagnostics = sorted(set(reader.diagnostics))
    return (None if any(d.severity == "error" for d in diagnostics) else system), diagnostics


def load_system_map(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> SystemMap:
    """The system map in a YAML file; SystemMapError (with every diagnostic) when it has errors."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SystemMapError(f"{name}: cannot read the system map: {reason}") from exc
    system, diagnostics = check_system_map(text, environ)
    if system is None:
        errors = [d.format(name) for d in diagnostics if d.severity == "error"]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SystemMapError(errors[0] + more, diagnostics)
    return system


# --------------------------------------------------------------------------- topology and graph


@dataclass(frozen=True)
class Edge:
    """Outputs of ``source`` with ``case`` go to ``queue``, consumed by ``target`` (None: a sink)."""

    source: str
    case: Case
    queue: str
    target: str | None


@dataclass
class Topology:
    """The service graph of a map: who feeds whom through which queue and case."""

    services: list[str]
    edges: list[Edge]
    #: queue → the services consuming it (more than one is an error in a map).
    consumers: dict[str, list[str]]
    #: (queue, service): inbound queues that no service routes to: where requests come in.
    entries: list[tuple[str, str]]
    #: Queues routed to that no service consumes.
    sinks: list[str]
    #: Services without routes.
    terminal: list[str]
    #: Each cycle once, as a closed path of service names: ``[a, b, a]``.
    cycles: list[list[str]]


def topology(system: SystemMap) -> Topology:
    services = system.services
    consumers: dict[str, list[str]] = {}
    for name, spec in services.items():
        consumers.setdefault(spec["in"], []).append(name)
    edges: list[Edge] = []
    routed: set[str] = set()
    for name, spec in services.items():
        for route in spec["out"]:
            for queue in dict.fromkeys(route["queues"]):
                routed.add(queue)
                for target in consumers.get(queue, [None]):
                    edges.append(Edge(name, route["case"], queue, target))
    entries = [(queue, name) for queue, names in consumers.items() if queue not in routed for name in names]
    sinks = list(dict.fromkeys(edge.queue for edge in edges if edge.target is None))
    terminal = [name for name, spec in services.items() if not any(route["queues"] for route in spec["out"])]
    return Topology(list(services), edges, consumers, entries, sinks, terminal, _cycles(list(services), edges))


def _cycles(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan's algorithm)."""
    successors: dict[str, list[str]] = {node: [] for node in nodes}
    for edge in edges:
        if edge.target is not None and edge.target not in successors[edge.source]:
            successors[edge.source].append(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in successors[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in nodes:
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component, key=nodes.index)
        if len(component) > 1 or start in successors[start]:
            cycles.append(_path_back(start, members, successors))
    return sorted(cycles, key=lambda cycle: nodes.index(cycle[0]))


def _path_back(start: str, members: set[str], successors: Mapping[str, list[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside its component."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for nxt in successors[path[-1]]:
            if nxt == start:
                return [*path, start]
            if nxt in members and nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    raise AssertionError("a component with a cycle has a path back")


def _edge_label(edge: Edge) -> list[str]:
    """The case in JSON spelling, and the queue unless it is drawn as a node of its own."""
    case = format_case(edge.case)
    return [case] if edge.target is None else [case, edge.queue]


def to_mermaid(system: SystemMap, title: str | None = None) -> str:
    """A Mermaid flowchart: services as nodes, queues as edges labelled with their case;
    entry and sink queues as queue-shaped nodes, services without routes as terminal nodes."""
    topo = topology(system)
    ids = {name: f"s{i}" for i, name in enumerate(topo.services)}
    queues = {queue: f"q{i}" for i, queue in enumerate(dict.fromkeys([q for q, _ in topo.entries] + topo.sinks))}
    lines = ["flowchart LR"]
    if title:
        lines.append(f"    %% {_mermaid_text(title)}")
    for name, node_id in ids.items():
        text = _mermaid_text(name)
        lines.append(f'    {node_id}(["{text}"]):::terminal' if name in topo.terminal else f'    {node_id}("{text}")')
    for queue, node_id in queues.items():
        lines.append(f'    {node_id}[("{_mermaid_text(queue)}")]:::queue')
    for queue, name in topo.entries:
        lines.append(f"    {queues[queue]} --> {ids[name]}")
    for edge in topo.edges:
        target = queues[edge.queue] if edge.target is None else ids[edge.target]
        label = "<br/>".join(_mermaid_text(part) for part in _edge_label(edge))
        lines.append(f'    {ids[edge.source]} -->|"{label}"| {target}')
    lines.append("    classDef queue fill:#eef4ff,stroke:#6b8cce")
    lines.append("    classDef terminal fill:#f4f4f4,stroke:#555,stroke-width:2px")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: quotes, angle brackets and '#' as entity codes."""
    return "".join({'"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;"}.get(ch, ch) for ch in text)


def to_dot(system: SystemMap, title: str | None = None) -> str:
    """The same picture as :func:`to_mermaid` in Graphviz DOT."""
    topo = topology(system)
    lines = ["digraph pipeline {", "    rankdir=LR;"]
    if title:
        lines.append(f"    label={_dot_string(title)}; labelloc=t; fontname=Helvetica;")
    lines.append("    node [fontname=Helvetica, fontsize=11];")
    lines.append("    edge [fontname=Helvetica, fontsize=9];")
    for name in topo.services:
        style = "shape=box, style=\"rounded,filled\", fillcolor=\"#f4f4f4\", peripheries=2" if name in topo.terminal else (
            "shape=box, style=rounded"
        )
        lines.append(f"    {_dot_string('service:' + name)} [label={_dot_string(name)}, {style}];")
    for queue in dict.fromkeys([q for q, _ in topo.entries] + topo.sinks):
        style = 'shape=cylinder, style=filled, fillcolor="#eef4ff"'
        lines.append(f"    {_dot_string('queue:' + queue)} [label={_dot_string(queue)}, {style}];")
    for queue, name in topo.entries:
        lines.append(f"    {_dot_string('queue:' + queue)} -> {_dot_string('service:' + name)};")
    for edge in topo.edges:
        target = "queue:" + edge.queue if edge.target is None else "service:" + edge.target
        label = "\\n".join(_dot_escape(part) for part in _edge_label(edge))
        lines.append(f'    {_dot_string("service:" + edge.source)} -> {_dot_string(target)} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _dot_string(text: str) -> str:
    return f'"{_dot_escape(text)}"'


# --------------------------------------------------------------------------- reloading


class SystemMapWatcher:
    """Reloads a YAML system map into a :class:`ConfigServer` when the file changes.

    It polls the file's (mtime, size, inode) every ``interval`` seconds in a daemon thread
    (editors that save by renaming change the inode). A change that does not load is
    logged with its line numbers and the server keeps serving the last good map.
    """

    def __init__(self, path: str | os.PathLike[str], interval: float = 1.0, environ: Mapping[str, str] | None = None) -> None:
        self.path = os.fspath(path)
        self.interval = interval
        self.environ = environ
        self.server: ConfigServer | None = None
        #: Successful loads so far, the first included.
        self.loads = 0
        #: Why the last change was refused (None after a good load).
        self.last_error: str | None = None
        self._signature: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> SystemMap:
        """Load the file now (SystemMapError on errors); later changes are measured from here."""
        signature = self._stat()  # before reading: a change during the read is seen next poll
        system = load_system_map(self.path, self.environ)
        self._signature = signature
        self.loads += 1
        self.last_error = None
        return system

    def poll(self) -> bool | None:
        """Reload if the file changed: True when the new map is served, False when it was
        refused (the old one stays), None when nothing changed."""
        signature = self._stat()
        if signature == self._signature:
            return None
        if signature is None:
            self._signature = None
            self.last_error = f"{self.path}: the file is gone"
            log.error("%s; keeping the last good system map", self.last_error)
            return False
        try:
            system = self.load()
        except SystemMapError as exc:
            self._signature = signature  # report a broken edit once, not every second
            self.last_error = str(exc)
            for line in [d.format(self.path) for d in exc.diagnostics if d.severity == "error"] or [str(exc)]:
                log.error("%s", line)
            log.error("%s: keeping the last good system map (%d services)", self.path, self._served_services())
            return False
        if self.server is not None:
            self.server.system = system
        log.info("reloaded %s: %d services", self.path, len(system.services))
        return True

    def _served_services(self) -> int:
        return len(self.server.system.services) if self.server is not None else 0

    def start(self, server: ConfigServer) -> None:
        """Poll in a daemon thread, swapping ``server.system`` on every good change."""
        self.server = server
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sysmap-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any surprise; the server keeps serving
                log.exception("reloading %s failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# --------------------------------------------------------------------------- serving


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ConfigServer


class _Handler(BaseHTTPRequestHandler):
    server_version = "slingshot-sysmap"
    timeout = 10  # a stalled client (or a TLS handshake that never comes) frees its thread

    def _send_json(self, status: HTTPStatus, value: object, allow: bool = False) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", "GET")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        owner = cast(_Server, self.server).owner
        owner.record(self.path)
        try:
            value = owner.system.lookup(self.path)
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            # a bad document answers 500 instead of dropping the connection
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
            log.debug("GET %s -> 500 (%s)", self.path, exc)
            return
        status = HTTPStatus.NOT_FOUND if value is None else HTTPStatus.OK
        self._send_json(status, {"error": f"not found: {self.path}"} if value is None else value)
        log.debug("GET %s -> %d", self.path, status)

    def _not_allowed(self) -> None:
        self._send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"{self.command} not allowed"},
            allow=True,
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read ``requests_log`` instead of stderr noise."""


class ConfigServer:
    """Serves a :class:`SystemMap` over HTTP, or HTTPS when ``certfile`` is given."""

    def __init__(
        self,
        system: SystemMap,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: str | None = None,
        keyfile: str | None = None,
        keep_requests: int | None = None,
    ) -> None:
        """``keep_requests`` bounds ``requests_log`` for a long-running service (unbounded by default, for tests)."""
        self.system = system
        self.host = host
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.keep_requests = keep_requests
        self.requests_log: list[str] = []
        self._log_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def record(self, path: str) -> None:
        with self._log_lock:
            self.requests_log.append(path)
            if self.keep_requests is not None and len(self.requests_log) > self.keep_requests:
                del self.requests_log[: len(self.requests_log) - self.keep_requests]

    def start(self) -> None:
        """Listen (on the same port again after a stop) and serve in a daemon thread."""
        if self._httpd is not None:
            return
        httpd = _Server((self.host, self.port), _Handler)
        httpd.owner = self
        if self.certfile is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.certfile, self.keyfile)
            # Handshake on first read, in the request thread, not in the accept loop.
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"sysmap:{self.port}",
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL; for TLS the name the certificate is issued for."""
        if self.certfile is not None:
            name = "localhost" if self.host in ("127.0.0.1", "localhost", "", "0.0.0.0", "::") else self.host
            return f"https://{name}:{self.port}"
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)
        return f"http://{host}:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _san_names(hostname: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the certificate, always covering localhost."""
    dns = ["localhost"]
    ips = ["127.0.0.1"]
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        if hostname not in dns:
            dns.insert(0, hostname)
    else:
        if hostname not in ips:
            ips.insert(0, hostname)
    return dns, ips


def _cert_with_cryptography(cert_path: Path, key_path: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    dns, ips = _san_names(hostname)
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    # Self-signed and its own trust anchor: CA:TRUE (critical) with SKI/AKI so that
    # strict verifiers (Python 3.13's VERIFY_X509_STRICT) accept it too.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert_with_openssl(cert_path: Path, key_path: Path, hostname: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the 'cryptography' package nor the openssl CLI is available")
    dns, ips = _san_names(hostname)
    san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "30", "-keyout", str(key_path), "-out", str(cert_path),
            "-subj", f"/CN={hostname}",
            "-addext", f"subjectAltName={san}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
            "-addext", "extendedKeyUsage=serverAuth",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    key_path.chmod(0o600)


def make_self_signed_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for ``hostname`` + localhost + 127.0.0.1.

    The certificate is its own CA, so clients verify with ``verify=cert``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _cert_with_openssl(cert_path, key_path, hostname)
    else:
        _cert_with_cryptography(cert_path, key_path, hostname)
    return cert_path, key_path
