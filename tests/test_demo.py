"""`make demo` runs in CI: the pipeline demo end to end on the real local stack (twice, to show it
is idempotent and cleans up), the original example through `--original`, and the pipeline
handlers' own unit tests (examples/pipeline/*/test_handler.py), which `make test` runs from here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import sqlalchemy
from test_sysmap import parse_mermaid

from conftest import REPO

DEMO = REPO / "scripts" / "demo.py"


def demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), *args], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


def leftovers(run_id: str, engine: sqlalchemy.Engine) -> tuple[list[str], list[str]]:
    """Queues and databases of one demo run still there."""
    listing = subprocess.run(["rabbitmqctl", "list_queues", "name", "-q"], capture_output=True, text=True, timeout=60, check=True)
    queues = [name for name in listing.stdout.split() if name.startswith(run_id)]
    query = "SELECT datname FROM pg_database WHERE datname = %s"
    with engine.connect() as conn:
        databases = [row[0] for row in conn.exec_driver_sql(query, (run_id.replace("-", "_"),))]
    return queues, databases


def test_demo_runs_the_pipeline_end_to_end(tmp_path: Path, engine: sqlalchemy.Engine) -> None:
    output = tmp_path / "out"
    proc = demo("--output", str(output))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "demo OK" in proc.stdout, out
    assert proc.stdout.count("drained cleanly") >= 8, out  # each worker's log line and the demo's confirmation
    for service in ("ingest", "classify", "positive", "negative"):
        assert f"{service}: exit code 0, drained cleanly" in proc.stdout, out
    assert re.search(r"\[#{30}\] sent 200/200  done 200/200", proc.stdout), out
    assert re.search(r"end-to-end latency \(send -> sink row\): p50 \d+ ms, p95 \d+ ms", proc.stdout), out

    summary = json.loads((output / "summary.json").read_text())
    services = summary["services"]
    assert summary["requests"] == 200
    assert services["ingest"]["processed"] == services["classify"]["processed"] == 200
    positive, negative = services["positive"]["processed"], services["negative"]["processed"]
    assert positive + negative == 200 and positive > 0 and negative > 0
    assert summary["verdicts"] == {"positive": positive, "negative": negative}
    routed = {(r["case"], r["to"]): r["count"] for r in services["classify"]["routed"]}
    assert routed == {(True, "positive"): positive, (False, "negative"): negative}
    assert all(s["dead_lettered"] == 0 for s in services.values())
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] <= summary["latency_ms"]["max"]
    assert re.search(rf"classify\s+200\s+true -> positive: {positive}\s", proc.stdout), out

    _, edges = parse_mermaid((output / "pipeline.mmd").read_text())
    assert edges == {
        ("pipeline.ingest", "", "ingest"),
        ("ingest", "true | pipeline.classify", "classify"),
        ("classify", "true | pipeline.positive", "positive"),
        ("classify", "false | pipeline.negative", "negative"),
    }
    assert ET.parse(output / "pipeline.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"

    run_id = re.search(r"PIPELINE=(demo-[0-9a-f]{8})", proc.stdout)
    assert run_id is not None, out
    assert leftovers(run_id.group(1), engine) == ([], [])

    again = demo("--output", str(output), "--requests", "20")  # same output directory: replaced, not mixed
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((output / "summary.json").read_text())["requests"] == 20


def test_demo_original_runs_the_original_example_unchanged() -> None:
    proc = demo("--original", timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "s3://demo-out/1 = 'Hello world'" in proc.stdout, output
    assert "exited with code 0, drained cleanly" in proc.stdout, output
    assert "demo OK" in proc.stdout, output


def test_the_pipeline_handler_tests_pass() -> None:
    """examples/pipeline/*/test_handler.py are not under tests/: run them here so `make test` does."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "examples" / "pipeline")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = re.search(r"(\d+) passed", proc.stdout)
    assert counts is not None and int(counts.group(1)) >= 10 and " failed" not in proc.stdout, proc.stdout
