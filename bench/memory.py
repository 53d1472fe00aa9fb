"""Peak memory of a worker copying a 1 GiB object through ``read_file`` → ``write_file``.

A worker subprocess (``python -m slingshot_runtime handler.py``, SLINGSHOT_MAX_MESSAGES=1 so it
exits after the message) runs a handler that streams the input object into the output with
``shutil.copyfileobj``. Its peak RSS is VmHWM (the kernel's high-water mark, so polling every
50 ms misses no peak, only the last moments before exit) from /proc/PID/status. (wait4's
ru_maxrss is no use here: a vfork-spawned child inherits the parent's high-water mark.) The copy is verified by size and a
sha256 streamed from the output object. Target: peak RSS at most 150 MB.

    python bench/memory.py [--size-mib 1024]

Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import IO, cast

from common import LocalStack, channel, emit, fill, header, local_stack, log

TARGET_MB = 150.0
MIB = 1 << 20
HANDLER = """\
import shutil


def process(request, read_file, write_file, connection):
    with read_file("in", request) as source, write_file("out", request) as target:
        shutil.copyfileobj(source, target, 1 << 20)
    yield (request, True)
"""
VMHWM = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)


class RandomStream(io.RawIOBase):
    """``size`` random bytes, hashed as they are read (boto3 uploads it without a temp file)."""

    def __init__(self, size: int) -> None:
        self.left, self.sha256 = size, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        chunk = os.urandom(size)
        self.left -= size
        self.sha256.update(chunk)
        return chunk


def hwm_kb(pid: int) -> int | None:
    try:
        match = VMHWM.search(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(match[1]) if match else None


def stream_digest(stack: LocalStack, bucket: str, key: str) -> tuple[int, str]:
    body = stack.s3.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(MIB), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="object size in MiB (default 1024)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the worker may take (default 900)")
    args = parser.parse_args(argv)
    size = args.size_mib * MIB
    result = header("memory-1gib-copy")
    with local_stack() as stack, channel() as amqp:
        suffix = uuid.uuid4().hex[:8]
        buckets = {"in": f"bench-mem-in-{suffix}", "out": f"bench-mem-out-{suffix}"}
        name = stack.add_service("bench-mem", buckets)
        log("memory", f"uploading {args.size_mib} MiB of random bytes")
        source = RandomStream(size)
        stack.s3.client().upload_fileobj(cast(IO[bytes], source), buckets["in"], "0")
        handler = stack.root / "handler.py"
        handler.write_text(HANDLER)
        staging = stack.root / "staging"
        staging.mkdir()
        fill(amqp, f"{name}-in", 1, settle=0)
        amqp.queue_declare(f"{name}-out", durable=True)
        env = stack.worker_env(name, max_messages="1", staging_dir=str(staging), drain_timeout="600")
        log("memory", "running the worker")
        started = time.perf_counter()
        with open(stack.root / "worker.log", "wb") as worker_log:
            proc = os.posix_spawn(
                sys.executable, [sys.executable, "-m", "slingshot_runtime", str(handler)], env,
                file_actions=[(os.POSIX_SPAWN_DUP2, worker_log.fileno(), 2), (os.POSIX_SPAWN_DUP2, worker_log.fileno(), 1)],
            )
        polled = 0
        while True:
            pid, status = os.waitpid(proc, os.WNOHANG)
            if pid:
                break
            polled = max(polled, hwm_kb(proc) or 0)
            if time.perf_counter() - started > args.timeout:
                os.kill(proc, 9)
                raise RuntimeError(f"the worker took over {args.timeout:.0f}s; log: {stack.root / 'worker.log'}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        exit_code = os.waitstatus_to_exitcode(status)
        worker_output = (stack.root / "worker.log").read_text(errors="replace")
        if exit_code != 0:
            raise RuntimeError(f"the worker exited with {exit_code}:\n{worker_output[-3000:]}")
        log("memory", f"worker done in {seconds:.1f}s; verifying the copy")
        copied_size, copied_sha = stream_digest(stack, buckets["out"], "0")
        output_messages = amqp.queue_declare(f"{name}-out", passive=True).method.message_count
    peak_mb = polled * 1024 / 1e6
    result.update(
        object_bytes=size,
        worker_seconds=round(seconds, 1),
        copy_mb_per_s=round(2 * size / 1e6 / seconds, 1),  # read + write
        peak_rss_mb=round(peak_mb, 1),
        exit_code=exit_code,
        copy_verified=copied_size == size and copied_sha == source.sha256.hexdigest(),
        output_size=copied_size,
        sha256=copied_sha,
        output_messages=output_messages,
        target_mb=TARGET_MB,
        meets_target=peak_mb <= TARGET_MB and copied_size == size and copied_sha == source.sha256.hexdigest(),
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
