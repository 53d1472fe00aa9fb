"""``python -m slingshot_runtime [HANDLER]``: serve a handler file (default ``$SLINGSHOT_HANDLER``)."""

from __future__ import annotations

import logging
import os
import sys

from .errors import SlingshotError
from .loader import load_handler
from .logs import configure_logging
from .service import Service
from .settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else os.environ.get("SLINGSHOT_HANDLER", "/app/handler.py")
    try:
        settings = Settings.load()
        configure_logging(settings.log_level)
        process = load_handler(target)
    except SlingshotError as exc:
        configure_logging()
        logging.getLogger("slingshot").error("%s", exc)
        return int(exc.exit_code)
    return int(Service(settings, process).serve())


if __name__ == "__main__":
    sys.exit(main())
