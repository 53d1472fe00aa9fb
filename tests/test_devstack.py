"""The local stack itself: real SeaweedFS, GNU pass and config service, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from slingshot_runtime.devstack import (
    PassStore,
    S3Server,
    ensure_postgres,
    ensure_rabbitmq,
    free_port,
    make_pass_store,
    start_s3,
)
from slingshot_runtime.sysmap import ConfigServer, SystemMap, make_self_signed_cert

REPO = Path(__file__).resolve().parents[1]

DOCUMENT = {
    "services": {
        "resize": {
            "in": "resize-in",
            "out": [
                {"case": True, "queues": ["thumbs"]},
                {"case": 1, "queues": ["one"]},
                {"case": "1", "queues": ["one-str", "audit"]},
            ],
            "buckets": {"images": "real-images-bucket", "with space": "spaced"},
        },
    },
    "rabbitmq": {
        "host": "127.0.0.1",
        "port": 5672,
        "username": "guest",
        "password": "guest",
        "vhost": "/",
    },
    "object-storage": {
        "host": "http://127.0.0.1:8333",
        "region": "us-east-1",
        "access-key": "s3/access-key",
        "secret-key": "s3/secret-key",
    },
    "postgres": {
        "host": "127.0.0.1",
        "port": 5432,
        "database": "test",
        "username": "postgres",
        "password": "postgres/password",
    },
}


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A plain boto3 client, independent of devstack's helper."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = start_s3(tmp_path / "s3")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pass_store(tmp_path: Path) -> Iterator[PassStore]:
    store = make_pass_store(tmp_path / "pass", {"-dash-entry": "dash value", "s3/secret-key": "shh"})
    try:
        yield store
    finally:
        store.close()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_s3_put_get_auth_and_restart(s3: S3Server) -> None:
    assert s3.endpoint.startswith("http://127.0.0.1:")
    assert s3.secret_key not in repr(s3)
    s3.create_bucket("devstack-test")
    s3.create_bucket("devstack-test")  # already exists: fine
    client = s3.client()
    client.put_object(Bucket="devstack-test", Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket="devstack-test", Key="a/b.txt")["Body"].read() == b"hello"

    with pytest.raises(ClientError) as err:
        s3_client(s3.endpoint, s3.access_key, "not-the-secret").list_buckets()
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"

    s3.stop()
    assert not s3.is_running()
    with pytest.raises(EndpointConnectionError):
        s3.client(retries=1).list_buckets()

    s3.start()
    assert s3.is_running()
    assert client.get_object(Bucket="devstack-test", Key="a/b.txt")["Body"].read() == b"hello"


def test_s3_servers_run_in_parallel(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(lambda i: start_s3(tmp_path / f"s3-{i}"), range(2)))
    try:
        a, b = servers
        assert a.endpoint != b.endpoint and a.access_key != b.access_key
        a.create_bucket("only-in-a")
        names = [x["Name"] for x in b.client().list_buckets().get("Buckets", [])]
        assert "only-in-a" not in names
        with pytest.raises(ClientError):
            s3_client(b.endpoint, a.access_key, a.secret_key).list_buckets()
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.stop(), servers))


def test_pass_store_dash_entry_and_export(pass_store: PassStore, tmp_path: Path) -> None:
    env = {**os.environ, **pass_store.env()}
    out = subprocess.run(
        ["pass", "show", "--", "-dash-entry"],
        env=env,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert out == "dash value\n"
    assert pass_store.show("s3/secret-key") == "shh"
    pass_store.insert("-dash-entry", "replaced")
    assert pass_store.show("-dash-entry") == "replaced"
    assert (pass_store.gnupghome.stat().st_mode & 0o777) == 0o700

    key_file = tmp_path / "private.asc"
    pass_store.export_private_key(key_file)
    assert key_file.read_text().startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    assert (key_file.stat().st_mode & 0o777) == 0o600


def test_pass_store_with_long_root_uses_short_gnupghome(tmp_path: Path) -> None:
    root = tmp_path / ("x" * 90)
    store = make_pass_store(root, {"k": "v"})
    try:
        assert len(str(store.gnupghome)) <= 80
        assert store.store_dir.is_relative_to(root)
        assert store.show("k") == "v"
    finally:
        store.close()
    assert not store.gnupghome.exists()


def test_shared_servers_are_up() -> None:
    ensure_rabbitmq(timeout=20)
    ensure_postgres(timeout=20)


def test_system_map_lookup() -> None:
    system = SystemMap(DOCUMENT)
    assert system.lookup("/rabbitmq") == DOCUMENT["rabbitmq"]
    assert system.lookup("/resize") == {
        "in": "resize-in",
        "out": DOCUMENT["services"]["resize"]["out"],  # type: ignore[index]
    }
    assert system.lookup("/resize/images") == "real-images-bucket"
    assert system.lookup("/resize/with%20space") == "spaced"
    assert system.lookup("/resize/nope") is None
    assert system.lookup("/nope") is None
    assert system.lookup("/resize/images/extra") is None
    for reserved in ("rabbitmq", "object-storage", "postgres"):
        with pytest.raises(ValueError, match="reserved"):
            SystemMap({"services": {reserved: {"in": "q", "out": []}}})


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_config_server(tls: bool, tmp_path: Path) -> None:
    cert = key = None
    if tls:
        cert_path, key_path = make_self_signed_cert(tmp_path / "tls")
        cert, key = str(cert_path), str(key_path)
    server = ConfigServer(SystemMap(DOCUMENT), certfile=cert, keyfile=key)
    server.start()
    try:
        verify: str | bool = cert if cert is not None else True
        assert server.url.startswith("https://localhost:" if tls else "http://127.0.0.1:")
        resp = requests.get(f"{server.url}/object-storage", verify=verify, timeout=5)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json() == DOCUMENT["object-storage"]
        assert requests.get(f"{server.url}/resize", verify=verify, timeout=5).json()["in"] == "resize-in"
        assert requests.get(f"{server.url}/resize/images", verify=verify, timeout=5).json() == "real-images-bucket"
        missing = requests.get(f"{server.url}/unknown", verify=verify, timeout=5)
        assert missing.status_code == 404 and "error" in missing.json()
        assert requests.post(f"{server.url}/resize", verify=verify, timeout=5).status_code == 405
        assert server.requests_log == [
            "/object-storage",
            "/resize",
            "/resize/images",
            "/unknown",
        ]

        server.system = SystemMap({"services": {"resize": {"in": "other", "out": []}}})
        assert requests.get(f"{server.url}/resize", verify=verify, timeout=5).json() == {"in": "other", "out": []}
        if tls:
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(f"{server.url}/resize", timeout=5)  # system CAs: not trusted

        port = server.port
        server.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{server.url}/resize", verify=verify, timeout=5)
        server.start()
        assert server.port == port
        assert requests.get(f"{server.url}/resize", verify=verify, timeout=5).status_code == 200
    finally:
        server.stop()


def test_cli_up_writes_stack_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slingshot_runtime.devstack",
            "up",
            "--dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stack_file = tmp_path / "stack.json"
    try:
        deadline = time.monotonic() + 40
        while not stack_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "stack.json not written"
            time.sleep(0.1)
        stack = json.loads(stack_file.read_text())
        s3_pid = stack["s3"]["pid"]
        os.kill(s3_pid, 0)
        storage = stack["object-storage"]
        keys = [
            subprocess.run(
                ["pass", "show", "--", storage[entry]],
                env={**os.environ, **stack["env"]},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for entry in ("access-key", "secret-key")
        ]
        s3_client(storage["host"], *keys).list_buckets()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    assert rc == 0, proc.communicate()
    assert not stack_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(s3_pid, 0)
