"""``slingshot invoke``, ``send`` and ``peek`` with good and bad input, through click's CliRunner
and through the installed console script, against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy
from click.testing import CliRunner, Result

from conftest import DATABASE_URL, REPO, Amqp
from slingshot_runtime.cli import main
from slingshot_runtime.cli.tools import DEFAULT_AMQP_URL, parse_case

PIPELINE = REPO / "examples" / "pipeline"
SYSTEM = PIPELINE / "system.yaml"
#: The console script pip installed next to this Python (not a pyenv shim); PATH as a fallback.
SLINGSHOT = str(Path(sys.executable).with_name("slingshot")) if Path(sys.executable).with_name("slingshot").exists() else "slingshot"


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    """The CLI in-process; SLINGSHOT_* variables of the caller's environment do not leak in."""
    clean = {key: None for key in os.environ if key.startswith("SLINGSHOT_")}
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})}, input=stdin, catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """A failure is one ``error: ...`` line on stderr, nothing on stdout, and the exit code."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "", result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def console(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert shutil.which(SLINGSHOT), "the slingshot console script is not installed (pip install -e .)"
    return subprocess.run(
        [SLINGSHOT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SLINGSHOT_")}, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def queue(amqp: Amqp) -> Iterator[str]:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    amqp.declare(name)
    yield name
    amqp.delete(name)


# --------------------------------------------------------------------------- every command


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


MINE = ("sysmap", "invoke", "send", "peek")


@pytest.mark.parametrize("path", [path for path, _ in _commands(main) if path[0] in MINE], ids=" ".join)
def test_help_everywhere_through_the_console_script(path: tuple[str, ...]) -> None:
    proc = console(*path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: slingshot {' '.join(path)}"), proc.stdout


def test_every_option_reads_a_slingshot_variable() -> None:
    for path, command in _commands(main):
        if path[0] not in MINE:
            continue
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                assert isinstance(param.envvar, str) and param.envvar.startswith("SLINGSHOT_"), (path, param.name)


def test_a_case_keeps_its_type() -> None:
    assert parse_case("true") is True and parse_case("false") is False
    assert parse_case("1") == 1 and type(parse_case("1")) is int
    assert parse_case('"1"') == "1" and parse_case("big") == "big" and parse_case('"true"') == "true"


# --------------------------------------------------------------------------- invoke


def test_invoke_with_the_system_map_prints_outputs_routes_and_files(tmp_path: Path) -> None:
    sample = tmp_path / "review.txt"
    sample.write_bytes(b"  GREAT food,\tLOVE it ")
    result = run("invoke", str(PIPELINE / "ingest" / "handler.py"), "7", "--input", f"raw={sample}",
                 "--output", str(tmp_path / "out"), "--system", str(SYSTEM), "--service", "ingest")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "7  case true  ->  pipeline.classify" in result.stdout
    assert f"text/7  19 bytes  ->  {tmp_path / 'out' / 'text' / '7'}" in result.stdout
    assert (tmp_path / "out" / "text" / "7").read_bytes() == b"great food, love it"


def test_invoke_json_with_routes_of_every_case_type(tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text("def process(request, read_file, write_file, connection):\n    return [(request, True), (1, 1), (2, '1')]\n")
    result = run("invoke", str(handler), "5", "--json", "-r", "true=a", "-r", "1=b", "-r", '"1"=c', "-r", "1=b2")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["outputs"] == [
        {"id": 5, "case": True, "queues": ["a"]},
        {"id": 1, "case": 1, "queues": ["b", "b2"]},
        {"id": 2, "case": "1", "queues": ["c"]},
    ]
    assert document["written"] == []


def test_invoke_without_routes_reports_cases_unrouted(tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text("def process(request, read_file, write_file, connection):\n    yield (request, 'x')\n")
    result = run("invoke", str(handler), "3")
    assert result.exit_code == 0, result.output
    assert '3  case "x"  ->  not routed' in result.stdout


def test_invoke_commits_to_the_database_url(tmp_path: Path, table: str, engine: sqlalchemy.Engine) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(textwrap.dedent(f"""\
        from sqlalchemy import text
        def process(request, read_file, write_file, connection):
            connection.execute(text("INSERT INTO {table} (id, note) VALUES (:id, 'x')"), {{"id": request}})
            if request == 2:
                raise ValueError("after the insert")
            return []
        """))  # fmt: skip
    assert run("invoke", str(handler), "1", "--database-url", DATABASE_URL).exit_code == 0
    failed = run("invoke", str(handler), "2", "--database-url", DATABASE_URL)
    assert_one_line_error(failed, 8, "HandlerError", "ValueError: after the insert", "--traceback")
    with engine.connect() as conn:
        assert [int(r[0]) for r in conn.exec_driver_sql(f"SELECT id FROM {table}")] == [1]  # 2 was rolled back


def test_invoke_traceback_on_request(tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text("def process(request, read_file, write_file, connection):\n    raise KeyError('boom')\n")
    result = run("invoke", str(handler), "1", "--traceback")
    assert result.exit_code == 8
    assert "Traceback (most recent call last)" in result.stderr and "KeyError: 'boom'" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: HandlerError")


@pytest.mark.parametrize(
    "args,code,fragments",
    [
        (["nope.py", "1"], 10, ["HandlerLoadError", "nope.py"]),
        (["{ingest}", "x"], 2, ["REQUEST must be a u64", "'x'"]),
        (["{ingest}", "18446744073709551616"], 2, ["REQUEST must be a u64"]),
        (["{ingest}", "1", "--input", "raw"], 2, ["REF=PATH"]),
        (["{ingest}", "1", "--input", "raw=/no/such/file"], 2, ["is not a file"]),
        (["{ingest}", "1", "--input", "raw/x=/etc/hostname"], 2, ["ID must be a u64"]),
        (["{ingest}", "1", "--input", "a b=/etc/hostname"], 1, ["BadKeyError", "simple name"]),
        (["{ingest}", "1", "--route", "true"], 2, ["CASE=QUEUE"]),
        (["{ingest}", "1", "--route", "1.5=q"], 2, ["true/false, an integer or a string"]),
        (["{ingest}", "1"], 6, ["StorageError", "NoSuchKey", "--input REF=PATH"]),
        (["{ingest}", "1", "--system", "{system}"], 2, ["--system needs --service"]),
        (["{ingest}", "1", "--system", "{system}", "--service", "nope"], 2, ["no service 'nope'", "ingest, classify"]),
        (["{ingest}", "1", "--system", "/no/such.yaml", "--service", "x"], 3, ["cannot read the system map"]),
        (["{ingest}", "1", "-i", "raw=/etc/hostname", "--route", "false=q"], 1, ["UnroutableError", "case true has no route"]),
        (["{classify}", "1", "-i", "text=/etc/hostname", "--system", "{system}", "--service", "ingest"], 3,
         ["ConfigError", "no bucket reference 'scores'"]),
        (["{ingest}", "1", "-i", "raw=/etc/hostname", "--database-url", "postgresql+psycopg2://nobody@127.0.0.1:1/x"], 7,
         ["DatabaseError"]),
    ],
)  # fmt: skip
def test_invoke_bad_input_is_one_clear_line(args: list[str], code: int, fragments: list[str]) -> None:
    paths = {"ingest": PIPELINE / "ingest" / "handler.py", "classify": PIPELINE / "classify" / "handler.py", "system": SYSTEM}
    result = run("invoke", *[arg.format(**paths) for arg in args])
    assert_one_line_error(result, code, *fragments)


def test_invoke_reads_its_options_from_slingshot_variables(tmp_path: Path) -> None:
    sample = tmp_path / "review.txt"
    sample.write_bytes(b"fine")
    env = {"SLINGSHOT_INVOKE_INPUT": f"raw={sample}", "SLINGSHOT_SYSTEM_MAP": str(SYSTEM), "SLINGSHOT_SERVICE": "ingest",
           "SLINGSHOT_INVOKE_JSON": "1", "SLINGSHOT_INVOKE_OUTPUT": str(tmp_path / "out")}  # fmt: skip
    result = run("invoke", str(PIPELINE / "ingest" / "handler.py"), "9", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"] == [{"id": 9, "case": True, "queues": ["pipeline.classify"]}]
    assert (tmp_path / "out" / "text" / "9").read_bytes() == b"fine"


def test_invoke_through_the_console_script(tmp_path: Path) -> None:
    sample = tmp_path / "review.txt"
    sample.write_bytes(b"good good slow")
    proc = console("invoke", str(PIPELINE / "classify" / "handler.py"), "4", "-i", f"text={sample}",
                   "--system", str(SYSTEM), "--service", "classify", "-o", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "4  case true  ->  pipeline.positive" in proc.stdout
    assert json.loads((tmp_path / "scores" / "4").read_text())["score"] == 1
    bad = console("invoke", "missing.py", "4")
    assert bad.returncode == 10 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: HandlerLoadError")


# --------------------------------------------------------------------------- send


def test_send_publishes_persistent_messages(queue: str, amqp: Amqp) -> None:
    assert_one_line_error(run("send", queue, "-", stdin=""), 2, "no IDs")
    result = run("send", queue, "1", "18446744073709551615", "-", stdin="7 8\n9\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"sent 5 message(s) to {queue}\n"
    messages = amqp.get_all(queue, 5)
    assert [body for body, _ in messages] == [b"1", b"18446744073709551615", b"7", b"8", b"9"]
    assert all(p.delivery_mode == 2 and p.content_type == "text/plain" and p.message_id for _, p in messages)
    assert amqp.empty(queue, wait=0.1)


def test_send_be64_from_the_variable(queue: str, amqp: Amqp) -> None:
    result = run("send", queue, "258", env={"SLINGSHOT_BODY_FORMAT": "be64"})
    assert result.exit_code == 0, result.output
    assert amqp.get(queue)[0] == (258).to_bytes(8, "big")


@pytest.mark.parametrize(
    "args,env,code,fragments",
    [
        (["{queue}", "--", "-1"], {}, 2, ["ID must be a u64", "'-1'"]),
        (["{queue}", "1", "18446744073709551616"], {}, 2, ["ID must be a u64"]),
        (["{queue}", "1", "x"], {}, 2, ["'x'"]),
        (["no-such-queue-{queue}", "1"], {}, 5, ["does not exist"]),
        (["{queue}", "1"], {"SLINGSHOT_AMQP_URL": "http://127.0.0.1"}, 2, ["amqp://USER:PASSWORD@HOST:PORT/VHOST"]),
        (["{queue}", "1", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F"], {}, 5, ["cannot connect to RabbitMQ at 127.0.0.1:1"]),
        (["{queue}", "1", "--amqp-url", "amqp://guest:wrong@127.0.0.1:5672/%2F"], {}, 5, ["cannot connect"]),
    ],
)  # fmt: skip
def test_send_bad_input_is_one_clear_line(
    queue: str, amqp: Amqp, args: list[str], env: dict[str, str], code: int, fragments: list[str]
) -> None:
    result = run("send", *[arg.format(queue=queue) for arg in args], env=env)
    line = assert_one_line_error(result, code, *fragments)
    assert "wrong" not in line  # never the password
    assert amqp.count(queue) == 0  # nothing half-sent: ids are checked before connecting


def test_send_and_peek_through_the_console_script(queue: str, amqp: Amqp) -> None:
    sent = console("send", queue, "3", "4")
    assert sent.returncode == 0 and sent.stdout == f"sent 2 message(s) to {queue}\n", sent.stderr
    peeked = console("peek", queue, "--json", env={"SLINGSHOT_AMQP_URL": DEFAULT_AMQP_URL})
    assert peeked.returncode == 0, peeked.stderr
    assert [m["body"] for m in json.loads(peeked.stdout)] == ["3", "4"]
    assert amqp.count(queue) == 2
    bad = console("send", queue, "three")
    assert bad.returncode == 2 and bad.stderr == "error: ID must be a u64 (0..18446744073709551615), got 'three'\n"


# --------------------------------------------------------------------------- peek


def test_peek_shows_headers_and_leaves_the_messages_in_order(queue: str, amqp: Amqp) -> None:
    for n in range(1, 6):
        amqp.send(queue, n, headers={"x-slingshot-case": '"1"', "x-slingshot-source": "ingest", "n": n})
    result = run("peek", queue, "-n", "3")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"{queue}: 5 ready, 0 consumer(s); showing 3")
    blocks = result.stdout.split("#")[1:]
    assert [block.split()[0] for block in blocks] == ["1", "2", "3"]
    assert "body 1" in blocks[0] and 'x-slingshot-case: "\\"1\\""' in blocks[0] and 'x-slingshot-source: "ingest"' in blocks[0]
    assert "delivery_mode: 2" in blocks[0]
    assert [int(amqp.get(queue)[0]) for _ in range(5)] == [1, 2, 3, 4, 5]  # nothing consumed, order kept


def test_peek_json_and_count_from_the_variable(queue: str, amqp: Amqp) -> None:
    for n in (10, 11, 12):
        amqp.send(queue, n)
    result = run("peek", queue, "--json", env={"SLINGSHOT_PEEK_COUNT": "2"})
    assert result.exit_code == 0, result.output
    messages = json.loads(result.stdout)
    assert [(m["index"], m["body"]) for m in messages] == [(1, "10"), (2, "11")]
    assert messages[0]["properties"]["delivery_mode"] == 2
    assert amqp.count(queue) == 3


def test_peek_an_empty_queue(queue: str) -> None:
    result = run("peek", queue)
    assert result.exit_code == 0 and result.stdout == ""
    assert "0 ready" in result.stderr


@pytest.mark.parametrize(
    "args,code,fragments",
    [
        (["no-such-queue-x1"], 5, ["queue 'no-such-queue-x1' does not exist"]),
        (["{queue}", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F"], 5, ["cannot connect"]),
        (["{queue}", "--amqp-url", "nonsense"], 2, ["--amqp-url"]),
    ],
)
def test_peek_bad_input_is_one_clear_line(queue: str, args: list[str], code: int, fragments: list[str]) -> None:
    assert_one_line_error(run("peek", *[arg.format(queue=queue) for arg in args]), code, *fragments)


def test_peek_count_must_be_positive(queue: str) -> None:
    result = run("peek", queue, "-n", "0")
    assert result.exit_code == 2 and "-n" in result.stderr
