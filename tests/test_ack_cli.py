"""`monitor ack`: the request files in the state dir, the daemon's end of them, and the command's answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.alerts import AlertEvent, AlertManager, AlertSettings
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.cli import main
from monitor.escalation.engine import AckRequest, Escalator
from monitor.escalation.loop import Escalation
from monitor.escalation.settings import EscalationSettings
from monitor.escalation.spool import SPOOL_DIR, AckSpool, AckSpoolError, request_ack
from monitor.windows import Window
from tests.support.sources import entry


def open_alert(alerts: AlertManager, zone: str = "kitchen") -> AlertEvent:
    assessment = Assessment.model_validate({"danger": True, "severity": "critical", "hazard": "hot oil fire",
                                            "reason": "r", "advice": "Turn off the burner.", "confidence": 0.9})
    window = Window(id="w", zone=zone, observations=(entry("x", source=zone),), new_count=1, created_at=0.0)
    event = alerts.decide(window, Verdict(assessment=assessment, model="m", usage=Usage()))
    assert event is not None
    return event


class RunningLoop:
    """The daemon's end: an Escalation stepping every 50 ms, collecting the events it would publish."""

    def __init__(self, state_dir: Path) -> None:
        self.alerts = AlertManager(AlertSettings())
        self.escalation = Escalation(Escalator(EscalationSettings(), alerts=self.alerts), state_dir=state_dir)
        self.escalation.open()
        self.events: list[AlertEvent] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningLoop:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            self.events += await self.escalation.step()
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_cli_acknowledgement_reaches_the_running_loop_and_gets_its_answer(tmp_path: Path) -> None:
    """The request file is applied by the daemon's loop, which answers; the ack event names who acknowledged."""
    async with RunningLoop(tmp_path) as loop:
        alert = open_alert(loop.alerts).alert
        answer = await asyncio.to_thread(request_ack, tmp_path, alert_id=alert.id, zone=None, by="cli:sam")
        assert answer["status"] == "acknowledged" and answer["alert_ids"] == [alert.id]
        again = await asyncio.to_thread(request_ack, tmp_path, alert_id=None, zone="kitchen", by="cli:sam")
        assert again["status"] == "already_acknowledged"
        missing = await asyncio.to_thread(request_ack, tmp_path, alert_id=None, zone="garage", by="cli:sam")
        assert missing["status"] == "not_found" and "garage" in missing["detail"]
    assert [(e.type, e.alert.acknowledged_by) for e in loop.events] == [("ack", "cli:sam")]
    assert loop.escalation.escalator.counters["acknowledged:cli"] == 1
    assert list((tmp_path / SPOOL_DIR).iterdir()) == []  # requests and replies cleaned up


async def test_the_command_line_prints_the_answer_and_exits_by_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`monitor ack --zone Z --state-dir D`: exit 0 when acknowledged, 1 when nothing matched."""
    async with RunningLoop(tmp_path) as loop:
        open_alert(loop.alerts, "garage")
        code = await asyncio.to_thread(main, ["ack", "--zone", "garage", "--state-dir", str(tmp_path), "--by", "ann"])
        assert code == 0
        said = [line for line in capsys.readouterr().out.splitlines() if "[info" not in line]  # the daemon's log
        assert len(said) == 1 and said[0].startswith("Acknowledged 1 alert in zone garage: ")
        code = await asyncio.to_thread(main, ["ack", "0123456789abcdef", "--state-dir", str(tmp_path)])
        said = "\n" + capsys.readouterr().out
        assert code == 1 and "\nNothing acknowledged: no open alert 0123456789abcdef.\n" in said
    assert loop.events[0].alert.acknowledged_by == "ann"


def test_without_a_running_monitor_the_command_says_where_it_looked(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """No spool folder: exit 1 naming the folder and service.state_dir; nothing named: exit 2."""
    assert main(["ack", "--zone", "kitchen", "--state-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert str(tmp_path / SPOOL_DIR) in error and "service.state_dir" in error
    assert main(["ack", "--state-dir", str(tmp_path)]) == 2
    (tmp_path / SPOOL_DIR).mkdir()
    with pytest.raises(AckSpoolError, match=r"did not answer within 0\.2 s"):
        request_ack(tmp_path, alert_id="a1", zone=None, by="x", timeout_s=0.2)
    assert list((tmp_path / SPOOL_DIR).iterdir()) == []  # a request nobody took is withdrawn


async def test_a_malformed_request_file_is_answered_as_invalid(tmp_path: Path) -> None:
    """Whatever lands in the folder, the daemon answers and removes it; it never stops the loop."""
    async with RunningLoop(tmp_path) as loop:
        folder = tmp_path / SPOOL_DIR
        (folder / "bad.json").write_text("[1, 2]")
        (folder / "empty.json").write_text(json.dumps({"by": "x"}))
        for name in ("bad", "empty"):
            reply = folder / f"{name}.reply"
            for _ in range(100):
                if reply.exists():
                    break
                await asyncio.sleep(0.05)
            assert json.loads(reply.read_text())["status"] == "invalid"
        assert not list(folder.glob("*.json"))
        assert loop.events == []


class BrokenSpool(AckSpool):
    """A state directory the daemon can no longer read (owner changed under it, disk gone)."""

    def take(self) -> list[AckRequest]:
        raise PermissionError(13, "Permission denied", str(self.path))


async def test_a_broken_spool_folder_never_stops_the_alert_lifecycle(tmp_path: Path) -> None:
    """step() runs in the pipeline's expiry task: an OSError there would tear the pipeline down. It is logged
    once, MQTT acknowledgements still work, and escalations are still decided."""
    alerts = AlertManager(AlertSettings())
    escalation = Escalation(Escalator(EscalationSettings(), alerts=alerts), state_dir=tmp_path)
    escalation.spool = BrokenSpool(tmp_path)
    alert = open_alert(alerts).alert
    escalation.request(AckRequest(alert.id, None, "carer", "mqtt"))
    with capture_logs() as logs:
        events = await escalation.step()
        await escalation.step()
    assert [e.type for e in events] == ["ack"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "monitor ack requests cannot be read or answered"]


def test_a_zone_the_configuration_does_not_have_is_refused_with_its_zones(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`monitor ack --zone attic` said only `not_found`: a typo must name the zones there are."""
    config = tmp_path / "monitor.toml"
    config.write_text(f'''
[service]
state_dir = "{tmp_path / 'state'}"
[model]
backend = "scripted"
script = "{tmp_path / 'script.json'}"
[[sources]]
id = "k"
kind = "stdin"
zone = "kitchen"
''')
    assert main(["ack", "--zone", "attic", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "'attic' is not a zone of this configuration" in error and "kitchen" in error
    # Under systemd the state dir is named apart from the config: the config still names the zones.
    assert main(["ack", "--zone", "attic", "--config", str(config), "--state-dir", str(tmp_path / "state")]) == 2
    assert "'attic' is not a zone of this configuration" in capsys.readouterr().err


def test_a_malformed_alert_id_is_refused_before_the_monitor_is_asked(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`monitor ack not-an-id` said only that no such alert is open: a slip is named as one (the MQTT ack
    topic refuses the same payload)."""
    (tmp_path / SPOOL_DIR).mkdir()
    assert main(["ack", "not-an-id", "--state-dir", str(tmp_path)]) == 2
    assert "'not-an-id' is not an alert id (16 hex digits" in capsys.readouterr().err
    assert list((tmp_path / SPOOL_DIR).iterdir()) == []
