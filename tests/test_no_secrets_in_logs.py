"""No secret value reaches a log line, whatever happens: a worker at DEBUG level, with
successes, handler failures, a storage failure and a dead letter, logs none of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import REPO, SECRETS, Amqp, Stack, put_object

HANDLER = '''
def process(request, read_file, write_file, connection):
    if request == 2:
        raise RuntimeError("handler failure")
    if request == 3:
        read_file("in", 999)  # no such object: a storage error
    write_file("out", request).write(read_file("in", request).read())
    connection.exec_driver_sql("SELECT 1")
    yield (request, True)
'''


def test_worker_logs_hold_no_secret(stack: Stack, amqp: Amqp, tmp_path: Path) -> None:
    service = stack.add_service()
    put_object(stack, service.buckets["in"], 1, b"data")
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        SLINGSHOT_SERVICE=service.name,
        SLINGSHOT_CONFIG_HOST=stack.config.url,
        SLINGSHOT_LOG_LEVEL="DEBUG",
        SLINGSHOT_LOG_FORMAT="json",
        SLINGSHOT_MAX_ATTEMPTS="2",
        SLINGSHOT_RETRY_DELAY="0.1",
    )
    worker = subprocess.Popen([sys.executable, "-m", "slingshot_runtime", str(handler)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        amqp.wait_consumer(service.inbound)
        for request in (1, 2, 3, b"not-a-number"):
            amqp.send(service.inbound, request)
        assert amqp.get(service.out_queues[0])[0] == b"1"
        assert len(amqp.get_all(service.inbound + ".dlq", 3)) == 3
    finally:
        worker.send_signal(signal.SIGTERM)
        stdout, stderr = worker.communicate(timeout=60)
    logs = stdout + stderr
    assert worker.returncode == 0, stderr
    assert "handler failure" in logs and "NoSuchKey" in logs  # the failures were logged...
    secrets = [stack.s3.access_key, stack.s3.secret_key, SECRETS["postgres/password"]]
    for secret in secrets:
        assert secret not in logs  # ...and no secret was
