"""The README's commands table lists every command `monitor --help` has, and each check-config flag."""

from __future__ import annotations

import argparse
import re

from monitor.cli import _parser
from tests.support.paths import REPO


def _commands(parser: argparse.ArgumentParser, prefix: str = "monitor") -> list[str]:
    """Every leaf command, as `monitor replay tune`."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prefix} {name}") or [f"{prefix} {name}"]
    return found


def test_the_readme_commands_table_lists_every_command() -> None:
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Commands"):text.index("## Configuration")]
    rows = re.findall(r"^\| `([^`]+)`", table, flags=re.M)
    commands = _commands(_parser())
    assert len(commands) >= 10
    missing = [command for command in commands if not any(row.startswith(command) for row in rows)]
    assert missing == []
    assert "--config-only" in table


def test_one_spelling_of_the_state_dir_flag_in_help_and_docs() -> None:
    """`--state-dir` everywhere (`--state` was mixed in): the old spelling still works, unshown."""
    for command in ("feedback", "ack"):
        text = _subparser(command).format_help()
        assert "--state-dir" in text and not re.search(r"--state\b(?!-)", text), command
    purge = _subparser("history")._subparsers._group_actions[0].choices["purge"]  # type: ignore[union-attr]
    assert not re.search(r"--state\b(?!-)", purge.format_help())
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "monitor" / "history" / "cli.py"]:
        assert not re.search(r"--state\b(?!-)", path.read_text()), path


def _subparser(name: str) -> argparse.ArgumentParser:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError(name)
