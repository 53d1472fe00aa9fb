"""The worker's lifecycle in named phases: startup → run → drain → shutdown.

Signal handlers only set flags; the main thread watches them, so every decision about
stopping is made in one place (modelled on uvicorn's Server). Worker threads take
messages from the broker's inbox and run the pipeline; the broker's I/O thread owns
the connection.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from .broker import Broker, QueueSpec, connection_parameters
from .config import ConfigClient, ServiceConfig
from .database import Database
from .errors import ConfigError, ExitCode, SlingshotError
from .health import HealthServer
from .metrics import Metrics
from .pipeline import Executor, Pipeline, ProcessFn
from .retry import RetryPolicy, inbound_queue
from .secrets import pass_show
from .settings import Settings
from .storage import ObjectStore, S3Credentials

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

#: How often the main thread looks at its flags.
TICK = 0.1
#: The I/O thread must answer within this many seconds or /healthz fails.
IO_STALL_LIMIT = 30.0


@dataclass
class _Resources:
    """What the first message needs and start-up does not: resolved off the critical path."""

    s3: S3Credentials
    database_url: str | URL


class Service:
    def __init__(self, settings: Settings, process: ProcessFn) -> None:
        self.settings = settings
        self.process = process
        self.should_exit = threading.Event()
        self.force_exit = threading.Event()
        self.exit_code = ExitCode.OK
        self.metrics = Metrics(settings.service)
        self.metrics.in_flight = lambda: len(self._busy_since)
        self.config: ServiceConfig | None = None
        self.broker: Broker | None = None
        self.pipeline: Pipeline | None = None
        self.health: HealthServer | None = None
        self.started = False
        self.draining = False
        self.processed = 0
        self._client: ConfigClient | None = None
        self._database: Database | None = None
        self._resources: concurrent.futures.Future[_Resources] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="slingshot-prep")
        self._stop_taking = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy_since: dict[int, float] = {}  # worker thread id → start of its message
        self._warned_slow: set[int] = set()
        self._last_activity = time.monotonic()
        self._consumer_lost_at: float | None = None

    # -- phases -------------------------------------------------------------------------------

    def serve(self) -> ExitCode:
        """Run all phases; the exit code says how it ended."""
        self.install_signal_handlers()
        try:
            self.startup()
            self.run()
            self.drain()
        except SlingshotError as exc:
            log.error("%s: %s", type(exc).__name__, exc)
            self.exit_code = exc.exit_code
        finally:
            self.shutdown()
        return self.exit_code

    def startup(self) -> None:
        settings = self.settings
        started = time.monotonic()
        self._start_health()
        client = self._client = ConfigClient(settings.config_host, settings.service, settings.config_timeout)
        config = self.config = client.get_with_retries(settings.config_attempts)
        self._resources = self._executor.submit(self._prepare, client)
        rabbit = client.rabbitmq()
        policy = RetryPolicy(
            settings.service, config.inbound, settings.max_attempts, settings.retry_delay, settings.max_retry_delay
        )
        queues = [inbound_queue(config.inbound, settings.delivery_limit), *(QueueSpec(q) for q in config.outbound_queues),
                  *policy.queues()]  # fmt: skip
        self.broker = Broker(
            connection_parameters(rabbit, settings.heartbeat, f"slingshot {settings.service}"),
            config.inbound,
            queues,
            max(settings.prefetch, settings.concurrency),
            metrics=self.metrics,
        )
        self.broker.on_consuming = self._on_consuming
        if settings.delivery_limit is not None and max(settings.prefetch, settings.concurrency) > 1:
            log.warning("SLINGSHOT_DELIVERY_LIMIT also counts the messages prefetched behind one that kills the worker; "
                        "SLINGSHOT_PREFETCH=1 and SLINGSHOT_CONCURRENCY=1 count only the message in hand")  # fmt: skip
        self._database = Database(
            lambda: self._ready_resources().database_url,
            pool_size=settings.concurrency,
            application_name=f"slingshot {settings.service}",
        )
        store = ObjectStore(lambda: self._ready_resources().s3, client.bucket, self.metrics.bytes_read.inc)
        executor = Executor(self.process, config.routes, store, self._database, settings.staging_dir, self.metrics)
        self.pipeline = Pipeline(settings.service, executor, self.broker, policy, self.metrics, settings.body_format)
        self.broker.start()
        self.started = True
        # What start-up loaded lives as long as the process: out of the collector's sight, a
        # full collection walks only what messages allocate (it walked every module and
        # SQLAlchemy object before: ~100 ms pauses that stop all threads, ~5 µs a message).
        gc.freeze()
        log.info(
            "%s consuming from %s (routes: %d cases, %d queues; concurrency %d) after %.3fs",
            settings.service,
            config.inbound,
            len(config.routes),
            len(config.outbound_queues),
            settings.concurrency,
            time.monotonic() - started,
        )

    def run(self) -> None:
        """Serve until a signal, a fatal error, an exit condition, or the broker giving up."""
        for index in range(self.settings.concurrency):
            worker = threading.Thread(target=self._work, name=f"slingshot-worker-{index}", daemon=True)
            self._workers.append(worker)
            worker.start()
        while not self.should_exit.wait(TICK):
            assert self.broker is not None
            failure = self.broker.failed or self._resource_failure()
            if failure is not None:
                self._fail(failure)
                break
            self._check_slow_handlers()
            self._check_exit_conditions()

    def drain(self) -> None:
        """Finish the messages in hand, give back the unstarted ones, wait for confirms."""
        broker = self.broker
        if broker is None:
            return
        self.draining = True
        deadline = time.monotonic() + self.settings.drain_timeout
        log.info("draining (deadline %.0fs)", self.settings.drain_timeout)
        broker.stop_consuming()
        self._stop_taking.set()
        for worker in self._workers:
            while worker.is_alive() and not self._past(deadline):
                worker.join(TICK)
        self._requeue_unstarted()
        settled = not self._past(deadline) and broker.wait_settled(max(0.0, deadline - time.monotonic()))
        if any(w.is_alive() for w in self._workers) or not settled:
            reason = "a second signal" if self.force_exit.is_set() else f"the {self.settings.drain_timeout:.0f}s drain deadline"
            log.error("stopping on %s with a message unfinished; the broker will redeliver it", reason)
            if self.exit_code == ExitCode.OK:
                self.exit_code = ExitCode.DRAIN_TIMEOUT
        else:
            log.info("drained cleanly after %d messages", self.processed)

    def shutdown(self) -> None:
        if self.broker is not None:
            self.broker.close()
        if self._database is not None:
            self._database.dispose()
        if self._client is not None:
            self._client.close()
        if self.health is not None:
            self.health.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- signals ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in another program's thread: it owns the signals
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_signal)

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.should_exit.is_set():
            self.force_exit.set()
        self.should_exit.set()

    # -- probes -------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """Alive unless the I/O loop is stuck or no consumer came back after a reconnect."""
        broker = self.broker
        if broker is None or not self.started:
            return True, "starting"
        stalled = broker.io_stalled_for()
        if stalled > IO_STALL_LIMIT:
            return False, f"broker I/O loop unresponsive for {stalled:.0f}s"
        lost = self._consumer_lost_at
        if lost is not None and not self.draining and time.monotonic() - lost > self.settings.liveness_grace:
            return False, f"no consumer for {time.monotonic() - lost:.0f}s"
        return True, "consuming" if broker.consuming else "reconnecting"

    def readiness(self) -> tuple[bool, str]:
        if self.draining or self.should_exit.is_set():
            return False, "draining"
        if self.broker is None or not self.started:
            return False, "starting"
        if not self.broker.consuming:
            return False, "not consuming"
        return True, "consuming"

    def _start_health(self) -> None:
        port = self.settings.health_port
        if port == 0:
            return
        try:
            self.health = HealthServer(port, self.liveness, self.readiness, self.metrics.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve health checks on port {port}: {exc.strerror} (SLINGSHOT_HEALTH_PORT)") from exc
        self.health.start()

    def _on_consuming(self, consuming: bool) -> None:
        self._consumer_lost_at = None if consuming else time.monotonic()

    # -- workers ------------------------------------------------------------------------------

    def _work(self) -> None:
        broker, pipeline = self.broker, self.pipeline
        assert broker is not None and pipeline is not None
        me = threading.get_ident()
        ready = False  # resources resolve once; asked until then, not per message
        while not self._stop_taking.is_set():
            try:
                delivery = broker.inbox.get(timeout=TICK)
            except queue.Empty:
                continue
            if delivery.generation != broker.generation:
                continue  # from a lost channel: the broker redelivers it
            ready = ready or self._ready_resources_or_none() is not None
            if self._stop_taking.is_set() or not ready:
                broker.requeue(delivery)
                break
            with self._lock:
                self._busy_since[me] = time.monotonic()
                self._warned_slow.discard(me)
            try:
                pipeline.handle(delivery)
            finally:
                with self._lock:
                    del self._busy_since[me]
                    self.processed += 1
                    self._last_activity = time.monotonic()
                    if self.settings.max_messages is not None and self.processed >= self.settings.max_messages:
                        self._stop_taking.set()

    def _requeue_unstarted(self) -> None:
        broker = self.broker
        assert broker is not None
        returned = 0
        while True:
            try:
                delivery = broker.inbox.get_nowait()
            except queue.Empty:
                break
            if delivery.generation == broker.generation:
                broker.requeue(delivery)
                returned += 1
        if returned:
            log.info("returned %d prefetched messages to the queue", returned)

    def _past(self, deadline: float) -> bool:
        return self.force_exit.is_set() or time.monotonic() >= deadline

    def _check_slow_handlers(self) -> None:
        limit = self.settings.slow_handler_warning
        now = time.monotonic()
        with self._lock:
            slow = [t for t, since in self._busy_since.items() if now - since > limit and t not in self._warned_slow]
            self._warned_slow.update(slow)
        for _ in slow:
            log.warning(
                "process() has run for over %gs on one message (SLINGSHOT_SLOW_HANDLER_WARNING); RabbitMQ closes "
                "the channel when a delivery stays unacked past its consumer_timeout (default 30 min)",
                limit,
            )

    def _check_exit_conditions(self) -> None:
        settings = self.settings
        with self._lock:
            idle = not self._busy_since and self.broker is not None and self.broker.inbox.empty()
            idle_for = time.monotonic() - self._last_activity if idle else 0.0
            done = settings.max_messages is not None and self.processed >= settings.max_messages
        if done:
            log.info("processed %d messages (SLINGSHOT_MAX_MESSAGES); exiting", self.processed)
            self.should_exit.set()
        elif settings.exit_when_idle is not None and idle_for >= settings.exit_when_idle:
            log.info("idle for %.0fs (SLINGSHOT_EXIT_WHEN_IDLE); exiting", idle_for)
            self.should_exit.set()

    def _fail(self, error: BaseException) -> None:
        code = error.exit_code if isinstance(error, SlingshotError) else ExitCode.BROKER
        log.error("stopping: %s", error)
        self.exit_code = code
        self.should_exit.set()

    # -- resources ----------------------------------------------------------------------------

    def _prepare(self, client: ConfigClient) -> _Resources:
        """Resolve storage and database settings and their secrets concurrently with broker set-up."""
        settings = self.settings
        storage = client.object_storage()
        access = self._executor.submit(pass_show, storage.access_key_entry)
        secret = self._executor.submit(pass_show, storage.secret_key_entry)
        database_url: str | URL
        if settings.database_url:
            database_url = settings.database_url
        else:
            pg = client.postgres()
            database_url = pg.url(pass_show(pg.password_entry))
        return _Resources(S3Credentials(storage.endpoint, storage.region, access.result(), secret.result()), database_url)

    def _ready_resources(self) -> _Resources:
        assert self._resources is not None
        return self._resources.result()

    def _ready_resources_or_none(self) -> _Resources | None:
        try:
            return self._ready_resources()
        except Exception:
            return None  # the main thread reports it and stops

    def _resource_failure(self) -> BaseException | None:
        future = self._resources
        if future is None or not future.done():
            return None
        return future.exception()
