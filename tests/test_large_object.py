"""A 200 MB object streams through read_file → write_file without being held in memory."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

from conftest import Amqp, Stack

SIZE = 200 * 1024 * 1024
HANDLER = '''
import shutil

def process(request, read_file, write_file, connection):
    shutil.copyfileobj(read_file("in", request), write_file("out", request), 1024 * 1024)
    yield (request, True)
'''


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_200mb_object_is_streamed(stack: Stack, amqp: Amqp, tmp_path: Path) -> None:
    service = stack.add_service()
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(SIZE // len(block)):
            chunk = block[:-8] + i.to_bytes(8, "big")
            digest.update(chunk)
            f.write(chunk)
    stack.s3.client().upload_file(str(source), service.buckets["in"], "77")
    source.unlink()
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    worker = stack.spawn_worker(service, handler, staging_dir=str(tmp_path))
    try:
        amqp.wait_consumer(service.inbound)
        amqp.send(service.inbound, 77)
        assert amqp.get(service.out_queues[0], timeout=180)[0] == b"77"
        peak = _peak_rss_mib(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    copied = hashlib.sha256()
    body = stack.s3.client().get_object(Bucket=service.buckets["out"], Key="77")["Body"]
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        copied.update(chunk)
    assert copied.hexdigest() == digest.hexdigest()
    print(f"peak RSS of the worker: {peak:.0f} MiB for a {SIZE // 2**20} MiB object")
    assert peak < 150, f"peak RSS {peak:.0f} MiB is not well under the object's {SIZE // 2**20} MiB"
    assert not any(p.name.startswith("slingshot-") for p in tmp_path.iterdir()), "staging left behind"
