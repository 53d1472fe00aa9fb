"""The original README's Python example runs unchanged, as its own process, on the real stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from conftest import REPO, Amqp, Stack, put_object, read_object

EXAMPLE = REPO / "examples" / "original" / "service.py"


def test_original_example_unchanged(stack: Stack, amqp: Amqp) -> None:
    source = EXAMPLE.read_text()
    assert 'Microservice("simple-py-microservice", "sys-map.slingshot.cv", process)' in source
    service = stack.add_service(name="simple-py-microservice")
    put_object(stack, service.buckets["in"], 42, b"world")
    env = dict(os.environ, SLINGSHOT_CONFIG_HOST=stack.config.url, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        amqp.wait_consumer(service.inbound)
        amqp.send(service.inbound, 42)
        body, properties = amqp.get(service.out_queues[0], timeout=30)
        assert body == b"42"
        assert properties.headers["x-slingshot-source"] == "simple-py-microservice"
        assert properties.headers["x-slingshot-case"] == "true"
        assert properties.delivery_mode == 2
        # The file was durable before its id was published.
        assert read_object(stack, service.buckets["out"], 42) == b"Hello world"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "drained cleanly" in stderr
