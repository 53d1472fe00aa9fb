"""``slingshot dlq list|show|replay|purge`` against dead letters made by a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import Amqp, RunningService, ServiceDef, Stack
from slingshot_runtime.cli import main

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
POISON = [b"abc", b"-1"]
FAILING = [1, 2, 3]
CUSTOM = {"x-custom": "keep", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@dataclass
class DeadLetters:
    """A running service whose handler fails until ``fixed`` is set, and the DLQ it filled."""

    service: ServiceDef
    running: RunningService
    config_url: str
    fixed: bool = False
    calls: list[int] = field(default_factory=list)

    @property
    def dlq(self) -> str:
        return self.service.inbound + ".dlq"

    def cli(self, *args: str, input: str | None = None) -> Result:
        """``slingshot dlq COMMAND SERVICE ARGS...`` through click's runner."""
        command, *rest = args
        return CliRunner().invoke(main, ["dlq", command, self.service.name, *rest, "--config-host", self.config_url], input=input)


def wait_count(amqp: Amqp, queue: str, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (count := amqp.count(queue)) != expected:
        assert time.monotonic() < deadline, f"{queue} holds {count} messages, expected {expected}"
        amqp.connection.sleep(0.05)


def listed(dead: DeadLetters) -> list[dict[str, Any]]:
    result = dead.cli("list", "--json")
    assert result.exit_code == 0, result.output
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def one_error_line(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def dead(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> DeadLetters:
    """Two poison bodies, then three requests the handler fails twice each: five dead letters, in that order."""
    service = stack.add_service()
    holder: list[DeadLetters] = []

    def process(request: int, read_file: Any, write_file: Any, connection: Any) -> Any:
        state = holder[0]
        state.calls.append(request)
        if not state.fixed:
            raise RuntimeError(f"not yet able to handle {request}")
        yield (request, True)

    running = run_service(service, process, max_attempts=2, retry_delay=0.1)
    holder.append(DeadLetters(service, running, stack.config.url))
    for body in POISON:
        amqp.send(service.inbound, body)
    wait_count(amqp, holder[0].dlq, len(POISON))
    for request in FAILING:
        amqp.send(service.inbound, request, headers=CUSTOM)
    wait_count(amqp, holder[0].dlq, len(POISON) + len(FAILING))
    return holder[0]


def test_list_shows_every_dead_letter_and_leaves_them_in_order(dead: DeadLetters, amqp: Amqp) -> None:
    first = listed(dead)
    assert [e["body"] for e in first] == ["abc", "-1", "1", "2", "3"]
    assert [e["index"] for e in first] == [1, 2, 3, 4, 5]
    assert [e["error_type"] for e in first] == ["BadRequestError"] * 2 + ["HandlerError"] * 3
    assert [e["attempts"] for e in first] == [1, 1, 2, 2, 2]
    assert all(e["message_id"] and e["first_failure"] and e["service"] == dead.service.name for e in first)
    assert "not yet able to handle 2" in first[3]["error"]

    result = dead.cli("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0].split()[:4] == ["1", first[0]["message_id"], "b'abc'", "BadRequestError"]
    fourth = ["4", first[3]["message_id"], "2", "HandlerError", "attempts=2", f"first-failure={first[3]['first_failure']}"]
    assert lines[3].split()[:6] == fourth
    assert "RuntimeError: not yet able to handle 2" in lines[3]

    assert listed(dead) == first  # reading took nothing and kept the order
    assert amqp.count(dead.dlq) == 5
    limited = dead.cli("list", "--json", "--limit", "2")
    assert [e["body"] for e in json.loads(limited.stdout)] == ["abc", "-1"]
    assert amqp.count(dead.dlq) == 5


def test_show_prints_all_headers_and_the_traceback(dead: DeadLetters) -> None:
    entries = listed(dead)
    by_index = dead.cli("show", "3")
    assert by_index.exit_code == 0, by_index.output
    text = by_index.stdout
    assert "dead letter #3 of " + dead.dlq in text
    for header in ("x-custom", "traceparent", "x-slingshot-error-type", "x-slingshot-attempts", "x-slingshot-first-failure"):
        assert f"  {header}: " in text
    traceback = text.split("traceback:\n", 1)[1]
    assert "Traceback (most recent call last)" in traceback and "RuntimeError: not yet able to handle 1" in traceback

    by_id = dead.cli("show", entries[2]["message_id"])
    assert by_id.stdout == text
    as_json = json.loads(dead.cli("show", "3", "--json").stdout)
    assert as_json["headers"]["x-custom"] == "keep"
    assert as_json["headers"]["x-slingshot-attempts"] == 2
    assert as_json["properties"]["delivery_mode"] == 2
    assert "RuntimeError" in as_json["traceback"]


def test_replay_resets_attempts_and_a_fixed_handler_processes_them(dead: DeadLetters, amqp: Amqp) -> None:
    out = dead.service.out_queues[0]
    entries = listed(dead)

    # Still broken: the replayed message gets all its attempts again (reset), then is back.
    before = dead.calls.count(1)
    result = dead.cli("replay", "3")
    assert result.exit_code == 0, result.output
    assert "replayed 1 dead letter(s)" in result.stdout
    deadline = time.monotonic() + 30
    while dead.calls.count(1) < before + 2 or amqp.count(dead.dlq) < 5:
        assert time.monotonic() < deadline, "the replayed message did not come back"
        amqp.connection.sleep(0.05)
    assert dead.calls.count(1) == before + 2  # attempt 1 and 2 again, not straight to the DLQ
    again = listed(dead)
    assert [e["body"] for e in again] == ["abc", "-1", "2", "3", "1"]  # the rest kept their order
    back = json.loads(dead.cli("show", "5", "--json").stdout)
    assert back["attempts"] == 2 and back["headers"]["x-slingshot-replays"] == 1
    assert back["headers"]["x-custom"] == "keep"

    # Fixed: replay one by message id, then everything; permanent errors come back.
    dead.fixed = True
    result = dead.cli("replay", entries[3]["message_id"])
    assert result.exit_code == 0, result.output
    assert amqp.get(out)[0] == b"2"
    result = dead.cli("replay", "--all")
    assert result.exit_code == 0, result.output
    assert "replayed 4 dead letter(s)" in result.stdout
    assert sorted(body for body, _ in amqp.get_all(out, 2)) == [b"1", b"3"]
    wait_count(amqp, dead.dlq, 2)
    assert [e["body"] for e in listed(dead)] == ["abc", "-1"]
    assert amqp.empty(out)


def test_replay_limit_takes_the_oldest(dead: DeadLetters, amqp: Amqp) -> None:
    dead.fixed = True
    result = dead.cli("replay", "--all", "--limit", "3")
    assert result.exit_code == 0, result.output
    assert amqp.get(dead.service.out_queues[0])[0] == b"1"  # #1 and #2 were the poison bodies
    wait_count(amqp, dead.dlq, 4)
    assert [e["body"] for e in listed(dead)] == ["2", "3", "abc", "-1"]


def test_replayed_copy_keeps_body_and_headers_without_the_failure(dead: DeadLetters, amqp: Amqp) -> None:
    """With the worker stopped the copy stays in the inbound queue, where the test reads it."""
    original = json.loads(dead.cli("show", "4", "--json").stdout)
    assert dead.running.stop() == 0
    result = CliRunner().invoke(
        main, ["dlq", "replay", "anything", "4", "--queue", dead.service.inbound, "--amqp-url", AMQP_URL]
    )
    assert result.exit_code == 0, result.output
    body, props = amqp.get(dead.service.inbound)
    assert body == b"2"
    assert props.headers == {**CUSTOM, "x-slingshot-replays": 1}
    assert props.message_id == original["message_id"] and props.delivery_mode == 2
    assert amqp.count(dead.dlq) == 4


def test_purge_asks_first_and_deletes_exactly_what_it_named(dead: DeadLetters, amqp: Amqp) -> None:
    declined = dead.cli("purge", "--all", input="n\n")
    assert declined.exit_code == 1 and "Delete 5 dead letter(s)" in declined.output
    assert amqp.count(dead.dlq) == 5

    entries = listed(dead)
    one = dead.cli("purge", "2", entries[4]["message_id"], input="y\n")
    assert one.exit_code == 0, one.output
    assert "deleted 2 dead letter(s)" in one.stdout
    assert [e["body"] for e in listed(dead)] == ["abc", "1", "2"]

    everything = dead.cli("purge", "--all", "--yes")
    assert everything.exit_code == 0, everything.output
    assert "deleted 3 dead letter(s)" in everything.stdout
    assert amqp.count(dead.dlq) == 0
    nothing = dead.cli("purge", "--all", "--yes")
    assert nothing.exit_code == 0 and "deleted 0 dead letter(s)" in nothing.stderr


def test_the_installed_console_script(dead: DeadLetters) -> None:
    script = Path(sys.executable).parent / "slingshot"
    assert script.exists(), f"the slingshot console script is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLINGSHOT_")}
    env["SLINGSHOT_CONFIG_HOST"] = dead.config_url
    listing = subprocess.run([str(script), "dlq", "list", dead.service.name], env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[2] for line in listing.stdout.splitlines()] == ["b'abc'", "b'-1'", "1", "2", "3"]
    env["SLINGSHOT_DLQ_JSON"] = "1"
    shown = subprocess.run([str(script), "dlq", "show", dead.service.name, "5"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(shown.stdout)["body"] == "3"
    bad = subprocess.run([str(script), "dlq", "show", dead.service.name, "6"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [f"error: no dead letter #6 in '{dead.dlq}' (it holds 5; indexes start at 1)"]


def test_bad_input_is_one_clear_line(dead: DeadLetters, stack: Stack) -> None:
    assert "no dead letter #9" in one_error_line(dead.cli("show", "9"), 2)
    assert "no dead letter #0" in one_error_line(dead.cli("replay", "0"), 2)
    assert "'nope'" in one_error_line(dead.cli("replay", "1", "nope"), 2)
    assert "not both" in one_error_line(dead.cli("purge", "1", "--all", "--yes"), 2)
    assert "or --all" in one_error_line(dead.cli("replay"), 2)
    runner = CliRunner()
    unknown = runner.invoke(main, ["dlq", "list", "no-such-service", "--config-host", stack.config.url])
    assert "cannot look up service 'no-such-service'" in one_error_line(unknown, 3) and "404" in unknown.stderr
    nowhere = runner.invoke(main, ["dlq", "list", dead.service.name], env={"SLINGSHOT_CONFIG_HOST": None})
    assert "--config-host" in one_error_line(nowhere, 2)
    secret = "amqp//guest:s3cret@127.0.0.1"
    bad_url = runner.invoke(main, ["dlq", "list", "x", "--queue", "q", "--amqp-url", secret])
    assert "--amqp-url" in one_error_line(bad_url, 2) and "s3cret" not in bad_url.output
    missing = runner.invoke(main, ["dlq", "list", "x", "--queue", "never-declared-" + dead.service.name, "--amqp-url", AMQP_URL])
    assert "does not exist" in one_error_line(missing, 5)
    # Nothing above changed the DLQ.
    assert len(listed(dead)) == 5


def test_empty_dlq(stack: Stack, run_service: Callable[..., RunningService]) -> None:
    service = stack.add_service()
    run_service(service, lambda request, r, w, c: [(request, True)])
    runner = CliRunner()
    target = [service.name, "--config-host", stack.config.url]
    listing = runner.invoke(main, ["dlq", "list", *target])
    assert listing.exit_code == 0 and listing.stdout == ""
    assert listing.stderr.strip() == f"{service.inbound}.dlq is empty"
    assert json.loads(runner.invoke(main, ["dlq", "list", "--json", *target]).stdout) == []
    assert "it is empty" in one_error_line(runner.invoke(main, ["dlq", "show", *target[:1], "1", *target[1:]]), 2)
    replayed = runner.invoke(main, ["dlq", "replay", *target, "--all"])
    assert replayed.exit_code == 0 and "replayed 0" in replayed.stderr


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in ("list", "show", "replay", "purge"):
        result = runner.invoke(main, ["dlq", command, "--help"])
        assert result.exit_code == 0 and "SERVICE" in result.stdout and "SLINGSHOT_CONFIG_HOST" in result.stdout
    assert "replay" in runner.invoke(main, ["dlq", "--help"]).stdout


def test_quorum_queues_keep_their_order_too(stack: Stack, amqp: Amqp, run_service: Callable[..., RunningService]) -> None:
    """Ops may declare the inbound queue and the DLQ as quorum queues. Reading returns the
    messages in order; one that arrives while a command holds the others (here: a replayed
    permanent error coming straight back) may end up ahead of them, which RabbitMQ 3.10 does."""
    inbound = f"dlq-quorum-{uuid.uuid4().hex[:8]}"
    for queue in (inbound, inbound + ".dlq"):
        amqp.declare(queue, {"x-queue-type": "quorum"})
    service = stack.add_service(inbound=inbound)
    run_service(service, lambda request, r, w, c: [(request, True)])
    try:
        for body in (b"q1", b"q2", b"q3", b"q4"):
            amqp.send(inbound, body)
        wait_count(amqp, inbound + ".dlq", 4)
        runner = CliRunner()
        target = [service.name, "--config-host", stack.config.url]

        def entries() -> list[dict[str, Any]]:
            listing: list[dict[str, Any]] = json.loads(runner.invoke(main, ["dlq", "list", "--json", *target]).stdout)
            return listing

        def bodies() -> list[str]:
            return [e["body"] for e in entries()]

        assert bodies() == ["q1", "q2", "q3", "q4"]
        assert bodies() == ["q1", "q2", "q3", "q4"]
        assert runner.invoke(main, ["dlq", "replay", *target, "2"]).exit_code == 0
        deadline = time.monotonic() + 10
        while sorted(now := bodies()) != ["q1", "q2", "q3", "q4"]:  # a permanent error: straight back
            assert time.monotonic() < deadline, now
        assert [b for b in now if b != "q2"] == ["q1", "q3", "q4"]
        first = next(e for e in entries() if e["body"] == "q1")
        assert runner.invoke(main, ["dlq", "purge", *target, first["message_id"], "--yes"]).exit_code == 0
        now = bodies()
        assert sorted(now) == ["q2", "q3", "q4"] and [b for b in now if b != "q2"] == ["q3", "q4"]
    finally:
        amqp.delete(inbound + ".dlq")


def test_replay_to_a_missing_inbound_queue_keeps_the_dead_letter(amqp: Amqp) -> None:
    """``mandatory`` makes the broker refuse the copy; the dead letter stays where it was."""
    inbound = f"dlq-ghost-{uuid.uuid4().hex[:8]}"
    amqp.declare(inbound + ".dlq")
    try:
        amqp.send(inbound + ".dlq", b"41", headers={"x-slingshot-error-type": "HandlerError", "x-slingshot-attempts": 5})
        result = CliRunner().invoke(main, ["dlq", "replay", "ghost", "--all", "--queue", inbound, "--amqp-url", AMQP_URL])
        assert f"the inbound queue '{inbound}' does not exist" in one_error_line(result, 5)
        assert amqp.count(inbound + ".dlq") == 1
        assert amqp.get(inbound + ".dlq")[0] == b"41"
    finally:
        amqp.delete(inbound + ".dlq")
