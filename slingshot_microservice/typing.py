"""``slingshot_microservice.typing`` of the original API."""

from __future__ import annotations

from slingshot_runtime.typing import CaseVariable, ProcessFn, ReadFileFn, WriteFileFn

__all__ = ["CaseVariable", "ProcessFn", "ReadFileFn", "WriteFileFn"]
