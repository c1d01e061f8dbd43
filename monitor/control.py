"""Run-time controls per zone (monitoring on/off, sensitivity), set over MQTT or by the service.

Sensitivity in [0, 1] lowers the confidence a verdict needs to warn: at 0.5 (the
default) the configured `alerts.min_confidence` applies; at 1.0 any danger verdict
warns; at 0.0 only verdicts with confidence 1.0 warn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SENSITIVITY_MIN = 0.0
SENSITIVITY_MAX = 1.0
DEFAULT_SENSITIVITY = 0.5


@dataclass
class ZoneControls:
    """Mutable switches the pipeline consults before assessing and before warning."""

    monitoring: dict[str, bool] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    listeners: list[Callable[[str], None]] = field(default_factory=list)

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

    def _changed(self, zone: str) -> None:
        for listener in self.listeners:
            listener(zone)
