"""What `monitor run` would refuse at start on this machine, checked without creating anything.

`monitor run` asks this first and stops with its lines; `monitor check-config` prints the same
lines and exits 1. One function for both, so the pre-start check of the systemd unit
(`ExecStartPre=monitor check-config`) can never pass a configuration the start then refuses
(a crash loop). Each check is the one the part itself makes when it starts, in its words; the
parts keep their own checks for what changes between the two (a folder removed meanwhile).

Checked as the user running the command: the unit runs both as the service's user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.core.errors import ConfigError
from monitor.daemon.statedir import StateDirError, check_state_dir
from monitor.history.recorder import audit_log_problem
from monitor.settings import Settings
from monitor.sinks.local import jsonl_problem


@dataclass
class StartCheck:
    """The lines a start would stop with (`errors`), and what it would only warn about."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_start(settings: Settings) -> StartCheck:
    """Everything the start refuses: the state dir, the output paths, the speech engine and audio device,
    the model backend's local parts. Lines as `monitor run` prints them (`error: ...`)."""
    found = StartCheck()
    try:
        check_state_dir(settings)
    except StateDirError as exc:
        found.errors.append(f"error: {exc}")
    outputs = [audit_log_problem(settings.service.audit_log)]
    if settings.sinks.jsonl.enabled:
        outputs.append(jsonl_problem(settings.sinks.jsonl.path))
    found.errors += [f"error: {problem}" for problem in outputs if problem is not None]
    _check_speaker(settings, found)
    found.errors += _backend_problems(settings)
    return found


def _check_speaker(settings: Settings, found: StartCheck) -> None:
    speaker = settings.sinks.speaker
    if not speaker.enabled:
        return
    from monitor.sinks.speaker import speaker_problem, speaker_refusal

    problem = speaker_problem(speaker)
    if problem is None:
        return
    if speaker.optional:
        found.warnings.append(f"{problem} (sinks.speaker.optional: the monitor runs without speech)")
    else:
        found.errors.append(f"error: {speaker_refusal(problem)}")


def _backend_problems(settings: Settings) -> list[str]:
    """The backends with local parts: the embedded model's packages, the scripted backend's script."""
    model = settings.model
    if model.backend == "embedded":
        from monitor.backends.embedded import embedded_problem

        problem = embedded_problem(model)
        return [f"error: {problem}"] if problem is not None else []
    if model.backend == "scripted":
        from monitor.backends import create_backend

        try:
            create_backend(model)  # reads and checks the script, as the start does
        except ConfigError as exc:
            return exc.problems
    return []
