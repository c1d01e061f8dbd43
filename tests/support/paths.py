"""Where the tests find the project and the shared material beside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
# The development subset of the PaSBench release, in the release's own layout.
PASBENCH = SHARED / "pasbench"
