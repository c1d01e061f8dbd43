"""Reaching the person: escalation while a hazard persists, acknowledgement, quiet hours.

- `settings`: `[escalation]` and the per-zone block of `[[zones]]` (escalation overrides, quiet hours).
- `engine`: the pure state machine (`Escalator`), driven by alert events and a clock.
- `contract`: the MQTT side as plain functions (ack topic parsing, escalation payloads, discovery entities).
- `spool`: how `monitor ack` reaches a running daemon (request files in the state dir).
- `loop`: the engine's life in the daemon (`Escalation`): acknowledgements in, escalations out.

This file imports nothing, so `monitor.zones` can use the settings without an import cycle.
"""
