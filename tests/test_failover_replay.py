"""`replay history --backend NAME` and `replay pasbench --backend NAME`: a home measures its fallback on its own
labelled week before it needs it (docs/failover.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from replay.cli import main as replay_main
from tests.support.household import CANDIDATE_CALM_HOB, RECORDED_SCRIPT
from tests.test_replay_history import label_all, replay, scores, state, week  # noqa: F401 (fixtures)


def chain_config(tmp_path: Path) -> Path:
    """A primary (the recorded model's script) and a fallback (a model calm about the hob on low)."""
    for name, script in (("cloud", RECORDED_SCRIPT), ("local", CANDIDATE_CALM_HOB)):
        (tmp_path / f"{name}.json").write_text(json.dumps(script))
    config = tmp_path / "chain.toml"
    config.write_text(f"""
[model]
name = "cloud"
backend = "scripted"
model = "cloud-model"
script = "{tmp_path / 'cloud.json'}"

[[model.fallbacks]]
name = "local"
backend = "scripted"
model = "local-model"
script = "{tmp_path / 'local.json'}"
""")
    return config


def _labels(out: Path) -> dict[str, Any]:
    return dict(scores(out)["labels"])


def test_replay_history_measures_the_named_fallback_alone(state: Path, tmp_path: Path) -> None:  # noqa: F811
    label_all(state)
    config = chain_config(tmp_path)
    assert replay(state, config, tmp_path / "local", "--backend", "local") == 0
    assert replay(state, config, tmp_path / "cloud") == 0  # default: the first backend, [model] itself
    fallback, primary = _labels(tmp_path / "local"), _labels(tmp_path / "cloud")
    # The fallback is calm about the hob on low: the labelled false alarms avoided, every helpful alert kept.
    assert fallback["false_alarm"] != primary["false_alarm"]
    assert fallback["helpful"] == primary["helpful"]
    log = (tmp_path / "local" / "runs.jsonl").read_text()
    assert "local-model" in log and "cloud-model" not in log, "only the fallback was called"


def test_an_unknown_backend_name_is_a_config_error_naming_the_known_ones(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert replay(state, chain_config(tmp_path), tmp_path / "out", "--backend", "nope") == 1
    assert "no model backend named 'nope' in [model]; known: cloud, local" in capsys.readouterr().err


def test_replay_pasbench_takes_the_backend_option(pasbench: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = replay_main(["pasbench", "--data", str(pasbench), "--config", str(chain_config(tmp_path)), "--out",
                        str(out), "--backend", "nope", "--no-progress", "--limit", "1"])
    assert code == 1
