"""The original slingshot-microservice Python API, served by slingshot_runtime."""

from __future__ import annotations

from slingshot_runtime import Microservice

__all__ = ["Microservice"]
