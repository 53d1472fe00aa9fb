"""GNU pass secrets and the config-service client against real pass/gpg and real HTTP(S)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Stack
from slingshot_runtime import devstack
from slingshot_runtime.config import ConfigClient, RabbitConfig, base_url
from slingshot_runtime.errors import ConfigError, SecretError
from slingshot_runtime.routing import case_key
from slingshot_runtime.secrets import pass_show
from slingshot_runtime.settings import Settings
from slingshot_runtime.storage import S3Credentials
from slingshot_runtime.sysmap import ConfigServer, SystemMap, make_self_signed_cert

SECRET = "s3cr3t-value-Zq9"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> devstack.PassStore:
    root = tmp_path_factory.mktemp("pass")
    passwords = devstack.make_pass_store(root, {"-dash-entry": SECRET, "team/db": "multi\nline"})
    yield passwords
    passwords.close()


def test_entry_starting_with_a_dash_is_a_name(store: devstack.PassStore) -> None:
    assert pass_show("-dash-entry", dict(os.environ, **store.env())) == SECRET


def test_first_line_is_the_secret(store: devstack.PassStore) -> None:
    assert pass_show("team/db", dict(os.environ, **store.env())) == "multi"


def test_missing_entry_names_the_entry_not_a_value(store: devstack.PassStore) -> None:
    with pytest.raises(SecretError) as info:
        pass_show("nope/missing", dict(os.environ, **store.env()))
    assert "'nope/missing'" in str(info.value) and "no such entry" in str(info.value)


def test_entry_for_another_key_fails_clearly(store: devstack.PassStore, tmp_path: Path) -> None:
    other = devstack.make_pass_store(tmp_path / "other", {"x": "y"})
    try:
        env = dict(os.environ, GNUPGHOME=str(store.gnupghome), PASSWORD_STORE_DIR=str(other.store_dir))
        with pytest.raises(SecretError, match=r"'x'.*no secret key"):
            pass_show("x", env)
    finally:
        other.close()


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", ""])
def test_unsafe_entry_names_are_refused(name: str) -> None:
    with pytest.raises(SecretError, match="invalid pass entry name"):
        pass_show(name)


def test_secrets_are_not_in_reprs() -> None:
    assert SECRET not in repr(RabbitConfig("h", 5672, "user", SECRET))
    assert SECRET not in repr(S3Credentials("http://h", "us-east-1", "AK", SECRET))


def test_base_url() -> None:
    assert base_url("sys-map.slingshot.cv") == "https://sys-map.slingshot.cv"
    assert base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError, match="scheme"):
        base_url("ftp://x")


def test_config_host_variable_overrides_the_argument() -> None:
    settings = Settings.load("svc", "sys-map.slingshot.cv", environ={"SLINGSHOT_CONFIG_HOST": "http://127.0.0.1:1"})
    assert settings.config_host == "http://127.0.0.1:1"
    with pytest.raises(ConfigError, match="SLINGSHOT_PREFETCH must be a number"):
        Settings.load("svc", "h", environ={"SLINGSHOT_PREFETCH": "many"})
    assert Settings.load("svc", "h", environ={"SLINGSHOT_DELIVERY_LIMIT": "3"}).delivery_limit == 3
    with pytest.raises(ConfigError, match="SLINGSHOT_DELIVERY_LIMIT must be at least 1, got 0"):
        Settings.load("svc", "h", environ={"SLINGSHOT_DELIVERY_LIMIT": "0"})


def _serve(document: dict[str, object]) -> ConfigServer:
    server = ConfigServer(SystemMap(document))
    server.start()
    return server


@pytest.mark.parametrize(
    "section,doc,fragment",
    [
        ("rabbitmq", {"host": "h", "username": "u"}, "missing field 'password'"),
        ("rabbitmq", {"host": "h", "username": "u", "password": "p", "port": "x"}, "field 'port'"),
        ("object-storage", {"host": "h", "access-key": "a"}, "missing field 'secret-key'"),
        ("postgres", {"host": "h", "database": "d", "username": "u", "password": 5}, "field 'password' must be a non-empty str"),
    ],
)
def test_incomplete_documents_name_url_and_field(section: str, doc: dict[str, object], fragment: str) -> None:
    server = _serve({"services": {}, section: doc})
    try:
        client = ConfigClient(server.url, "svc")
        with pytest.raises(ConfigError) as info:
            getattr(client, {"object-storage": "object_storage"}.get(section, section))()
        assert f"{server.url}/{section}" in str(info.value) and fragment in str(info.value)
    finally:
        server.stop()


def test_service_document_routes_and_errors() -> None:
    server = _serve({"services": {"svc": {"in": "q", "out": [{"case": True, "queues": ["a"]}, {"case": 1, "queues": ["b"]}]}}})
    try:
        config = ConfigClient(server.url, "svc").service_config()
        assert config.inbound == "q"
        assert config.routes == {case_key(True): ("a",), case_key(1): ("b",)}
        with pytest.raises(ConfigError, match=r"/missing returned HTTP 404"):
            ConfigClient(server.url, "missing").service_config()
    finally:
        server.stop()


def test_bucket_lookup_is_cached_and_accepts_plain_text(stack: Stack) -> None:
    service = stack.add_service()
    client = ConfigClient(stack.config.url, service.name)
    before = len(stack.config.requests_log)
    assert client.bucket("in") == service.buckets["in"]
    assert client.bucket("in") == service.buckets["in"]
    assert len(stack.config.requests_log) == before + 1


def test_unreachable_config_service_is_a_config_error() -> None:
    client = ConfigClient(f"http://127.0.0.1:{devstack.free_port()}", "svc", timeout=1)
    with pytest.raises(ConfigError, match=r"GET http://127.0.0.1:.*/svc failed"):
        client.get_with_retries(2, first_delay=0.05)


def test_https_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    server = ConfigServer(SystemMap({"services": {"svc": {"in": "q", "out": []}}}), certfile=str(cert), keyfile=str(key))
    server.start()
    try:
        assert server.url.startswith("https://")
        with pytest.raises(ConfigError, match="SSLError"):
            ConfigClient(server.url, "svc").service_config()  # self-signed: not trusted by default
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert ConfigClient(server.url, "svc").service_config().inbound == "q"
    finally:
        server.stop()
