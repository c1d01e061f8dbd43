"""Learning from the home: the recorded history of assessed windows, feedback on alerts, and the notes
the model may get from that feedback.

`settings` (`[history]`), `record` (the versioned on-disk record of one window), `files`
(day files, frames, retention, purge), `recorder` (the pipeline observer that writes
them; it also writes `service.audit_log`), `feedback` (labels, the MQTT message, the
SQLite store), `desk` (the daemon's side of feedback: MQTT and Home Assistant), `context`
(which notes a window gets), `times` (the time and duration syntax of the commands).
The format and the walk-through are in docs/history.md.
"""
