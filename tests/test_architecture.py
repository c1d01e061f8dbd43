"""The import rules of docs/architecture.md, checked on the source: a rule nobody checks erodes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import REPO


def project_imports(path: Path) -> set[str]:
    """Every project module a file imports (at any depth, lazily or not)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("monitor", "sensors", "replay")}


def files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def offending(package: str, allowed: tuple[str, ...], *, skip: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for path in files(package):
        relative = path.relative_to(REPO).as_posix()
        if relative in skip:
            continue
        for module in sorted(project_imports(path)):
            if not module.startswith(allowed):
                problems.append(f"{relative} imports {module}")
    return problems


def test_core_imports_nothing_else_of_the_project() -> None:
    assert offending("monitor/core", ("monitor.core",)) == []


def test_sensors_import_only_core_mqtt_and_sensors() -> None:
    assert offending("sensors", ("sensors", "monitor.core", "monitor.mqtt")) == []


def test_the_mqtt_boundary_imports_only_core() -> None:
    assert offending("monitor/mqtt", ("monitor.mqtt", "monitor.core")) == []


def test_the_service_never_imports_replay_except_the_command_line() -> None:
    problems = [p for p in offending("monitor", ("monitor", "sensors"), skip=("monitor/cli.py",))]
    assert problems == []


@pytest.mark.parametrize("stage", ["monitor/assess", "monitor/backends", "monitor/sinks", "monitor/history"])
def test_stages_do_not_import_the_daemon(stage: str) -> None:
    problems = [p for p in offending(stage, ("monitor", "sensors")) if "monitor.daemon" in p]
    assert problems == []


def test_replay_uses_the_pipeline_not_the_daemon() -> None:
    problems = [p for p in offending("replay", ("monitor", "sensors", "replay")) if "monitor.daemon" in p]
    assert problems == []


def test_the_rule_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from monitor.daemon.service import Service\n")
    assert project_imports(bad) == {"monitor.daemon.service"}
