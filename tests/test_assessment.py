"""The Assessment schema is the validator: malformed replies are errors that keep the raw text."""

from __future__ import annotations

import json

import pytest

from monitor.assess.verdict import Assessment
from monitor.core.errors import MalformedReplyError


def test_valid_reply_is_parsed_and_numbers_clamped() -> None:
    raw = json.dumps({"danger": True, "severity": "CRITICAL", "hazard": "fire", "reason": "r", "advice": "a",
                      "evidence": "smoke", "confidence": 1.7})
    assessment = Assessment.parse_reply(raw)
    assert assessment.severity == "critical"
    assert assessment.confidence == 1.0
    assert assessment.evidence == ["smoke"]


def test_code_fenced_json_is_accepted() -> None:
    assert Assessment.parse_reply('```json\n{"danger": false}\n```').danger is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("I think it is fine", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('{"severity": "warning"}', "danger: Field required"),
        ('{"danger": true, "severity": "doom"}', "severity"),
        ('{"danger": true, "mood": "calm"}', "mood: Extra inputs are not permitted"),
        ('{"danger": "maybe"}', "danger"),
    ],
)
def test_malformed_replies_raise_with_raw_text(raw: str, message: str) -> None:
    with pytest.raises(MalformedReplyError, match=message) as caught:
        Assessment.parse_reply(raw)
    assert caught.value.raw == raw
