"""End-to-end demo: the original README example, unchanged, serving one request on a real local stack.

Starts a private S3 server (SeaweedFS) and GNU pass store in a temporary directory, makes sure
RabbitMQ and PostgreSQL are up, serves a system map for ``simple-py-microservice`` from a
config service, runs ``examples/original/service.py`` as its own process, sends request ``1``
and shows what came out: the result file and the routed id with its headers. Then it stops the
service with SIGTERM (it drains and exits 0) and removes everything it created.

Run with ``make demo`` (or ``python3 scripts/demo.py`` once ``scripts/bootstrap.sh`` has run).
Exits 0 on success, 1 with a message naming the failed step otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # runs from a checkout without `pip install -e .` too

import pika  # noqa: E402
import pika.exceptions  # noqa: E402

from slingshot_runtime import devstack  # noqa: E402
from slingshot_runtime.retry import RetryPolicy  # noqa: E402
from slingshot_runtime.settings import Settings  # noqa: E402
from slingshot_runtime.sysmap import ConfigServer, SystemMap  # noqa: E402

EXAMPLE = REPO / "examples" / "original" / "service.py"
SERVICE = "simple-py-microservice"
REQUEST = 1
INPUT = b"world"
EXPECTED = b"Hello world"
START_TIMEOUT = 30.0  # service process start → consuming
RESULT_TIMEOUT = 20.0  # request sent → routed id on the output queue
STOP_TIMEOUT = 30.0  # SIGTERM → exit (the runtime's drain deadline is 25 s)
LOG_PREFIX = "    service | "


class DemoError(Exception):
    """A step failed; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Announce a step; any failure inside becomes a DemoError naming it."""
    say(f"==> {title}")
    started = time.monotonic()
    try:
        yield
    except DemoError:
        raise
    except Exception as exc:
        raise DemoError(f"{title}: {type(exc).__name__}: {exc}") from exc
    elapsed = time.monotonic() - started
    if elapsed >= 0.5:
        say(f"    ({elapsed:.1f}s)")


class ServiceProcess:
    """The example as a child process; its stderr is echoed with a prefix and kept."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # a terminal's Ctrl-C reaches the demo, which stops it in order
        )
        self._reader = threading.Thread(target=self._echo, name="service-log", daemon=True)
        self._reader.start()

    def _echo(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            print(LOG_PREFIX + line, flush=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> str:
        if not self.running():
            self._reader.join(2)  # the last lines are still in the pipe
        return f"the service exited with code {self.proc.returncode}; its last output:\n" + "\n".join(self.lines[-20:])

    def terminate(self, timeout: float) -> int:
        """SIGTERM, wait for the drain; kill past ``timeout``. The exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(2)
            raise DemoError(f"the service did not exit within {timeout:.0f}s of SIGTERM; killed it") from None
        self._reader.join(5)
        return code


class Broker:
    """The demo's side of RabbitMQ: publish the request, fetch the result, delete the queues."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(
            pika.ConnectionParameters(devstack.LOCALHOST, devstack.RABBITMQ_PORT, credentials=pika.PlainCredentials("guest", "guest"))
        )
        self.channel = self.connection.channel()

    def _reopen(self) -> None:
        """A passive declare of a missing queue closes the channel (404): open another."""
        self.channel = self.connection.channel()

    def consumers(self, queue: str) -> int:
        try:
            return int(self.channel.queue_declare(queue, passive=True).method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker:
            self._reopen()
            return 0

    def wait_consumer(self, queue: str, service: ServiceProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.consumers(queue) == 0:
            if not service.running():
                raise DemoError(service.failure())
            if time.monotonic() >= deadline:
                raise DemoError(f"no consumer on {queue!r} after {timeout:.0f}s")
            self.connection.sleep(0.05)

    def publish(self, queue: str, body: bytes) -> None:
        self.channel.confirm_delivery()
        self.channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, content_type="text/plain"), mandatory=True)

    def get(self, queue: str, service: ServiceProcess, timeout: float) -> tuple[bytes, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker:
                self._reopen()
                method = None
            if method is not None:
                return bytes(body), properties
            if not service.running():
                raise DemoError(service.failure())
            if time.monotonic() >= deadline:
                raise DemoError(f"no message on {queue!r} within {timeout:.0f}s")
            self.connection.sleep(0.05)

    def delete(self, queue: str) -> None:
        try:
            self.channel.queue_delete(queue)
        except pika.exceptions.ChannelClosedByBroker:
            self._reopen()

    def delete_all(self, queues: list[str]) -> None:
        for queue in queues:
            self.delete(queue)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def show_message(queue: str, body: bytes, properties: Any) -> None:
    say(f"    routed id {body.decode(errors='replace')} on queue {queue}")
    rows: list[tuple[str, str]] = [
        ("message_id", _text(properties.message_id)),
        ("delivery_mode", f"{properties.delivery_mode}" + (" (persistent)" if properties.delivery_mode == 2 else "")),
        ("content_type", _text(properties.content_type)),
    ]
    if properties.timestamp is not None:
        stamp = datetime.datetime.fromtimestamp(properties.timestamp, datetime.UTC)
        rows.append(("timestamp", f"{properties.timestamp} ({stamp.isoformat()})"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        say(f"      {name:<{width}}  {value}")
    headers: dict[str, object] = properties.headers or {}
    say("      headers:")
    hwidth = max((len(k) for k in headers), default=0)
    for key in sorted(headers):
        say(f"        {key:<{hwidth}}  {_text(headers[key])}")


def service_env(config_url: str, store: devstack.PassStore) -> dict[str, str]:
    """The caller's environment minus its own slingshot/pass/gpg settings, plus the demo's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLINGSHOT_", "PASSWORD_STORE_")) and k not in ("GNUPGHOME", "GPG_AGENT_INFO")
    }
    env.update(store.env())
    env["SLINGSHOT_CONFIG_HOST"] = config_url
    env["SLINGSHOT_LOG_FORMAT"] = "text"  # readable here; containers default to JSON lines
    env["SLINGSHOT_HEALTH_PORT"] = str(devstack.free_port())  # not 8080: other workers may run here
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


def run_demo(cleanups: list[tuple[str, Callable[[], object]]]) -> None:
    """Every resource is registered in ``cleanups`` as soon as it exists."""
    suffix = uuid.uuid4().hex[:8]
    inbound = f"demo-{suffix}.in"
    outbound = f"demo-{suffix}.out"
    buckets = {"in": "demo-in", "out": "demo-out"}  # the S3 server is the demo's own

    with step("RabbitMQ and PostgreSQL (the machine's shared instances)"):
        devstack.ensure_rabbitmq()
        devstack.ensure_postgres()
        broker = Broker()
        cleanups.append(("close the AMQP connection", broker.close))

    workdir = Path(tempfile.mkdtemp(prefix="slingshot-demo-"))
    cleanups.append((f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True)))

    with step("S3 server (SeaweedFS) in a temporary directory"):
        s3 = devstack.start_s3(workdir / "s3")
        cleanups.append(("stop the S3 server", s3.stop))
        for bucket in buckets.values():
            s3.create_bucket(bucket)
        say(f"    {s3.endpoint} (pid {s3.pid}), buckets {', '.join(buckets.values())}")

    with step("GNU pass store with the S3 keys and the database password"):
        store = devstack.make_pass_store(
            workdir / "pass",
            {"s3/access-key": s3.access_key, "s3/secret-key": s3.secret_key, "postgres/password": "postgres"},
        )
        cleanups.append(("stop gpg-agent", store.close))
        say(f"    GNUPGHOME={store.gnupghome}  PASSWORD_STORE_DIR={store.store_dir}")

    with step("config service with the system map"):
        document: dict[str, Any] = {
            "services": {
                SERVICE: {"in": inbound, "out": [{"case": True, "queues": [outbound]}], "buckets": buckets},
            },
            "rabbitmq": {
                "host": devstack.LOCALHOST,
                "port": devstack.RABBITMQ_PORT,
                "username": "guest",
                "password": "guest",
                "vhost": "/",
            },
            "object-storage": {"host": s3.endpoint, "region": s3.region, "access-key": "s3/access-key", "secret-key": "s3/secret-key"},
            "postgres": {
                "host": devstack.LOCALHOST,
                "port": devstack.POSTGRES_PORT,
                "database": "postgres",
                "username": "postgres",
                "password": "postgres/password",
            },
        }
        config = ConfigServer(SystemMap(document))
        config.start()
        cleanups.append(("stop the config service", config.stop))
        env = service_env(config.url, store)
        # The worker declares its queues, delay queues and dead-letter queue; delete them all afterwards.
        settings = Settings.load(SERVICE, config.url, environ=env)
        policy = RetryPolicy(SERVICE, inbound, settings.max_attempts, settings.retry_delay, settings.max_retry_delay)
        queues = [inbound, outbound, *(spec.name for spec in policy.queues())]
        cleanups.append((f"delete {len(queues)} queues", lambda: broker.delete_all(queues)))
        say(f"    {config.url}/{SERVICE} -> in {inbound}, case true -> {outbound}")
        say(f"    buckets: in -> {buckets['in']}, out -> {buckets['out']}")

    with step(f"input object s3://{buckets['in']}/{REQUEST}"):
        s3.client().put_object(Bucket=buckets["in"], Key=str(REQUEST), Body=INPUT)
        say(f"    s3://{buckets['in']}/{REQUEST} = {INPUT.decode()!r}")

    with step(f"start {EXAMPLE.relative_to(REPO)} (unchanged) as its own process"):
        service = ServiceProcess(env)
        cleanups.append(("stop the service process", lambda: service.running() and service.terminate(STOP_TIMEOUT)))
        broker.wait_consumer(inbound, service, START_TIMEOUT)

    with step(f"send request {REQUEST} to {inbound}"):
        sent = time.monotonic()
        broker.publish(inbound, str(REQUEST).encode())

    with step(f"wait for the routed id on {outbound}"):
        body, properties = broker.get(outbound, service, RESULT_TIMEOUT)
        say(f"    arrived {1000 * (time.monotonic() - sent):.0f} ms after the request")
        show_message(outbound, body, properties)
        if body != str(REQUEST).encode():
            raise DemoError(f"expected routed id {REQUEST}, got {body!r}")

    with step(f"result object s3://{buckets['out']}/{REQUEST}"):
        result = s3.client().get_object(Bucket=buckets["out"], Key=str(REQUEST))["Body"].read()
        say(f"    s3://{buckets['out']}/{REQUEST} = {result.decode(errors='replace')!r}")
        if result != EXPECTED:
            raise DemoError(f"expected {EXPECTED!r}, got {result!r}")

    with step("SIGTERM the service: it drains and exits"):
        code = service.terminate(STOP_TIMEOUT)
        if code != 0:
            raise DemoError(service.failure())
        if not any("drained cleanly" in line for line in service.lines):
            raise DemoError("the service exited 0 but did not report a clean drain")
        say("    exited with code 0")


def cleanup(cleanups: list[tuple[str, Callable[[], object]]]) -> bool:
    """Undo everything in reverse order; True if all of it worked."""
    ok = True
    say("==> clean up")
    done: list[str] = []
    for what, undo in reversed(cleanups):
        try:
            undo()
        except Exception as exc:
            ok = False
            print(f"demo: cleaning up {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        else:
            done.append(what)
    if done:
        say(f"    done: {', '.join(done)}")
    return ok


def main() -> int:
    # SIGTERM (CI cancelling) unwinds like Ctrl-C, so the clean-up below still runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    cleanups: list[tuple[str, Callable[[], object]]] = []
    code = 0
    try:
        run_demo(cleanups)
    except DemoError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr, flush=True)
        code = 130
    finally:
        if not cleanup(cleanups) and code == 0:
            code = 1
    if code == 0:
        say(f"demo OK in {time.monotonic() - started:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
