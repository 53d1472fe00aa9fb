"""``python -m slingshot_runtime [HANDLER]``: the same as ``slingshot run``."""

from __future__ import annotations

from .cli.run import run

if __name__ == "__main__":
    run(prog_name="python -m slingshot_runtime")
