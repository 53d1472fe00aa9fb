"""No secret value reaches a log line, whatever happens: a worker at DEBUG level, with
successes, handler failures, a storage failure and a dead letter, logs none of them."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import SECRETS, Amqp, Stack, put_object

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
    worker = stack.spawn_worker(service, handler, log_level="DEBUG", log_format="json", max_attempts="2", retry_delay="0.1")
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
