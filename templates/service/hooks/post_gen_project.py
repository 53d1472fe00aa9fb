"""Remove bytecode caches from the new project: pip compiles every ``.py`` of the template it
installs with slingshot, and cookiecutter would copy those ``__pycache__`` directories along."""

from __future__ import annotations

import pathlib
import shutil

for cache in sorted(pathlib.Path.cwd().rglob("__pycache__")):
    shutil.rmtree(cache, ignore_errors=True)
