"""The escalation docs stay true: the timeline picture is what the engine does, the example config is valid."""

from __future__ import annotations

import importlib.util
import sys

from monitor.settings import load_settings
from tests.support.paths import REPO


def test_the_timeline_picture_is_what_the_engine_does_now() -> None:
    """docs/escalation-timeline.svg is regenerated from a fake-clock run; a changed rule must redraw it."""
    spec = importlib.util.spec_from_file_location("escalation_timeline", REPO / "docs" / "escalation_timeline.py")
    assert spec is not None and spec.loader is not None
    timeline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = timeline  # dataclasses look their module up there
    try:
        spec.loader.exec_module(timeline)
    finally:
        del sys.modules[spec.name]
    events = timeline.simulate()
    assert [(e.type, e.alert.escalation_level) for e in events if e.type != "update"] == [
        ("new", 0), ("escalate", 1), ("escalate", 2), ("ack", 2), ("end", 2)]
    assert timeline.render(events) == (REPO / "docs" / "escalation-timeline.svg").read_text(), \
        "out of date: run .venv/bin/python docs/escalation_timeline.py"


def test_the_example_config_is_valid_and_turns_everything_on() -> None:
    settings = load_settings(REPO / "configs" / "reach.toml")
    assert settings.escalation.enabled and settings.sinks.speaker.enabled
    (kitchen,) = settings.zones
    assert kitchen.quiet_hours == ["22:00-07:00"]
    assert kitchen.escalation is not None and kitchen.escalation.critical is not None
