"""Run-time controls per zone (monitoring on/off, sensitivity), set over MQTT or by the service.

Sensitivity in [0, 1] lowers the confidence a verdict needs to warn: at 0.5 (the
default) the configured `alerts.min_confidence` applies; at 1.0 any danger verdict
warns; at 0.0 only verdicts with confidence 1.0 warn.

With a state file (the daemon's `<state_dir>/controls.json`) every change is
written durably and the controls come back after a restart: a person who
switched a zone off, or moved its slider, must not find it silently reset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from monitor.core.statefile import JsonStateFile

log = structlog.get_logger("monitor.control")

SENSITIVITY_MIN = 0.0
SENSITIVITY_MAX = 1.0
DEFAULT_SENSITIVITY = 0.5
CONTROLS_FILE = "controls.json"
_VERSION = 1


@dataclass
class ZoneControls:
    """Mutable switches the pipeline consults before assessing and before warning."""

    monitoring: dict[str, bool] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    listeners: list[Callable[[str], None]] = field(default_factory=list)
    store: JsonStateFile | None = None

    @classmethod
    def persistent(cls, state_dir: Path) -> ZoneControls:
        """Controls kept in `<state_dir>/controls.json`: restored now, saved on every change."""
        store = JsonStateFile(state_dir / CONTROLS_FILE, what="controls file")
        controls = cls(store=store)
        controls._restore(store.load())
        return controls

    def is_monitoring(self, zone: str) -> bool:
        return self.monitoring.get(zone, True)

    def set_monitoring(self, zone: str, enabled: bool) -> None:
        self.monitoring[zone] = enabled
        self._changed(zone)

    def get_sensitivity(self, zone: str) -> float:
        return self.sensitivity.get(zone, DEFAULT_SENSITIVITY)

    def set_sensitivity(self, zone: str, value: float) -> None:
        if not SENSITIVITY_MIN <= value <= SENSITIVITY_MAX:
            raise ValueError(f"zone '{zone}': sensitivity {value} outside [{SENSITIVITY_MIN}, {SENSITIVITY_MAX}]")
        self.sensitivity[zone] = value
        self._changed(zone)

    def min_confidence(self, zone: str, configured: float) -> float:
        """The confidence a verdict in `zone` needs, given the configured floor and the sensitivity."""
        s = self.get_sensitivity(zone)
        if s >= DEFAULT_SENSITIVITY:
            # Interpolate from the configured floor (s=0.5) down to 0 (s=1).
            return configured * (SENSITIVITY_MAX - s) / (SENSITIVITY_MAX - DEFAULT_SENSITIVITY)
        # Interpolate from the configured floor (s=0.5) up to 1 (s=0).
        return configured + (1.0 - configured) * (DEFAULT_SENSITIVITY - s) / DEFAULT_SENSITIVITY

    async def flush(self) -> None:
        """Wait until the latest change is on disk (at shutdown)."""
        if self.store is not None:
            await self.store.flush()

    def to_json(self) -> dict[str, Any]:
        zones = sorted({*self.monitoring, *self.sensitivity})
        return {"version": _VERSION, "zones": {
            zone: {"monitoring": self.is_monitoring(zone), "sensitivity": self.get_sensitivity(zone)} for zone in zones
        }}

    def _changed(self, zone: str) -> None:
        if self.store is not None:
            self.store.save(self.to_json())
        for listener in self.listeners:
            listener(zone)

    def _restore(self, document: Any) -> None:
        if document is None:
            return
        try:
            restored = _parse(document)
        except ValueError as exc:
            assert self.store is not None
            self.store.corrupt(str(exc))
            return
        for zone, (monitoring, sensitivity) in restored.items():
            self.monitoring[zone] = monitoring
            self.sensitivity[zone] = sensitivity
        if restored:
            log.info("zone controls restored", path=str(self.store.path) if self.store else None,
                     zones={z: {"monitoring": m, "sensitivity": s} for z, (m, s) in restored.items()})


def _parse(document: Any) -> dict[str, tuple[bool, float]]:
    """The zones of a controls document; ValueError naming the first thing that is wrong."""
    zones = document.get("zones") if isinstance(document, dict) else None
    if not isinstance(zones, dict):
        raise ValueError("expected an object with a 'zones' object")
    restored: dict[str, tuple[bool, float]] = {}
    for zone, values in zones.items():
        monitoring = values.get("monitoring") if isinstance(values, dict) else None
        sensitivity = values.get("sensitivity") if isinstance(values, dict) else None
        if not isinstance(monitoring, bool):
            raise ValueError(f"zone '{zone}': 'monitoring' must be true or false")
        if isinstance(sensitivity, bool) or not isinstance(sensitivity, int | float) or not math.isfinite(sensitivity) \
                or not SENSITIVITY_MIN <= sensitivity <= SENSITIVITY_MAX:
            raise ValueError(f"zone '{zone}': 'sensitivity' must be a number in [{SENSITIVITY_MIN}, {SENSITIVITY_MAX}]")
        restored[str(zone)] = (monitoring, float(sensitivity))
    return restored
