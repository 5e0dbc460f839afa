"""Package attributes imported on first use (PEP 562), to keep cold starts cheap."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def lazy_attribute(
    package: str, modules: Mapping[str, str], namespace: dict[str, Any], name: str
) -> Any:
    """``name`` from ``package.<modules[name]>``, cached in the package's ``namespace``.

    A package's ``__getattr__`` returns this; unknown names raise ``AttributeError``.
    """
    module = modules.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{module}"), name)
    namespace[name] = value
    return value
