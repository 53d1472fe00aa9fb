"""`make demo` runs in CI: the demo script must succeed end to end on the real local stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "scripts" / "demo.py"


def test_demo_runs_the_original_example_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Hello world" in proc.stdout, output
    assert "drained cleanly" in proc.stdout, output
    assert "demo OK" in proc.stdout, output
