"""Fixtures for the pipeline's handler tests: a Harness wired like the real service.

``harness_for("classify")`` loads the ``handler.py`` next to the test file the way the worker
loads it and takes the service's routes and bucket names from ``system.yaml``, so a test fails
when a handler and the system map disagree (a case without a route, for one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slingshot_runtime.loader import load_handler
from slingshot_runtime.sysmap import load_system_map
from slingshot_runtime.testing import Harness

SYSTEM = Path(__file__).resolve().parent / "system.yaml"


@pytest.fixture
def harness_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Harness]]:
    system = load_system_map(SYSTEM, environ={})  # the defaults: no demo variables
    made: list[Harness] = []

    def make(service: str) -> Harness:
        spec = system.services[service]
        harness = Harness(
            load_handler(str(request.path.parent / "handler.py")),
            routes=[(route["case"], route["queues"]) for route in spec["out"]],
            buckets=spec["buckets"],
            database_url=f"sqlite:///{tmp_path / service}.db",
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
