"""`make demo`: the example pipeline (examples/pipeline) on a real local stack, end to end.

Makes sure RabbitMQ and PostgreSQL are up (starting them when installed and stopped), starts
a private SeaweedFS S3 server, a GNU pass store and the reference config service
(`slingshot sysmap serve examples/pipeline/system.yaml`), then runs the four services of the
pipeline — ingest → classify → positive / negative — each as its own worker process
(`python -m slingshot_runtime examples/pipeline/<handler>/handler.py`). It uploads the input
objects, sends the requests with a progress bar, waits until every sink has written its reply
and its row, and prints a summary: per service the messages processed, the routes they took
and the time spent, and the end-to-end latency (send → the sink's row) at p50/p95. The
pipeline graph and a JSON summary go into the output directory. Then every worker gets
SIGTERM (each drains and must exit 0) and everything the demo started is stopped and removed.

The system map's endpoints are filled in at run time from the environment of `sysmap serve`:
S3_ENDPOINT (the S3 server's random port), PIPELINE (a per-run queue prefix, so runs never
share queues) and PG_DATABASE (a private database, dropped at the end).

"Routed" counts come from the next hop: a route's count is what the service consuming its
queue processed (each queue here has one producer), read with the processing time from each
worker's Prometheus /metrics.

    python3 scripts/demo.py [--requests 200] [--output demo-output]
    python3 scripts/demo.py --original    # the original README example, unchanged, one request

Exits 0 on success, 1 with a message naming the failed step otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # runs from a checkout without `pip install -e .` too

import pika  # noqa: E402
import pika.exceptions  # noqa: E402
import requests  # noqa: E402
import sqlalchemy  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from slingshot_runtime import devstack  # noqa: E402
from slingshot_runtime.cli.sysmap import write_graph  # noqa: E402
from slingshot_runtime.retry import RetryPolicy, dead_letter_queue  # noqa: E402
from slingshot_runtime.routing import format_case  # noqa: E402
from slingshot_runtime.settings import Settings  # noqa: E402
from slingshot_runtime.sysmap import ConfigServer, SystemMap, load_system_map, topology  # noqa: E402

PIPELINE = REPO / "examples" / "pipeline"
SYSTEM = PIPELINE / "system.yaml"
SCHEMA = PIPELINE / "schema.sql"
#: Service → the handler directory it runs (positive and negative share one handler).
HANDLERS = {"ingest": "ingest", "classify": "classify", "positive": "reply", "negative": "reply"}
ENTRY = "ingest"
RESULTS = ("positive", "results")  # the service and bucket reference the replies are in
EXAMPLE = REPO / "examples" / "original" / "service.py"
ORIGINAL_SERVICE = "simple-py-microservice"
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT = 60.0  # worker processes start → all consuming
RESULT_TIMEOUT = 120.0  # last request sent → every row written
STOP_TIMEOUT = 30.0  # SIGTERM → exit (the runtime's drain deadline is 25 s)

WORDS_GOOD = ["great", "good", "love", "excellent", "amazing", "perfect", "happy", "fast", "friendly", "recommend"]
WORDS_BAD = ["bad", "poor", "broken", "slow", "terrible", "awful", "hate", "refund", "worst", "late", "rude"]
WORDS_PLAIN = ["the", "food", "delivery", "staff", "box", "price", "was", "and", "really", "quite", "very", "service", "order"]


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


Cleanups = list[tuple[str, Callable[[], object]]]


class Process:
    """A child process whose output is echoed with a name prefix and kept."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # a terminal's Ctrl-C reaches the demo, which stops it in order
        )
        self._reader = threading.Thread(target=self._echo, name=f"{name}-log", daemon=True)
        self._reader.start()

    def _echo(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            Progress.clear_line()
            print(f"    {self.name:>9} | {line}", flush=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> str:
        if not self.running():
            self._reader.join(2)  # the last lines are still in the pipe
        return f"{self.name} exited with code {self.proc.returncode}; its last output:\n" + "\n".join(self.lines[-20:])

    def wait_for_line(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if text in line:
                    return line
            if not self.running():
                raise DemoError(self.failure())
            if time.monotonic() >= deadline:
                raise DemoError(f"{self.name} did not print {text!r} within {timeout:.0f}s")
            time.sleep(0.05)

    def signal(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    def terminate(self, timeout: float) -> int:
        """SIGTERM, wait for the drain; kill past ``timeout``. The exit code."""
        self.signal()
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        """Wait for an exit already asked for (a second SIGTERM would mean "now"); kill past ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(2)
            raise DemoError(f"{self.name} did not exit within {timeout:.0f}s of SIGTERM; killed it") from None
        self._reader.join(5)
        return code


class Broker:
    """The demo's side of RabbitMQ: publish requests, watch queues, delete them afterwards."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                devstack.LOCALHOST,
                devstack.RABBITMQ_PORT,
                credentials=pika.PlainCredentials("guest", "guest"),
                client_properties={"connection_name": "slingshot demo"},
            )
        )
        self._reopen()

    def _reopen(self) -> None:
        """A passive declare of a missing queue closes the channel (404): open another."""
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def counts(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers); (0, 0) when the queue does not exist."""
        try:
            method = self.channel.queue_declare(queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker:
            self._reopen()
            return 0, 0
        return int(method.message_count), int(method.consumer_count)

    def wait_consumers(self, queues: dict[str, Process], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = dict(queues)
        while waiting:
            for queue, process in list(waiting.items()):
                if self.counts(queue)[1] > 0:
                    del waiting[queue]
                elif not process.running():
                    raise DemoError(process.failure())
            if time.monotonic() >= deadline:
                raise DemoError(f"no consumer on {', '.join(waiting)} after {timeout:.0f}s")
            self.connection.sleep(0.05)

    def publish(self, queue: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        """Persistent, mandatory, confirmed by the broker."""
        properties = pika.BasicProperties(
            delivery_mode=2, content_type="text/plain", message_id=uuid.uuid4().hex, timestamp=int(time.time()), headers=headers
        )
        self.channel.basic_publish("", queue, body, properties, mandatory=True)

    def get(self, queue: str, process: Process, timeout: float) -> tuple[bytes, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker:
                self._reopen()
                method = None
            if method is not None:
                return bytes(body), properties
            if not process.running():
                raise DemoError(process.failure())
            if time.monotonic() >= deadline:
                raise DemoError(f"no message on {queue!r} within {timeout:.0f}s")
            self.connection.sleep(0.05)

    def delete_all(self, queues: Sequence[str]) -> None:
        for queue in queues:
            try:
                self.channel.queue_delete(queue)
            except pika.exceptions.ChannelClosedByBroker:
                self._reopen()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class Progress:
    """A text progress bar: redrawn in place on a terminal, a line per quarter otherwise."""

    active: Progress | None = None
    WIDTH = 30

    def __init__(self, total: int, stream: TextIO = sys.stdout) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.last_quarter = -1
        self.text = ""
        Progress.active = self

    @classmethod
    def clear_line(cls) -> None:
        """Other output (a worker's log line) starts on a clean line."""
        bar = cls.active
        if bar is not None and bar.tty and bar.text:
            bar.stream.write("\r" + " " * len(bar.text) + "\r")

    def update(self, sent: int, done: int) -> None:
        filled = self.WIDTH * done // self.total
        self.text = f"    [{'#' * filled}{'.' * (self.WIDTH - filled)}] sent {sent}/{self.total}  done {done}/{self.total}"
        if self.tty:
            self.stream.write("\r" + self.text)
            self.stream.flush()
        elif done * 4 // self.total > self.last_quarter or (sent == self.total and self.last_quarter < 0):
            self.last_quarter = done * 4 // self.total
            self.stream.write(self.text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        Progress.active = None


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


def declared_queues(name: str, system: SystemMap, env: dict[str, str]) -> list[str]:
    """The queues a worker of ``name`` declares: inbound, outbound, delay queues, DLQ."""
    spec = system.services[name]
    settings = Settings.load(name, "unused", environ=env)
    policy = RetryPolicy(name, spec["in"], settings.max_attempts, settings.retry_delay, settings.max_retry_delay)
    outbound = [queue for route in spec["out"] for queue in route["queues"]]
    return [spec["in"], *outbound, *(queue.name for queue in policy.queues())]


def reviews(count: int, seed: int = 2024) -> dict[int, bytes]:
    """Request id → a short made-up review: mixed case, odd spacing, now and then full-width
    letters, so ingest has something to normalise; about half positive."""
    rng = random.Random(seed)
    texts: dict[int, bytes] = {}
    for request in range(1, count + 1):
        mood = WORDS_GOOD if rng.random() < 0.5 else WORDS_BAD
        words = rng.sample(WORDS_PLAIN, 5) + rng.sample(mood, 2) + rng.sample(WORDS_GOOD + WORDS_BAD, 1)
        rng.shuffle(words)
        words = [w.upper() if rng.random() < 0.15 else w.capitalize() if rng.random() < 0.2 else w for w in words]
        if rng.random() < 0.1:
            words[0] = "".join(chr(ord(c) + 0xFEE0) if "a" <= c.lower() <= "z" else c for c in words[0])  # full-width
        texts[request] = ("  ".join(words) + rng.choice(["!", ".", "...", " \n"])).encode()
    return texts


# --------------------------------------------------------------------------- shared stack


@dataclass
class Stack:
    workdir: Path
    broker: Broker
    s3: devstack.S3Server
    store: devstack.PassStore
    cleanups: Cleanups = field(default_factory=list)


def start_stack(cleanups: Cleanups) -> Stack:
    """RabbitMQ, PostgreSQL (the machine's), and a private S3 server and pass store."""
    with step("RabbitMQ and PostgreSQL (the machine's shared instances; started if stopped)"):
        devstack.ensure_rabbitmq()
        devstack.ensure_postgres()
        broker = Broker()
        cleanups.append(("close the AMQP connection", broker.close))

    workdir = Path(tempfile.mkdtemp(prefix="slingshot-demo-"))
    cleanups.append((f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True)))

    with step("S3 server (SeaweedFS) in a temporary directory"):
        s3 = devstack.start_s3(workdir / "s3")
        cleanups.append(("stop the S3 server", s3.stop))
        say(f"    {s3.endpoint} (pid {s3.pid})")

    with step("GNU pass store with the S3 keys and the database password"):
        store = devstack.make_pass_store(
            workdir / "pass",
            {"s3/access-key": s3.access_key, "s3/secret-key": s3.secret_key, "postgres/password": "postgres"},
        )
        cleanups.append(("stop gpg-agent", store.close))
        say(f"    GNUPGHOME={store.gnupghome}  PASSWORD_STORE_DIR={store.store_dir}")
    return Stack(workdir, broker, s3, store)


# --------------------------------------------------------------------------- the pipeline


@dataclass
class ServiceStats:
    name: str
    processed: int
    busy: float
    retried: int
    dead_lettered: int


def scrape(port: int) -> dict[str, float]:
    """The worker's counters from its /metrics (Prometheus text format)."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            values[key] = sample.value
    return values


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the value at or below which ``fraction`` of them are."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def run_pipeline(requests_count: int, output: Path, cleanups: Cleanups) -> None:
    """Every resource is registered in ``cleanups`` as soon as it exists."""
    stack = start_stack(cleanups)
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    database = run_id.replace("-", "_")

    with step(f"private PostgreSQL database {database} with examples/pipeline/schema.sql"):
        admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {database}")

        def drop_database() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.dispose()

        cleanups.append((f"drop database {database}", drop_database))
        engine = sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}")
        cleanups.append(("close the database engine", engine.dispose))
        with engine.begin() as conn:
            conn.exec_driver_sql(SCHEMA.read_text())  # before the sinks start: they never race to create it

    variables = {"S3_ENDPOINT": stack.s3.endpoint, "PIPELINE": run_id, "PG_DATABASE": database}
    with step("config service: slingshot sysmap serve examples/pipeline/system.yaml"):
        say("    " + "  ".join(f"{k}={v}" for k, v in variables.items()))
        system = load_system_map(SYSTEM, environ={**os.environ, **variables})  # the map the service will serve
        config_port = devstack.free_port()
        serve_env = {**os.environ, **variables}
        serve = Process(
            "sysmap",
            [sys.executable, "-c", "from slingshot_runtime.cli import main; main(prog_name='slingshot')",
             "sysmap", "serve", str(SYSTEM.relative_to(REPO)), "--port", str(config_port)],
            serve_env,
        )  # fmt: skip
        cleanups.append(("stop the config service", lambda: serve.terminate(STOP_TIMEOUT)))
        serve.wait_for_line("serving", 30)
        config_url = f"http://127.0.0.1:{config_port}"
        topo = topology(system)
        for edge in topo.edges:
            say(f"    {edge.source} --{format_case(edge.case)}--> {edge.queue} --> {edge.target or '(sink)'}")

    with step(f"pipeline graph into {output}"):
        output.mkdir(parents=True, exist_ok=True)
        as_written = load_system_map(SYSTEM, environ={})  # the queue names without this run's prefix
        written = [output / "pipeline.mmd"]
        write_graph(as_written, written[0], "examples/pipeline/system.yaml")
        if shutil.which("dot"):
            written.append(output / "pipeline.svg")
            write_graph(as_written, written[1], "examples/pipeline/system.yaml")
        else:
            (output / "pipeline.svg").unlink(missing_ok=True)
            say("    (Graphviz 'dot' not installed: Mermaid only)")
        say("    " + ", ".join(str(path) for path in written))

    buckets = sorted({bucket for spec in system.services.values() for bucket in spec["buckets"].values()})
    raw_bucket = system.services[ENTRY]["buckets"]["raw"]
    texts = reviews(requests_count)
    with step(f"buckets {', '.join(buckets)}; {requests_count} input objects in {raw_bucket}"):
        client = stack.s3.client()
        for bucket in buckets:
            stack.s3.create_bucket(bucket)
        for request, data in texts.items():
            client.put_object(Bucket=raw_bucket, Key=str(request), Body=data)
        say(f"    e.g. s3://{raw_bucket}/1 = {texts[1].decode(errors='replace')!r}")
        (output / "review-1.txt").write_bytes(texts[1])  # for trying `slingshot invoke` afterwards

    workers: dict[str, Process] = {}
    ports: dict[str, int] = {}
    with step(f"start {len(system.services)} workers: python -m slingshot_runtime examples/pipeline/<handler>/handler.py"):
        queues: list[str] = []
        for name in system.services:
            env = service_env(config_url, stack.store)
            env["SLINGSHOT_SERVICE"] = name
            ports[name] = int(env["SLINGSHOT_HEALTH_PORT"])
            queues += declared_queues(name, system, env)
            handler = PIPELINE / HANDLERS[name] / "handler.py"
            workers[name] = Process(name, [sys.executable, "-m", "slingshot_runtime", str(handler.relative_to(REPO))], env)
        queues = list(dict.fromkeys(queues))
        cleanups.append((f"delete {len(queues)} queues", lambda: stack.broker.delete_all(queues)))
        cleanups.append(("stop the workers", lambda: stop_workers(workers, quiet=True)))
        stack.broker.wait_consumers({system.services[name]["in"]: worker for name, worker in workers.items()}, START_TIMEOUT)

    entry_queue = system.services[ENTRY]["in"]
    sent_at: dict[int, float] = {}
    with step(f"send {requests_count} requests to {entry_queue} and wait for every reply and row"):
        progress = Progress(requests_count)
        started = time.monotonic()
        done = 0
        for request in texts:
            stack.broker.publish(entry_queue, str(request).encode())
            sent_at[request] = time.time()
            if request % 10 == 0 or request == requests_count:
                progress.update(request, done)
        deadline = time.monotonic() + RESULT_TIMEOUT
        dead_letter_queues = [dead_letter_queue(spec["in"]) for spec in system.services.values()]
        while done < requests_count:
            with engine.connect() as conn:
                done = int(conn.exec_driver_sql("SELECT count(*) FROM review_results").scalar_one())
            progress.update(requests_count, done)
            if done >= requests_count:
                break
            for worker in workers.values():
                if not worker.running():
                    raise DemoError(worker.failure())
            failed = {queue: stack.broker.counts(queue)[0] for queue in dead_letter_queues}
            if any(failed.values()):
                queue = next(q for q, n in failed.items() if n)
                raise DemoError(f"{failed[queue]} message(s) dead-lettered in {queue}: see them with `slingshot peek {queue}`")
            if time.monotonic() >= deadline:
                raise DemoError(f"only {done} of {requests_count} rows after {RESULT_TIMEOUT:.0f}s")
            stack.broker.connection.sleep(0.2)
        elapsed = time.monotonic() - started
        progress.finish()

    with step("check the results: one reply object and one row per request"):
        results_bucket = system.services[RESULTS[0]]["buckets"][RESULTS[1]]
        paginator = stack.s3.client().get_paginator("list_objects_v2")
        replies = sum(page.get("KeyCount", 0) for page in paginator.paginate(Bucket=results_bucket))
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT request, verdict, finished_at FROM review_results").all()
        if replies != requests_count or len(rows) != requests_count:
            raise DemoError(f"expected {requests_count} replies and rows, found {replies} replies in {results_bucket} and {len(rows)} rows")
        sample = stack.s3.client().get_object(Bucket=results_bucket, Key="1")["Body"].read()
        say(f"    s3://{results_bucket}/1 = {sample.decode()}")
        latencies = [1000 * (float(finished) - sent_at[int(request)]) for request, _, finished in rows]
        verdicts = {verdict: sum(1 for row in rows if row[1] == verdict) for verdict in ("positive", "negative")}

    with step("metrics from each worker's /metrics"):
        stats: dict[str, ServiceStats] = {}
        for name, port in ports.items():
            values = scrape(port)
            stats[name] = ServiceStats(
                name,
                processed=int(values.get("slingshot_messages_total[ok]", 0)),
                busy=values.get("slingshot_processing_seconds_sum", 0.0),
                retried=int(values.get("slingshot_retries_total", 0)),
                dead_lettered=int(values.get("slingshot_dead_letters_total", 0)),
            )

    summary = summarise(system, stats, latencies, verdicts, requests_count, elapsed)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    with step("SIGTERM every worker: each drains and exits 0"):
        stop_workers(workers, quiet=False)

    say()
    print_summary(summary)
    say(f"    graph and summary: {output}/ (pipeline.mmd{', pipeline.svg' if shutil.which('dot') else ''}, summary.json)")
    say()
    say(f"    next, one handler offline: slingshot invoke examples/pipeline/ingest/handler.py 1 -i raw={_shown(output / 'review-1.txt')} "
        "--system examples/pipeline/system.yaml --service ingest")  # fmt: skip


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def stop_workers(workers: dict[str, Process], quiet: bool) -> None:
    """SIGTERM all at once (they drain in parallel), then collect each exit code."""
    for worker in workers.values():
        worker.signal()
    failures = []
    for name, worker in workers.items():
        code = worker.wait(STOP_TIMEOUT)
        if code != 0 or not any("drained cleanly" in line for line in worker.lines):
            failures.append(worker.failure())
        elif not quiet:
            say(f"    {name}: exit code 0, drained cleanly")
    if failures and not quiet:
        raise DemoError("\n".join(failures))


def summarise(
    system: SystemMap, stats: dict[str, ServiceStats], latencies: list[float], verdicts: dict[str, int], total: int, elapsed: float
) -> dict[str, Any]:
    topo = topology(system)
    producers: dict[str, int] = {}
    for edge in topo.edges:
        producers[edge.queue] = producers.get(edge.queue, 0) + 1
    services: dict[str, Any] = {}
    for name, stat in stats.items():
        routes = []
        for edge in (e for e in topo.edges if e.source == name):
            count = stats[edge.target].processed if edge.target in stats and producers[edge.queue] == 1 else None
            routes.append({"case": edge.case, "queue": edge.queue, "to": edge.target, "count": count})
        services[name] = {
            "processed": stat.processed,
            "busy_seconds": round(stat.busy, 3),
            "ms_per_message": round(1000 * stat.busy / stat.processed, 2) if stat.processed else None,
            "retried": stat.retried,
            "dead_lettered": stat.dead_lettered,
            "routed": routes,
        }
    return {
        "requests": total,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(total / elapsed, 1) if elapsed else None,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p95": round(percentile(latencies, 0.95), 1),
            "max": round(max(latencies), 1),
        },
        "verdicts": verdicts,
        "services": services,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def print_summary(summary: dict[str, Any]) -> None:
    header = f"    {'service':<10} {'processed':>9}  {'routed (case -> service: count)':<40} {'busy':>7} {'per msg':>8}"
    say(header)
    say("    " + "-" * (len(header) - 4))
    for name, service in summary["services"].items():
        routes = [
            f"{format_case(route['case'])} -> {route['to'] or route['queue']}: {'?' if route['count'] is None else route['count']}"
            for route in service["routed"]
        ] or ["(sink)"]
        per_message = "-" if service["ms_per_message"] is None else f"{service['ms_per_message']:.1f} ms"
        say(f"    {name:<10} {service['processed']:>9}  {routes[0]:<40} {service['busy_seconds']:>6.2f}s {per_message:>8}")
        for route in routes[1:]:
            say(f"    {'':<10} {'':>9}  {route}")
    latency = summary["latency_ms"]
    say()
    say(
        f"    {summary['requests']} requests in {summary['seconds']:.1f}s ({summary['requests_per_second']}/s); "
        f"verdicts: {summary['verdicts']['positive']} positive, {summary['verdicts']['negative']} negative"
    )
    say(f"    end-to-end latency (send -> sink row): p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms, max {latency['max']:.0f} ms")
    say("    (all requests are sent at once, so the latency is mostly time spent waiting in the queues)")


# --------------------------------------------------------------------------- the original example


def run_original(cleanups: Cleanups) -> None:
    """The original README's example, byte for byte, serving one request."""
    stack = start_stack(cleanups)
    suffix = uuid.uuid4().hex[:8]
    inbound, outbound = f"demo-{suffix}.in", f"demo-{suffix}.out"
    buckets = {"in": "demo-in", "out": "demo-out"}
    for bucket in buckets.values():
        stack.s3.create_bucket(bucket)

    with step("config service with the system map"):
        document: dict[str, Any] = {
            "services": {ORIGINAL_SERVICE: {"in": inbound, "out": [{"case": True, "queues": [outbound]}], "buckets": buckets}},
            **devstack.config_sections(stack.s3, database="postgres"),
        }
        system = SystemMap(document)
        config = ConfigServer(system)
        config.start()
        cleanups.append(("stop the config service", config.stop))
        env = service_env(config.url, stack.store)
        queues = declared_queues(ORIGINAL_SERVICE, system, env)
        cleanups.append((f"delete {len(queues)} queues", lambda: stack.broker.delete_all(queues)))
        say(f"    {config.url}/{ORIGINAL_SERVICE} -> in {inbound}, case true -> {outbound}")

    with step("input object s3://demo-in/1"):
        stack.s3.client().put_object(Bucket=buckets["in"], Key="1", Body=b"world")

    with step(f"start {EXAMPLE.relative_to(REPO)} (unchanged) as its own process"):
        service = Process("service", [sys.executable, str(EXAMPLE)], env)
        cleanups.append(("stop the service process", lambda: service.running() and service.terminate(STOP_TIMEOUT)))
        stack.broker.wait_consumers({inbound: service}, START_TIMEOUT)

    with step(f"send request 1 to {inbound}; wait for the routed id on {outbound}"):
        stack.broker.publish(inbound, b"1")
        body, properties = stack.broker.get(outbound, service, 20)
        headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (properties.headers or {}).items()}
        say(f"    routed id {body.decode()} on {outbound}, persistent={properties.delivery_mode == 2}, headers {headers}")
        result = stack.s3.client().get_object(Bucket=buckets["out"], Key="1")["Body"].read()
        say(f"    s3://demo-out/1 = {result.decode(errors='replace')!r}")
        if body != b"1" or result != b"Hello world":
            raise DemoError(f"expected id 1 and 'Hello world', got {body!r} and {result!r}")

    with step("SIGTERM the service: it drains and exits"):
        code = service.terminate(STOP_TIMEOUT)
        if code != 0 or not any("drained cleanly" in line for line in service.lines):
            raise DemoError(service.failure())
        say("    exited with code 0, drained cleanly")


# --------------------------------------------------------------------------- main


def cleanup(cleanups: Cleanups) -> bool:
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the example pipeline (or the original example) on a local stack.")
    parser.add_argument("--requests", type=int, default=200, help="requests to send (default 200)")
    parser.add_argument("--output", type=Path, default=REPO / "demo-output", help="directory for the graph and summary.json")
    parser.add_argument("--original", action="store_true", help="run the original README example instead, unchanged")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    # SIGTERM (CI cancelling) unwinds like Ctrl-C, so the clean-up below still runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    cleanups: Cleanups = []
    code = 0
    try:
        if args.original:
            run_original(cleanups)
        else:
            run_pipeline(args.requests, args.output.resolve(), cleanups)
    except DemoError as exc:
        Progress.clear_line()
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr, flush=True)
        code = 130
    finally:
        Progress.active = None
        if not cleanup(cleanups) and code == 0:
            code = 1
    if code == 0:
        say(f"demo OK in {time.monotonic() - started:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
