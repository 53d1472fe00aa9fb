"""{{ cookiecutter.service_name }}: {{ cookiecutter.description }}

The slingshot worker calls ``process`` once per request id taken from the service's inbound
queue, which the config service names in its document for this service:
``GET /{{ cookiecutter.service_name }}``. Test it offline with ``make test``; in the container
the entrypoint loads this file (``SLINGSHOT_HANDLER=/app/handler.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.engine import Connection

from slingshot_runtime.typing import CaseVariable, ReadFileFn, WriteFileFn

#: Bytes read at a time: objects are streamed from S3, never loaded whole.
CHUNK = 1 << 20


def process(
    request: int,
    read_file: ReadFileFn,
    write_file: WriteFileFn,
    connection: Connection,
) -> Iterator[tuple[int, CaseVariable]]:
    """Upper-case object ``request`` of bucket ``in`` into bucket ``out``, then route it on case ``True``.

    ``"in"`` and ``"out"`` are bucket references: the config service maps them to real buckets.
    What is written is uploaded after ``process`` returns; ``connection`` is this message's
    transaction, committed after the uploads (e.g. ``connection.execute(text("INSERT ..."), {...})``).
    Each yielded ``(id, case)`` is published to every queue of that case once all of it is durable.
    """
    with read_file("in", request) as source, write_file("out", request) as target:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            target.write(chunk.upper())
    yield (request, True)
