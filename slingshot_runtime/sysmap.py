"""A small config service speaking the slingshot config protocol over real HTTP(S).

Tests and the demo point workers at it instead of a stub so the real client code
(TLS verification, caching, error handling) runs. It serves one in-memory
document; the YAML-driven reference service will build on it.

Protocol (see docs/protocol.md): ``GET /rabbitmq``, ``/object-storage``,
``/postgres`` → that section; ``GET /NAME`` → ``{"in", "out"}``;
``GET /NAME/REF`` → the bucket name as a JSON string; anything else → 404.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, cast
from urllib.parse import unquote, urlsplit

__all__ = ["ConfigServer", "SystemMap", "SystemMapError", "make_self_signed_cert"]

SECTIONS = ("rabbitmq", "object-storage", "postgres")


class SystemMapError(ValueError):
    """The system document is malformed (a ValueError, so callers may catch either)."""


def _check_service(name: str, spec: object) -> dict[str, Any]:
    """Validate one service entry so mistakes surface at construction, not in a worker."""
    if not isinstance(spec, Mapping):
        raise SystemMapError(f"service {name!r}: expected a mapping, got {type(spec).__name__}")
    queue = spec.get("in")
    if not isinstance(queue, str) or not queue:
        raise SystemMapError(f"service {name!r}: 'in' must be a non-empty string")
    outs = spec.get("out", [])
    if not isinstance(outs, list):
        raise SystemMapError(f"service {name!r}: 'out' must be a list")
    for i, out in enumerate(outs):
        if not isinstance(out, Mapping) or "case" not in out:
            raise SystemMapError(f"service {name!r}: out[{i}] needs 'case' and 'queues'")
        if not isinstance(out["case"], bool | int | str):
            raise SystemMapError(f"service {name!r}: out[{i}].case must be bool, int or str")
        queues = out.get("queues")
        if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
            raise SystemMapError(f"service {name!r}: out[{i}].queues must be a list of strings")
    buckets = spec.get("buckets", {})
    if not isinstance(buckets, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in buckets.items()
    ):
        raise SystemMapError(f"service {name!r}: 'buckets' must map reference names to bucket names")
    return {
        "in": queue,
        "out": [{"case": o["case"], "queues": list(o["queues"])} for o in outs],
        "buckets": dict(buckets),
    }


class SystemMap:
    """The whole system's wiring: services, their queues and buckets, shared endpoints."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        services = document.get("services", {})
        if not isinstance(services, Mapping):
            raise SystemMapError("'services' must be a mapping")
        self.services: dict[str, dict[str, Any]] = {}
        for name, spec in services.items():
            if not isinstance(name, str) or not name:
                raise SystemMapError(f"service name must be a non-empty string: {name!r}")
            if name in SECTIONS:
                raise SystemMapError(f"service name {name!r} is reserved for the {name} section")
            self.services[name] = _check_service(name, spec)
        self.sections: dict[str, dict[str, Any]] = {}
        for section in SECTIONS:
            value = document.get(section)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise SystemMapError(f"{section!r} must be a mapping")
            self.sections[section] = copy.deepcopy(dict(value))

    def lookup(self, path: str) -> object | None:
        """The JSON value served at ``path``, or None for 404."""
        raw = urlsplit(path).path
        if not raw.startswith("/"):
            return None
        segments = [unquote(s) for s in raw[1:].split("/")]
        if any(not s for s in segments):
            return None
        if len(segments) == 1:
            (name,) = segments
            if name in self.sections:
                return copy.deepcopy(self.sections[name])
            service = self.services.get(name)
            if service is None:
                return None
            return {"in": service["in"], "out": copy.deepcopy(service["out"])}
        if len(segments) == 2:
            name, ref = segments
            service = self.services.get(name)
            if service is None:
                return None
            bucket: str | None = service["buckets"].get(ref)
            return bucket
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ConfigServer


class _Handler(BaseHTTPRequestHandler):
    server_version = "slingshot-sysmap"
    timeout = 10  # a stalled client (or a TLS handshake that never comes) frees its thread

    def _send_json(self, status: HTTPStatus, value: object, allow: bool = False) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", "GET")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        owner = cast(_Server, self.server).owner
        owner.requests_log.append(self.path)
        try:
            value = owner.system.lookup(self.path)
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            # a bad document answers 500 instead of dropping the connection
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
            return
        if value is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"not found: {self.path}"})
        else:
            self._send_json(HTTPStatus.OK, value)

    def _not_allowed(self) -> None:
        self._send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"{self.command} not allowed"},
            allow=True,
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read ``requests_log`` instead of stderr noise."""


class ConfigServer:
    """Serves a :class:`SystemMap` over HTTP, or HTTPS when ``certfile`` is given."""

    def __init__(
        self,
        system: SystemMap,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.system = system
        self.host = host
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.requests_log: list[str] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen (on the same port again after a stop) and serve in a daemon thread."""
        if self._httpd is not None:
            return
        httpd = _Server((self.host, self.port), _Handler)
        httpd.owner = self
        if self.certfile is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.certfile, self.keyfile)
            # Handshake on first read, in the request thread, not in the accept loop.
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"sysmap:{self.port}",
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL; for TLS the name the certificate is issued for."""
        if self.certfile is not None:
            name = "localhost" if self.host in ("127.0.0.1", "localhost", "") else self.host
            return f"https://{name}:{self.port}"
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _san_names(hostname: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the certificate, always covering localhost."""
    dns = ["localhost"]
    ips = ["127.0.0.1"]
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        if hostname not in dns:
            dns.insert(0, hostname)
    else:
        if hostname not in ips:
            ips.insert(0, hostname)
    return dns, ips


def _cert_with_cryptography(cert_path: Path, key_path: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    dns, ips = _san_names(hostname)
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    # Self-signed and its own trust anchor: CA:TRUE (critical) with SKI/AKI so that
    # strict verifiers (Python 3.13's VERIFY_X509_STRICT) accept it too.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert_with_openssl(cert_path: Path, key_path: Path, hostname: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the 'cryptography' package nor the openssl CLI is available")
    dns, ips = _san_names(hostname)
    san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "30", "-keyout", str(key_path), "-out", str(cert_path),
            "-subj", f"/CN={hostname}",
            "-addext", f"subjectAltName={san}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
            "-addext", "extendedKeyUsage=serverAuth",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    key_path.chmod(0o600)


def make_self_signed_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for ``hostname`` + localhost + 127.0.0.1.

    The certificate is its own CA, so clients verify with ``verify=cert``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _cert_with_openssl(cert_path, key_path, hostname)
    else:
        _cert_with_cryptography(cert_path, key_path, hostname)
    return cert_path, key_path
