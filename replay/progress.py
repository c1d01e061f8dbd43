"""The progress bar of a long replay (tqdm, imported only when a bar is shown), or one that shows nothing."""

from __future__ import annotations

from typing import Any


class NoProgress:
    """A progress bar that shows nothing (`--no-progress`, or output that is not a terminal)."""

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


def progress_bar(total: int, *, enabled: bool, desc: str, unit: str, done: int = 0) -> Any:
    """A bar over `total` more items after `done` already done, or a NoProgress when not `enabled`."""
    if not enabled:
        return NoProgress()
    from tqdm import tqdm

    return tqdm(total=total + done, initial=done, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.1)
