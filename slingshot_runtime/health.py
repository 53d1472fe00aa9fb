"""The worker's small HTTP server: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``.

Probes call back into the service for their verdict, so the server holds no state of
its own and a verdict is never stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: A probe answers (healthy, reason).
Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(self, port: int, liveness: Probe, readiness: Probe, registry: CollectorRegistry, host: str = "0.0.0.0") -> None:
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/healthz": lambda: _probe(liveness),
            "/livez": lambda: _probe(liveness),
            "/readyz": lambda: _probe(readiness),
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
        }
        routes = self._routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, content_type, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="slingshot-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on port %d (/healthz /readyz /metrics)", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _probe(probe: Probe) -> tuple[int, str, bytes]:
    ok, reason = probe()
    return (200 if ok else 503), "text/plain; charset=utf-8", f"{'ok' if ok else 'unhealthy'}: {reason}\n".encode()
