"""Cold start: time from process start to consuming, on the real local stack.

(a) in-process, without secrets on the critical path: ``python -m slingshot_runtime handler.py``
    with ``SLINGSHOT_DATABASE_URL`` set and a pass store in the environment, timed from spawn to
    the log line "consuming from". Target ≤ 0.5 s.
(b) in the container (scripts/container.py builds the image): the real entrypoint with a key
    import from a read-only Secret mount and three ``pass show`` (two S3 keys, the PostgreSQL
    password; the service reads them beside broker set-up). Timed from ``podman run`` to the
    "consuming from" line, and inside the container from the process's exec (the entrypoint's
    SLINGSHOT_STARTUP_TIMINGS line). Target ≤ 1.5 s. A probe in the same image times each phase
    on its own, one after the other: imports, key import, three pass show, config fetch,
    broker connect.

    python bench/cold_start.py [--runs 5] [--skip-container]

Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

from common import DATABASE_URL, REPO, LocalStack, local_stack

TARGET_IN_PROCESS = 0.5
TARGET_CONTAINER = 1.5
CONSUMING = re.compile(r"consuming from ")
TIMINGS = re.compile(r"startup: consuming (?P<age>[0-9.]+)s after process start \((?P<parts>[^)]*)\)")
HANDLER = "def process(request, read_file, write_file, connection):\n    yield (request, True)\n"
KEYS_MOUNT = "/run/secrets/slingshot/gpg"
STORE_MOUNT = "/run/secrets/slingshot/password-store"

# Runs inside the image with the venv's python: each start-up phase alone, in the order the
# entrypoint and the service meet them. Prints one JSON object.
PROBE = r"""
import json, os, time
t = time.monotonic()
marks = {}
def lap(name):
    global t
    now = time.monotonic(); marks[name] = round(now - t, 4); t = now
import slingshot_runtime.service, slingshot_runtime.secrets as secrets, slingshot_runtime.config as config
import slingshot_runtime.broker as broker, pika
lap("imports")
os.environ.update(secrets.prepare_secrets())
lap("key import")
client = config.ConfigClient(os.environ["SLINGSHOT_CONFIG_HOST"], os.environ["SLINGSHOT_SERVICE"])
service = client.service_config(); rabbit = client.rabbitmq(); storage = client.object_storage(); pg = client.postgres()
lap("config fetch")
for entry in (storage.access_key_entry, storage.secret_key_entry, pg.password_entry):
    secrets.pass_show(entry)
lap("secrets (3 pass show)")
connection = pika.BlockingConnection(broker.connection_parameters(rabbit, None, "slingshot bench probe"))
lap("broker connect")
connection.close()
secrets.discard_gnupghome(os.environ["GNUPGHOME"])
print(json.dumps(marks))
"""


def log(message: str) -> None:
    print(f"cold_start: {message}", file=sys.stderr, flush=True)


def time_to_consuming(
    argv: list[str], env: dict[str, str] | None, then: re.Pattern[str] | None = None, timeout: float = 60
) -> tuple[float, str]:
    """Seconds from spawning ``argv`` to its first "consuming from" line; its log up to there,
    or up to the line matching ``then`` when given."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    elapsed: float | None = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if elapsed is None and CONSUMING.search(line):
                elapsed = time.perf_counter() - started
            if elapsed is not None and (then is None or then.search(line)):
                return elapsed, "".join(seen)
            if time.perf_counter() - started > timeout:
                break
        raise RuntimeError(f"{argv[0]} never reached 'consuming from':\n{''.join(seen)[-3000:]}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_in_process(stack: LocalStack, runs: int) -> dict[str, Any]:
    handler = stack.root / "handler.py"
    handler.write_text(HANDLER)
    env = dict(os.environ, **stack.passwords.env())
    env.update(
        SLINGSHOT_DATABASE_URL=DATABASE_URL,
        SLINGSHOT_HEALTH_PORT="0",
        SLINGSHOT_CONFIG_HOST=stack.config.url,
        SLINGSHOT_LOG_FORMAT="text",
        PYTHONPATH=str(REPO),
    )
    samples = []
    for run in range(runs + 1):
        env["SLINGSHOT_SERVICE"] = stack.add_service()
        seconds, _ = time_to_consuming([sys.executable, "-m", "slingshot_runtime", str(handler)], env)
        if run:  # the first run warms the page cache
            samples.append(seconds)
        log(f"in-process run {run}: {seconds:.3f}s")
    median = statistics.median(samples)
    return {
        "samples_s": [round(s, 3) for s in samples],
        "median_s": round(median, 3),
        "target_s": TARGET_IN_PROCESS,
        "meets_target": median <= TARGET_IN_PROCESS,
    }


def _container_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slingshot_container_script", REPO / "scripts" / "container.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_container(stack: LocalStack, runs: int) -> dict[str, Any]:
    script = _container_script()
    script.require_tools()
    engine = script.Engine()
    log("building the image (cached layers)")
    script.build_image(engine)
    secret_dir = stack.root / "secret"
    keys = secret_dir / "gpg"
    keys.mkdir(parents=True)
    stack.passwords.export_private_key(keys / "service.asc")
    (keys / "service.asc").chmod(0o644)
    store = secret_dir / "password-store"
    shutil.copytree(stack.passwords.store_dir, store)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    handler = stack.root / "handler.py"
    handler.write_text(HANDLER)
    handler.chmod(0o644)

    def run_args(service: str) -> list[str]:
        return [
            "run",
            "--rm",
            *engine.run_args(),
            "-v",
            f"{keys}:{KEYS_MOUNT}:ro",
            "-v",
            f"{store}:{STORE_MOUNT}:ro",
            "-v",
            f"{handler}:/app/handler.py:ro",
            "-e",
            f"SLINGSHOT_SERVICE={service}",
            "-e",
            f"SLINGSHOT_CONFIG_HOST={stack.config.url}",
            "-e",
            "SLINGSHOT_HEALTH_PORT=0",
            "-e",
            "SLINGSHOT_STARTUP_TIMINGS=1",
            "-e",
            "SLINGSHOT_LOG_FORMAT=text",
        ]

    wall: list[float] = []
    inside: list[float] = []
    parts: list[dict[str, float]] = []
    for run in range(runs + 1):
        seconds, output = time_to_consuming(["podman", *run_args(stack.add_service()), script.IMAGE], engine.env, TIMINGS)
        match = TIMINGS.search(output)
        assert match is not None
        if run:  # the first run warms the page cache
            wall.append(seconds)
            inside.append(float(match["age"]))
            parts.append({k.rsplit(" ", 1)[0]: float(k.rsplit(" ", 1)[1].rstrip("s")) for k in match["parts"].split(", ")})
        log(f"container run {run}: {seconds:.3f}s from podman run, {match['age']}s from exec ({match['parts']})")
    probes = []
    for _ in range(3):
        argv = [*run_args(stack.add_service()), "--entrypoint", "/opt/slingshot/bin/python", script.IMAGE, "-c", PROBE]
        probes.append(json.loads(engine.tool("podman", *argv, timeout=120).stdout.strip().splitlines()[-1]))
        log(f"probe: {probes[-1]}")
    inside_median = statistics.median(inside)
    return {
        "image": script.IMAGE,
        "image_bytes": engine.image_size(script.IMAGE),
        "from_podman_run_s": {"samples": [round(s, 3) for s in wall], "median": round(statistics.median(wall), 3)},
        "from_process_exec_s": {"samples": inside, "median": round(inside_median, 3)},
        "entrypoint_breakdown_median_s": {k: round(statistics.median(p[k] for p in parts), 3) for k in parts[0]},
        "phases_one_by_one_median_s": {k: round(statistics.median(p[k] for p in probes), 3) for k in probes[0]},
        "target_s": TARGET_CONTAINER,
        "meets_target": inside_median <= TARGET_CONTAINER,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per case (one warm-up run more)")
    parser.add_argument("--skip-container", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "cold_start",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
    }
    with local_stack() as stack:
        result["in_process"] = bench_in_process(stack, args.runs)
        if not args.skip_container:
            result["container"] = bench_container(stack, args.runs)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
