"""``dev.py``, the developer entry point at the repository root, loaded as a module."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from . import REPO


def load_dev() -> ModuleType:
    """A fresh module object of ``dev.py`` (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("dev_entry", REPO / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
