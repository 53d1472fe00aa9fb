"""Load the user's ``process`` from a file: ``path.py`` or ``path.py:function``.

Every way this can go wrong gets its own message, because it is the first thing a new
user sees (modelled on functions-framework's loader).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .errors import ExitCode, SlingshotError

DEFAULT_FUNCTION = "process"
ARITY = 4


class HandlerLoadError(SlingshotError):
    """The handler file or function cannot be used."""

    exit_code = ExitCode.HANDLER_LOAD


def parse_target(target: str) -> tuple[str, str]:
    """``"dir/handler.py:fn"`` → ``("dir/handler.py", "fn")``; the function defaults to ``process``."""
    path, sep, function = target.rpartition(":")
    if not sep or not path.endswith(".py"):
        path, function = target, ""
    return path, function or DEFAULT_FUNCTION


def load_handler(target: str) -> Callable[..., Any]:
    path, function = parse_target(target)
    if not os.path.isfile(path):
        raise HandlerLoadError(f"handler file {path!r} does not exist (set SLINGSHOT_HANDLER to PATH.py[:FUNCTION])")
    module_name = "slingshot_handler_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"handler file {path!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the handler can import its sibling modules
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        detail = "".join(traceback.format_exception_only(exc)).rstrip()
        raise HandlerLoadError(f"syntax error in handler file {path!r}:\n{detail}") from exc
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc)).rstrip()
        raise HandlerLoadError(f"importing handler file {path!r} raised {type(exc).__name__}:\n{detail}") from exc
    handler = getattr(module, function, None)
    if handler is None:
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module_name)
        listing = ", ".join(found) if found else "none"
        raise HandlerLoadError(f"handler file {path!r} has no function {function!r} (functions found: {listing})")
    if not callable(handler):
        raise HandlerLoadError(f"{path}:{function} is a {type(handler).__name__}, not a function")
    check_arity(handler, f"{path}:{function}")
    return handler  # type: ignore[no-any-return]


def check_arity(handler: Callable[..., Any], name: str) -> None:
    """``process`` is called with four positional arguments; say so before the first message."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # builtins and some callables hide their signature
    try:
        signature.bind(*range(ARITY))
    except TypeError:
        raise HandlerLoadError(
            f"{name}{signature} cannot be called as process(request, read_file, write_file, connection)"
        ) from None
