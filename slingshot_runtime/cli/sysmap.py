"""``slingshot sysmap``: serve, check and draw a YAML system map (docs/system-map.md).

``serve`` is the reference config service (docs/protocol.md) for one file, reloaded when
it changes; ``check`` explains a file with ``FILE:LINE: severity: message`` lines; ``graph``
draws the pipeline with Graphviz when it is installed, as Mermaid text always.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import ssl
import subprocess
import threading
from pathlib import Path
from types import FrameType

import click

from ..errors import ExitCode
from ..logs import configure_logging
from ..sysmap import (
    ConfigServer,
    SystemMap,
    SystemMapError,
    SystemMapWatcher,
    check_system_map,
    load_system_map,
    to_dot,
    to_mermaid,
    topology,
)
from .tools import Failure

log = logging.getLogger("slingshot.sysmap")

#: The last requests a long-running service remembers (``ConfigServer.requests_log``).
KEEP_REQUESTS = 1000
GRAPH_FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid"}


system_argument = click.argument("system_file", metavar="SYSTEM.yaml", envvar="SLINGSHOT_SYSTEM_MAP")


def _load(path: str) -> SystemMap:
    """The map, or one error line: the first problem, and how to see them all."""
    try:
        return load_system_map(path)
    except SystemMapError as exc:
        hint = f" (run: slingshot sysmap check {path})" if len(exc.diagnostics) > 1 else ""
        raise Failure(f"{exc}{hint}", ExitCode.CONFIG) from exc


@click.group()
def sysmap() -> None:
    """The reference config service and its YAML system map (services, queues, routes, buckets,
    and the rabbitmq, object-storage and postgres sections). The file may also come from
    SLINGSHOT_SYSTEM_MAP; ${NAME} and ${NAME:-default} in values come from the environment."""


@sysmap.command(short_help="Serve a system map over HTTP(S) by the config protocol.")
@system_argument
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SLINGSHOT_SYSMAP_HOST", show_envvar=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="SLINGSHOT_SYSMAP_PORT",
              show_envvar=True, help="TCP port; 0 picks a free one (the URL is printed).")
@click.option("--cert", metavar="PEM", envvar="SLINGSHOT_SYSMAP_CERT", show_envvar=True,
              help="Certificate (chain) file: serve HTTPS.")
@click.option("--key", metavar="PEM", envvar="SLINGSHOT_SYSMAP_KEY", show_envvar=True,
              help="Private key of --cert, when it is not in the same file.")
@click.option("--reload-interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              envvar="SLINGSHOT_SYSMAP_RELOAD_INTERVAL", show_envvar=True, help="Seconds between looks at the file for changes.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), default="INFO",
              show_default=True, envvar="SLINGSHOT_LOG_LEVEL", show_envvar=True, help="DEBUG logs every request.")
def serve(system_file: str, host: str, port: int, cert: str | None, key: str | None, reload_interval: float, log_level: str) -> None:
    """Serve SYSTEM.yaml by the config protocol (docs/protocol.md) until SIGTERM or Ctrl-C.

    When the file changes it is reloaded; an edit with errors is logged with its line numbers and
    the last good map stays in service. Prints "serving ... on URL" once it listens.
    """
    configure_logging(log_level, "text")
    if key is not None and cert is None:
        raise Failure("--key needs --cert (the certificate it belongs to)", ExitCode.USAGE)
    for option, path in (("--cert", cert), ("--key", key)):
        if path is not None and not os.path.isfile(path):
            raise Failure(f"{option} {path!r} is not a file", ExitCode.USAGE)
    watcher = SystemMapWatcher(system_file, reload_interval)
    try:
        system = watcher.load()
    except SystemMapError as exc:
        hint = f" (run: slingshot sysmap check {system_file})" if len(exc.diagnostics) > 1 else ""
        raise Failure(f"{exc}{hint}", ExitCode.CONFIG) from exc
    server = ConfigServer(system, host, port, cert, key, keep_requests=KEEP_REQUESTS)
    try:
        server.start()
    except ssl.SSLError as exc:
        server.stop()
        raise Failure(f"cannot serve HTTPS with --cert {cert} / --key {key}: {exc.reason or exc}", ExitCode.USAGE) from exc
    except OSError as exc:
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror or exc}", ExitCode.USAGE) from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    watcher.start(server)
    click.echo(f"slingshot sysmap: serving {system_file} ({len(system.services)} services) on {server.url}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        watcher.stop()
        server.stop()
    log.info("stopped")


@sysmap.command(short_help="Validate a system map and explain it, with line numbers.")
@system_argument
@click.option("--strict", is_flag=True, envvar="SLINGSHOT_SYSMAP_STRICT", show_envvar=True, help="Fail on warnings too.")
def check(system_file: str, strict: bool) -> None:
    """Check SYSTEM.yaml: unknown keys, duplicate keys and cases, cases that differ only in type,
    queues consumed by two services, invalid queue, bucket and pass entry names, unset ${VARS}
    (errors and warnings); entry points, sinks and cycles (notes and warnings).

    One `FILE:LINE: severity: message` line per finding, then a summary. Exit status 1 on errors
    (with --strict on warnings too), 0 otherwise.
    """
    try:
        text = Path(system_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Failure(f"cannot read {system_file}: {reason}", ExitCode.USAGE) from exc
    system, diagnostics = check_system_map(text)
    for diagnostic in diagnostics:
        click.echo(diagnostic.format(system_file))
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = sum(d.severity == "warning" for d in diagnostics)
    counts = f"{errors} error(s), {warnings} warning(s)"
    if system is None:
        click.echo(f"{system_file}: {counts}")
    else:
        topo = topology(system)
        queues = {spec["in"] for spec in system.services.values()} | {edge.queue for edge in topo.edges}
        click.echo(
            f"{system_file}: {counts}; {len(system.services)} services, {len(queues)} queues, "
            f"{len(topo.entries)} entry point(s), {len(topo.sinks) + len(topo.terminal)} sink(s), {len(topo.cycles)} cycle(s)"
        )
    if errors or (strict and warnings):
        raise SystemExit(int(ExitCode.FAILURE))


@sysmap.command(short_help="Draw the pipeline: SVG/PNG with Graphviz, Mermaid always.")
@system_argument
@click.option("-o", "--output", metavar="FILE", envvar="SLINGSHOT_SYSMAP_GRAPH", show_envvar=True,
              help="pipeline.svg, .png, .dot or .mmd (Mermaid); default: Mermaid on stdout.")
@click.option("--dot", "dot_command", default="dot", show_default=True, metavar="COMMAND", envvar="SLINGSHOT_DOT", show_envvar=True,
              help="The Graphviz dot program, for .svg and .png.")
def graph(system_file: str, output: str | None, dot_command: str) -> None:
    """Draw SYSTEM.yaml: services are nodes, queues are edges labelled with their case (in JSON
    spelling: true, 1, "1"); entry and sink queues are queue-shaped nodes and services without
    routes terminal nodes. The format follows the file name."""
    system = _load(system_file)
    if output is None:
        click.echo(to_mermaid(system, os.path.basename(system_file)), nl=False)
        return
    write_graph(system, Path(output), os.path.basename(system_file), dot_command)
    click.echo(f"wrote {output}")


def write_graph(system: SystemMap, output: Path, title: str | None = None, dot_command: str = "dot") -> None:
    """Write the picture in the format ``output``'s suffix names; Failure when that cannot be done."""
    kind = GRAPH_FORMATS.get(output.suffix.lower())
    if kind is None:
        raise Failure(f"cannot tell the format of {str(output)!r}: use .svg, .png, .dot or .mmd", ExitCode.USAGE)
    if kind in ("mermaid", "dot"):
        text = to_mermaid(system, title) if kind == "mermaid" else to_dot(system, title)
        _write(output, text.encode())
        return
    dot = shutil.which(dot_command)
    if dot is None:
        raise Failure(
            f"{output.suffix} needs Graphviz, and {dot_command!r} is not installed (apt-get install graphviz); "
            f"Mermaid needs nothing: -o {output.with_suffix('.mmd')}",
            ExitCode.FAILURE,
        )
    try:
        proc = subprocess.run([dot, f"-T{kind}"], input=to_dot(system, title).encode(), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Failure(f"running {dot} failed: {exc}", ExitCode.FAILURE) from exc
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise Failure(f"{dot} -T{kind} exited with {proc.returncode}: {reason[0] if reason else 'no message'}", ExitCode.FAILURE)
    _write(output, proc.stdout)


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise Failure(f"cannot write {path}: {exc.strerror or exc}", ExitCode.FAILURE) from exc


__all__ = ["sysmap", "write_graph"]
