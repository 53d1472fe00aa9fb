"""The YAML system map and ``slingshot sysmap``: parsing rules, ``check`` on broken maps (messages
and line numbers), ``graph`` output parsed, and ``serve`` under the real runtime over HTTP and
HTTPS, reloading when the file changes."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from test_cli_tools import SLINGSHOT, SYSTEM, assert_one_line_error, run

from conftest import Amqp, RunningService, Stack, put_object, read_object
from slingshot_runtime.errors import ExitCode
from slingshot_runtime.service import Service
from slingshot_runtime.settings import Settings
from slingshot_runtime.sysmap import (
    SystemMap,
    SystemMapError,
    SystemMapWatcher,
    check_system_map,
    load_system_map,
    make_self_signed_cert,
    to_mermaid,
    topology,
)


def check(text: str, environ: dict[str, str] | None = None) -> tuple[SystemMap | None, list[tuple[int, str, str]]]:
    system, diagnostics = check_system_map(textwrap.dedent(text), environ or {})
    return system, [(d.line, d.severity, d.message) for d in diagnostics]


SECTIONS = """\
rabbitmq: {host: h, username: u, password: p}
object-storage: {host: http://s3, access-key: s3/a, secret-key: s3/s}
postgres: {host: h, database: d, username: u, password: pg/p}
"""


# --------------------------------------------------------------------------- YAML rules


def test_only_true_and_false_are_booleans_and_cases_keep_their_type() -> None:
    system, found = check(SECTIONS + textwrap.dedent("""\
        services:
          svc:
            in: q
            out:
              - {case: true, queues: [a]}
              - {case: 1, queues: [b]}
              - {case: "1", queues: [c]}
              - {case: on, queues: [d]}
              - {case: 010, queues: [e]}
              - {case: 2024-01-02, queues: [f]}
              - {case: NO, queues: [g]}
              - {case: FALSE, queues: [h]}
        """))  # fmt: skip
    assert system is not None, found
    cases = [route["case"] for route in system.services["svc"]["out"]]
    assert cases == [True, 1, "1", "on", 10, "2024-01-02", "NO", False]
    assert [type(case) for case in cases] == [bool, int, str, str, int, str, str, bool]
    assert system.lookup("/svc") == {"in": "q", "out": system.services["svc"]["out"]}
    warnings = [(line, message) for line, severity, message in found if severity == "warning"]
    assert any(line == 10 and 'case "1" and case true (line 8) differ only in type' in m for line, m in warnings)
    assert (11, 'service \'svc\': case on is the string "on" (only true and false are booleans here, YAML 1.1 tools read it as a '
               "boolean): write true/false, or quote it") in warnings  # fmt: skip
    assert any(line == 14 and "case NO is the string" in m for line, m in warnings)


def test_environment_variables_are_substituted_and_plain_values_typed_after() -> None:
    text = """\
        rabbitmq:
          host: h
          port: ${PORT}
          username: u
          password: "${SECRET}"
          tls: ${TLS:-false}
        object-storage: {host: "${S3:-http://default}", access-key: a, secret-key: b}
        services:
          svc:
            in: ${PREFIX:-p}.in
            buckets:
              in: "literal-$${not-a-var}"
        """
    system, found = check(text, {"PORT": "5673", "SECRET": "123", "PREFIX": ""})
    assert system is None  # the bucket value is not a valid bucket name: '$', '{'
    assert [(line, severity) for line, severity, _ in found if severity == "error"] == [(12, "error")]
    assert "'literal-${not-a-var}' is not a valid S3 bucket name" in str(found)
    system, found = check(text.replace('"literal-$${not-a-var}"', "bucket-one"), {"PORT": "5673", "SECRET": "123", "PREFIX": ""})
    assert system is not None, found
    assert system.sections["rabbitmq"] == {"host": "h", "port": 5673, "username": "u", "password": "123", "tls": False}
    assert system.sections["object-storage"]["host"] == "http://default"
    assert system.services["svc"]["in"] == "p.in"  # ${X:-d}: an empty value takes the default, as in sh
    _, found = check(text, {"SECRET": "x"})
    assert (3, "error", "${PORT} is not set in the environment (set it, or write ${PORT:-default})") in found
    _, found = check("services:\n  a: {in: '${'}\n")
    assert any("'${' starts no variable" in message for _, _, message in found)


def test_anchors_merges_and_extension_keys() -> None:
    system, found = check(SECTIONS + textwrap.dedent("""\
        x-common: &common
          buckets: {in: shared-in}
        services:
          a:
            <<: *common
            in: qa
          b:
            <<: *common
            in: qb
            buckets: {in: own-in}
        """))  # fmt: skip
    assert system is not None, found
    assert system.lookup("/a/in") == "shared-in" and system.lookup("/b/in") == "own-in"


def test_load_system_map_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "system.yaml"
    path.write_text("services:\n  a:\n    in: q\n    ot: []\n    buckets: {in: BAD}\n")
    with pytest.raises(SystemMapError) as info:
        load_system_map(path)
    assert str(info.value).startswith(f"{path}:4: error: service 'a': unknown key \"ot\"")
    assert str(info.value).endswith("(and 1 more)")
    assert [d.line for d in info.value.diagnostics if d.severity == "error"] == [4, 5]
    with pytest.raises(SystemMapError, match="cannot read the system map"):
        load_system_map(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- check on broken maps

BROKEN = [
    pytest.param("services:\n  a: {in: q, ot: []}\n", [(2, "error", "unknown key \"ot\" (expected in, out, buckets); did you mean 'out'?")],
                 id="unknown-key"),
    pytest.param("servics: {}\n", [(1, "error", "the system map: unknown key \"servics\"")], id="unknown-top-level-key"),
    pytest.param("services:\n  a: {in: q1}\n  a: {in: q2}\n",
                 [(3, "error", "'services': duplicate key \"a\" (first on line 2); YAML would keep only the last")],
                 id="duplicate-service"),
    pytest.param("services:\n  a:\n    in: q\n    out:\n      - {case: 1, queues: [x]}\n      - {case: 1, queues: [y]}\n",
                 [(6, "warning", "case 1 is listed twice (first on line 5); the config protocol merges their queues")],
                 id="duplicate-case"),
    pytest.param("services:\n  a:\n    in: q\n    out:\n      - {case: true, queues: [x]}\n      - {case: 'true', queues: [y]}\n",
                 [(6, "warning", "case \"true\" and case true (line 5) differ only in type")], id="true-vs-string-true"),
    pytest.param("services:\n  a:\n    in: q\n    out:\n      - {case: '1', queues: [x]}\n      - {case: 1, queues: [y]}\n",
                 [(6, "warning", "case 1 and case \"1\" (line 5) differ only in type; routes match type and value, so a handler "
                                 "yielding 1 never takes the route of \"1\"")], id="one-vs-string-one"),
    pytest.param("services:\n  a:\n    in: q\n    out:\n      - {case: yes, queues: [x]}\n",
                 [(5, "warning", "case yes is the string \"yes\"")], id="yaml11-boolean-word"),
    pytest.param("services:\n  a: {in: shared}\n  b: {in: other}\n  c:\n    in: shared\n",
                 [(5, "error", "queue 'shared' is consumed by both 'a' (line 2) and 'c': each message would reach only one of them")],
                 id="queue-consumed-twice"),
    pytest.param("services:\n  a:\n    in: q\n    out:\n      - case: 3\n        queues:\n          - nobody-reads-this\n",
                 [(7, "note", "sink: queue 'nobody-reads-this' is consumed by no service here (routed to by a (case 3))")],
                 id="sink-queue"),
    pytest.param("services:\n  a:\n    in: qa\n    out: [{case: true, queues: [qb]}]\n"
                 "  b:\n    in: qb\n    out: [{case: 0, queues: [qa]}]\n",
                 [(2, "warning", "cycle: a -> b -> a: a message can loop unless a handler stops routing it")], id="cycle"),
    pytest.param("services:\n  a:\n    in: q\n    buckets:\n      in: My_Bucket\n      ok: ab\n",
                 [(5, "error", "buckets.in: 'My_Bucket' is not a valid S3 bucket name"),
                  (6, "error", "buckets.ok: 'ab' is not a valid S3 bucket name")], id="bad-bucket-names"),
    pytest.param("services:\n  a:\n    in: q\n    buckets:\n      ../up: fine-bucket\n      x: 192.168.1.1\n",
                 [(5, "error", "reference \"../up\" is not a simple name"), (6, "error", "formatted as an IP address")],
                 id="bad-reference"),
    pytest.param("services:\n  a:\n    in: q\n    out:\n      - {case: 1.5, queues: [x]}\n      - {case: null, queues: [y]}\n"
                 "      - {queues: [z]}\n      - {case: 2}\n      - {case: 3, queues: z}\n",
                 [(5, "error", "a case is true/false, an integer or a string, got a number 1.5"),
                  (6, "error", "got null null"), (7, "error", "out[2] has no 'case'"), (8, "error", "out[3] (case 2) has no 'queues'"),
                  (9, "error", "'queues' must be a list of queue names (write [z] for one)")], id="bad-routes"),
    pytest.param("services:\n  rabbitmq: {in: q}\n  a/b: {in: q2}\n  c: {in: amq.c}\n  d: {out: []}\n",
                 [(2, "error", "service name 'rabbitmq' is reserved"), (3, "error", "cannot contain '/'"),
                  (4, "error", "starts with 'amq.', which RabbitMQ reserves"), (5, "error", "service 'd' has no 'in'")], id="bad-names"),
    pytest.param("rabbitmq:\n  host: h\n  port: abc\n  tls: yes\n  user: u\npostgres:\n  host: h\n  database: d\n  username: u\n"
                 "  password: ../../etc/shadow\n",
                 [(2, "error", "section 'rabbitmq' is missing 'username'"), (2, "error", "section 'rabbitmq' is missing 'password'"),
                  (3, "error", "rabbitmq.port must be an integer, got a string \"abc\""),
                  (4, "error", "rabbitmq.tls must be true or false, got a string \"yes\" (only true and false are booleans"),
                  (5, "error", "unknown key \"user\""),
                  (10, "error", "postgres.password is a GNU pass entry name (not the secret) and must be relative to the password store")],
                 id="bad-sections"),
    pytest.param("services:\n  a: {in: q\n", [(3, "error", "YAML syntax: while parsing a flow mapping")], id="yaml-syntax"),
    pytest.param("", [(0, "error", "the file is empty")], id="empty"),
    pytest.param("- a\n", [(1, "error", "the system map must be a mapping, got a list")], id="not-a-mapping"),
]  # fmt: skip


@pytest.mark.parametrize("text,expected", BROKEN)
def test_check_explains_broken_maps_with_line_numbers(text: str, expected: list[tuple[int, str, str]]) -> None:
    _, found = check(text)
    for line, severity, fragment in expected:
        assert any((f_line, f_severity) == (line, severity) and fragment in message for f_line, f_severity, message in found), (
            line, severity, fragment, found)
    unexpected = [f for f in found if f[1] == "error" and not any(f[:2] == e[:2] and e[2] in f[2] for e in expected)]
    assert not unexpected, found


def test_check_command_prints_file_line_severity(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(SECTIONS + "services:\n  a:\n    in: q\n    buckets: {in: BAD}\n    out:\n      - {case: on, queues: [x]}\n")
    result = run("sysmap", "check", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}:7: error: service 'a': buckets.in: 'BAD' is not a valid S3 bucket name: use 3-63 lowercase letters, " \
                       "digits, '.' and '-', starting and ending with a letter or digit"  # fmt: skip
    assert lines[1].startswith(f"{path}:9: warning: service 'a': case on is the string \"on\"")
    assert lines[-1] == f"{path}: 1 error(s), 1 warning(s)"
    assert re.fullmatch(r"(.+):(\d+): (error|warning|note): .+", lines[0])


def test_check_command_on_the_example_and_strict(tmp_path: Path) -> None:
    result = run("sysmap", "check", env={"SLINGSHOT_SYSTEM_MAP": str(SYSTEM)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"{SYSTEM}: 0 error(s), 0 warning(s); 4 services, 4 queues, 1 entry point(s), 2 sink(s), 0 cycle(s)"
    )
    assert f"{SYSTEM}:61: note: sink: service 'positive' routes nowhere (no 'out')" in result.stdout
    warned = tmp_path / "warned.yaml"
    warned.write_text(SECTIONS + "services:\n  a:\n    in: q\n    out:\n      - {case: 1, queues: [x]}\n      - {case: '1', queues: [y]}\n")
    assert run("sysmap", "check", str(warned)).exit_code == 0
    assert run("sysmap", "check", "--strict", str(warned)).exit_code == 1
    assert run("sysmap", "check", str(warned), env={"SLINGSHOT_SYSMAP_STRICT": "1"}).exit_code == 1
    assert_one_line_error(run("sysmap", "check", str(tmp_path / "missing.yaml")), 2, "cannot read", "missing.yaml")


def test_check_through_the_console_script(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("services:\n  a: {in: q, ot: []}\n")
    proc = subprocess.run([SLINGSHOT, "sysmap", "check", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"{path}:2: error: service 'a': unknown key \"ot\" (expected in, out, buckets); did you mean 'out'?\n" in proc.stdout


# --------------------------------------------------------------------------- topology and graph

GRAPHED = SECTIONS + """\
services:
  front:
    in: requests
    out:
      - {case: true, queues: [middle-in]}
      - {case: "1", queues: [archive]}
  middle:
    in: middle-in
    out:
      - {case: 1, queues: [back-in, archive]}
      - {case: "say \\"hi\\"", queues: [middle-in]}
  back:
    in: back-in
"""


def test_topology() -> None:
    system = load_ok(GRAPHED)
    topo = topology(system)
    assert topo.entries == [("requests", "front")]
    assert topo.sinks == ["archive"]
    assert topo.terminal == ["back"]
    assert topo.cycles == [["middle", "middle"]]
    assert topo.consumers == {"requests": ["front"], "middle-in": ["middle"], "back-in": ["back"]}


def load_ok(text: str) -> SystemMap:
    system, diagnostics = check_system_map(text, {})
    assert system is not None, diagnostics
    return system


MERMAID_NODE = re.compile(r'^    (\w+)(?:\("(.*)"\)|\(\["(.*)"\]\):::terminal|\[\("(.*)"\)\]:::queue)$')
MERMAID_EDGE = re.compile(r'^    (\w+) -->(?:\|"(.*)"\|)? (\w+)$')


def parse_mermaid(text: str) -> tuple[dict[str, tuple[str, str]], set[tuple[str, str, str]]]:
    """(node id → (kind, label), {(source label, edge label, target label)}), entities decoded."""

    def decode(value: str) -> str:
        return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), value).replace("#quot;", '"').replace("#lt;", "<").replace("#gt;", ">")

    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes: dict[str, tuple[str, str]] = {}
    edges: set[tuple[str, str, str]] = set()
    for line in lines[1:]:
        if line.startswith(("    %%", "    classDef")):
            continue
        if node := MERMAID_NODE.match(line):
            node_id, service, terminal, queue = node.groups()
            kind = "service" if service is not None else "terminal" if terminal is not None else "queue"
            nodes[node_id] = (kind, decode(service or terminal or queue))
        elif edge := MERMAID_EDGE.match(line):
            source, label, target = edge.groups()
            edges.add((nodes[source][1], decode(label or "").replace("<br/>", " | "), nodes[target][1]))
        else:
            raise AssertionError(f"not a Mermaid node or edge: {line!r}")
    return nodes, edges


def test_mermaid_structure() -> None:
    nodes, edges = parse_mermaid(to_mermaid(load_ok(GRAPHED), "a # title"))
    assert sorted(nodes.values()) == [("queue", "archive"), ("queue", "requests"), ("service", "front"), ("service", "middle"),
                                      ("terminal", "back")]  # fmt: skip
    assert edges == {
        ("requests", "", "front"),
        ("front", "true | middle-in", "middle"),
        ("front", '"1"', "archive"),
        ("middle", "1 | back-in", "back"),
        ("middle", "1", "archive"),
        ("middle", '"say \\"hi\\"" | middle-in', "middle"),
    }


def test_graph_command_writes_mermaid_and_svg(tmp_path: Path) -> None:
    path = tmp_path / "system.yaml"
    path.write_text(GRAPHED)
    stdout = run("sysmap", "graph", str(path))
    assert stdout.exit_code == 0 and parse_mermaid(stdout.stdout)[1] == parse_mermaid(to_mermaid(load_ok(GRAPHED)))[1]
    assert run("sysmap", "graph", str(path), "-o", str(tmp_path / "out" / "p.mmd")).exit_code == 0
    assert parse_mermaid((tmp_path / "out" / "p.mmd").read_text())[0]
    assert shutil.which("dot"), "Graphviz is not installed: scripts/bootstrap.sh installs it"
    result = run("sysmap", "graph", str(path), env={"SLINGSHOT_SYSMAP_GRAPH": str(tmp_path / "p.svg")})
    assert result.exit_code == 0 and result.stdout == f"wrote {tmp_path / 'p.svg'}\n", result.output
    svg = ET.parse(tmp_path / "p.svg").getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    titles = {html.unescape(g.findtext("svg:title", "", ns)): g for g in svg.iterfind(".//svg:g", ns)}
    for name in ("service:front", "service:middle", "service:back", "queue:archive", "queue:requests"):
        assert name in titles and titles[name].get("class") == "node", name
    edge = titles["service:front->service:middle"]
    assert edge.get("class") == "edge" and [t.text for t in edge.iterfind("svg:text", ns)] == ["true", "middle-in"]
    assert [t.text for t in titles["service:middle->service:middle"].iterfind("svg:text", ns)] == ['"say \\"hi\\""', "middle-in"]
    assert run("sysmap", "graph", str(path), "-o", str(tmp_path / "p.png")).exit_code == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run("sysmap", "graph", str(path), "-o", str(tmp_path / "p.dot")).exit_code == 0
    assert (tmp_path / "p.dot").read_text().startswith("digraph pipeline {")


def test_graph_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "system.yaml"
    path.write_text(GRAPHED)
    assert_one_line_error(run("sysmap", "graph", str(path), "-o", "p.svg", "--dot", "no-such-dot"), 1,
                          "needs Graphviz", "apt-get install graphviz", "-o p.mmd")  # fmt: skip
    assert_one_line_error(run("sysmap", "graph", str(path), "-o", "p.txt"), 2, "cannot tell the format", ".mmd")
    broken = tmp_path / "broken.yaml"
    broken.write_text("services:\n  a: {in: q, ot: []}\n  b: {}\n")
    assert_one_line_error(run("sysmap", "graph", str(broken)), 3, f"{broken}:2: error:", "(and 1 more)", "slingshot sysmap check")


# --------------------------------------------------------------------------- serve


@contextlib.contextmanager
def serving(path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """``slingshot sysmap serve PATH`` (the console script) on a free port: (its URL, its log file)."""
    log = path.with_name(path.name + ".log")
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [SLINGSHOT, "sysmap", "serve", str(path), "--port", "0", "--reload-interval", "0.2", *args],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " on " in line, f"sysmap serve did not start: {line!r}\n{log.read_text()}"
        yield line.rsplit(" on ", 1)[1].strip(), log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()


def service_map(stack: Stack, name: str, suffix: str) -> str:
    """A system map for one service with a route per case type; S3's endpoint comes from ${S3_ENDPOINT}."""
    return textwrap.dedent(f"""\
        rabbitmq: {{host: 127.0.0.1, port: 5672, username: guest, password: guest}}
        object-storage:
          host: ${{S3_ENDPOINT}}
          access-key: s3/access-key
          secret-key: s3/secret-key
        postgres: {{host: 127.0.0.1, database: test, username: postgres, password: postgres/password}}
        services:
          {name}:
            in: {name}-in
            buckets: {{in: in-{suffix}, out: out-{suffix}}}
            out:
              - {{case: true, queues: [{name}-bool]}}
              - {{case: 1, queues: [{name}-int]}}
              - {{case: "1", queues: [{name}-str]}}
        """)  # fmt: skip


def three_cases(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
    write_file("out", request).write(read_file("in", request).read().upper())
    connection.exec_driver_sql("SELECT 1")
    return [(request, True), (request + 1, 1), (request + 2, "1")]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_serve_drives_the_real_runtime(tls: bool, stack: Stack, amqp: Amqp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suffix = uuid.uuid4().hex[:8]
    name = f"sysmap-{suffix}"
    stack.queues.append(name)  # the session deletes every queue starting with it
    for bucket in (f"in-{suffix}", f"out-{suffix}"):
        stack.s3.create_bucket(bucket)
    put_object(stack, f"in-{suffix}", 40, b"hello")
    path = tmp_path / "system.yaml"
    path.write_text(service_map(stack, name, suffix))
    args: list[str] = []
    if tls:
        cert, key = make_self_signed_cert(tmp_path / "tls")
        args = ["--cert", str(cert), "--key", str(key)]
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # how a worker trusts a private CA
    with serving(path, *args, "--log-level", "DEBUG", env={"S3_ENDPOINT": stack.s3.endpoint}) as (url, log):
        assert url.startswith("https://localhost:" if tls else "http://127.0.0.1:")
        settings = Settings.load(name, url, environ={}, retry_delay=0.2, health_port=0)
        running = RunningService(Service(settings, three_cases)).start()
        try:
            amqp.send(f"{name}-in", 40)
            got = {queue: amqp.get(f"{name}-{queue}") for queue in ("bool", "int", "str")}
        finally:
            assert running.stop() == ExitCode.OK
        assert {q: (body, p.headers["x-slingshot-case"]) for q, (body, p) in got.items()} == {
            "bool": (b"40", "true"), "int": (b"41", "1"), "str": (b"42", '"1"'),
        }  # fmt: skip
        assert read_object(stack, f"out-{suffix}", 40) == b"HELLO"
        served = log.read_text()
        for document in (f"/{name}", "/rabbitmq", "/object-storage", "/postgres", f"/{name}/in", f"/{name}/out"):
            assert f"GET {document} -> 200" in served, served


def test_serve_reloads_on_change_and_keeps_the_last_good_map(tmp_path: Path) -> None:
    path = tmp_path / "system.yaml"
    path.write_text(SECTIONS + "services:\n  svc: {in: first}\n")
    with serving(path) as (url, log):
        assert requests.get(f"{url}/svc", timeout=5).json() == {"in": "first", "out": []}
        path.write_text(SECTIONS + "services:\n  svc:\n    in: first\n    out: [{case: 2, queues: [second]}]\n")
        wait_for(lambda: requests.get(f"{url}/svc", timeout=5).json()["out"] == [{"case": 2, "queues": ["second"]}])
        path.write_text(SECTIONS + "services:\n  svc:\n    in: first\n    ot: []\n")  # a broken edit
        wait_for(lambda: "keeping the last good system map" in log.read_text())
        assert f"{path}:7: error: service 'svc': unknown key \"ot\"" in log.read_text()
        assert requests.get(f"{url}/svc", timeout=5).json()["out"] == [{"case": 2, "queues": ["second"]}]
        assert requests.get(f"{url}/rabbitmq", timeout=5).json()["host"] == "h"
        path.write_text(SECTIONS + "services:\n  renamed: {in: third}\n")
        wait_for(lambda: requests.get(f"{url}/renamed", timeout=5).status_code == 200)
        assert requests.get(f"{url}/svc", timeout=5).status_code == 404
        assert "reloaded" in log.read_text()


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_watcher_keeps_the_map_when_the_file_goes_away(tmp_path: Path) -> None:
    path = tmp_path / "system.yaml"
    path.write_text("services:\n  a: {in: q}\n")
    watcher = SystemMapWatcher(path, environ={})
    system = watcher.load()
    assert watcher.poll() is None
    moved = path.rename(tmp_path / "elsewhere.yaml")
    assert watcher.poll() is False and watcher.last_error is not None and "gone" in watcher.last_error
    assert watcher.poll() is None  # said once
    moved.rename(path)
    assert watcher.poll() is True and watcher.loads == 2
    assert system.lookup("/a") == {"in": "q", "out": []}


def test_serve_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("services:\n  a: {in: q, ot: []}\n")
    assert_one_line_error(run("sysmap", "serve", str(broken)), 3, f"{broken}:2: error: service 'a': unknown key")
    assert_one_line_error(run("sysmap", "serve", str(tmp_path / "none.yaml")), 3, "cannot read the system map")
    good = tmp_path / "good.yaml"
    good.write_text("services:\n  a: {in: q}\n")
    assert_one_line_error(run("sysmap", "serve", str(good), "--key", "k.pem"), 2, "--key needs --cert")
    assert_one_line_error(run("sysmap", "serve", str(good), "--cert", str(tmp_path / "no.pem")), 2, "is not a file")
    not_a_cert = tmp_path / "bad.pem"
    not_a_cert.write_text("nonsense")
    assert_one_line_error(run("sysmap", "serve", str(good), "--port", "0", "--cert", str(not_a_cert)), 2, "cannot serve HTTPS")
    with serving(good) as (url, _):
        port = url.rsplit(":", 1)[1]
        assert_one_line_error(run("sysmap", "serve", str(good), "--port", port), 2, f"cannot listen on 127.0.0.1:{port}")
        assert_one_line_error(run("sysmap", "serve", str(good), env={"SLINGSHOT_SYSMAP_PORT": port}), 2, "cannot listen")


def test_a_literal_password_never_appears_in_a_message() -> None:
    _, found = check("rabbitmq:\n  host: h\n  username: u\n  password: 123456\n")
    assert (4, "error", "rabbitmq.password must be a non-empty string, got an integer") in found
    assert "123456" not in str(found)
