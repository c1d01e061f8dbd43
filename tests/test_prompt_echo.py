"""Prompts small local models follow: no placeholder prose to copy, and a copied template is malformed.

Until issue 15 the system prompt showed the answer as a JSON template whose values were
placeholder prose ("short name of the risk, empty if none"), and the embedded model copied
it into 4 of the 5 warnings of `make demo`. These tests pin the new shape of the prompts
and the validation that turns a copied template into a counted malformed reply.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.prompt import EXAMPLE_ANSWER, SYSTEM_PROMPT, echoed_field, template_texts
from monitor.assess.single import SingleCall
from monitor.assess.strategies import PROPOSE_PROMPT, VERIFY_PROMPT, Candidate, VerifyAnswer
from monitor.assess.verdict import Assessment
from monitor.backends.openai_compat import OpenAICompatBackend
from monitor.backends.settings import ModelSettings
from monitor.pipeline import Pipeline
from monitor.stats import Stats
from monitor.windows import Window, WindowSettings
from replay.streams import TrialRecorder
from tests.support.openai_server import DANGER, ScriptedOpenAIServer, reply
from tests.support.sources import ListSource, entry

OLD_TEMPLATE_REPLY = {
    "danger": True, "severity": "warning", "hazard": "short name of the risk",
    "reason": "why this is dangerous, citing the observations",
    "advice": "what the person should do or stop doing now", "evidence": ["the observations that show it"],
    "confidence": 0.5,
}


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object written on a line of its own in a prompt."""
    found = []
    for line in text.splitlines():
        if line.strip().startswith("{"):
            found.append(json.loads(line))
    return found


def test_the_assessment_prompt_shows_one_real_example_and_no_template_prose() -> None:
    objects = json_objects(SYSTEM_PROMPT)
    assert len(objects) == 1, "exactly one JSON object: the example answer"
    example = Assessment.model_validate(objects[0])
    assert example == EXAMPLE_ANSWER
    assert "short name of the risk" not in SYSTEM_PROMPT and "0.0-1.0" not in SYSTEM_PROMPT
    assert "true|false" not in SYSTEM_PROMPT


def test_the_field_guide_is_generated_from_the_validator() -> None:
    for name, info in Assessment.model_fields.items():
        assert f'- "{name}": {info.description}' in SYSTEM_PROMPT
    for name, info in VerifyAnswer.model_fields.items():
        assert f'- "{name}": {info.description}' in VERIFY_PROMPT
    for name, info in Candidate.model_fields.items():
        assert f'- "{name}": {info.description}' in PROPOSE_PROMPT


@pytest.mark.parametrize("prompt", [PROPOSE_PROMPT, VERIFY_PROMPT])
def test_strategy_prompts_carry_no_json_template(prompt: str) -> None:
    assert json_objects(prompt) == []
    assert not re.search(r'[{\[]\s*"\w+"\s*:', prompt), "no JSON template at all"


@pytest.mark.parametrize(
    ("fields", "echoed"),
    [
        ({"hazard": "short name of the risk, empty if none"}, "hazard"),
        ({"hazard": "Short name of the risk"}, "hazard"),
        ({"reason": "Why this is dangerous, citing the observations."}, "reason"),
        ({"advice": "what the person should do or stop doing now, said to them directly"}, "advice"),
        ({"hazard": EXAMPLE_ANSWER.hazard}, "hazard"),
        ({"advice": EXAMPLE_ANSWER.advice.replace("now", "right now")}, "advice"),
        ({"hazard": "hot oil left on a high flame", "reason": "The pan smokes and nobody is in the kitchen.",
          "advice": "Turn the burner off before answering the door."}, None),
        ({"hazard": "fire", "reason": "", "advice": ""}, None),
        ({"hazard": "", "reason": "It is not dangerous.", "advice": ""}, None),
        ({"hazard": "short name of risk"}, "hazard"),
        ({"hazard": "short name of the risk: information about an emergency request to stop"}, "hazard"),
        ({"reason": "Why this is dangerous and how to stop it."}, None),
        ({"advice": "Step back from the hob and turn the gas off before you answer the door."}, None),
    ],
)
def test_echo_detection(fields: dict[str, str], echoed: str | None) -> None:
    assessment = Assessment(danger=True, **fields)  # type: ignore[arg-type]
    assert echoed_field(assessment) == echoed


def test_template_texts_cover_descriptions_example_and_the_old_placeholders() -> None:
    texts = template_texts()
    assert EXAMPLE_ANSWER.reason in texts
    assert Assessment.model_fields["hazard"].description in texts
    assert "short name of the risk, empty if none" in texts


async def test_a_copied_template_is_a_counted_malformed_reply_not_a_warning(
        openai_server: ScriptedOpenAIServer) -> None:
    """Through a real HTTP server and the real pipeline: the echo is counted, the real warning goes out."""
    openai_server.push(reply(OLD_TEMPLATE_REPLY), reply(EXAMPLE_ANSWER.model_dump()), reply(DANGER))
    backend = OpenAICompatBackend(ModelSettings(backend="openai", base_url=openai_server.base_url, max_retries=0))
    stats, recorder = Stats(), TrialRecorder()
    emitted = {"n": 0}

    async def one_at_a_time() -> None:
        await recorder.wait_settled(emitted["n"])
        emitted["n"] += 1

    source = ListSource("kitchen", [entry("a"), entry("b"), entry("c")], gate=one_at_a_time)
    pipeline = Pipeline(sources=[(source, "kitchen")], assessor=SingleCall(backend), sinks=[],
                        windows=WindowSettings(min_interval_s=0.0), alerts=AlertManager(AlertSettings()),
                        observers=[stats, recorder], exit_when_sources_end=True)
    await backend.start()
    try:
        await pipeline.run()
    finally:
        await backend.close()
    assert stats.model_errors == {"malformed": 2}
    assert [e.alert.hazard for e in recorder.events] == ["hot oil fire"]
    errors = [s.error for s in recorder.settled if s.error is not None]
    assert "copies the prompt's field descriptions or example" in str(errors[0])
    assert json.loads(errors[0].raw)["hazard"] == "short name of the risk"  # type: ignore[union-attr]


async def test_the_first_screen_says_once_that_the_embedded_model_is_plumbing(make_settings: Any) -> None:
    import io

    from monitor.daemon.wiring import EMBEDDED_NOTICE, build_sink, sink_specs
    from monitor.sinks.local import StdoutSink

    embedded = sink_specs(make_settings())["stdout"]
    real = sink_specs(make_settings(model={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}))["stdout"]
    assert embedded.notice == EMBEDDED_NOTICE and real.notice is None
    sink = build_sink(embedded, controls=None, stats=dict, open_alerts=[])  # type: ignore[arg-type]
    assert isinstance(sink, StdoutSink)
    sink.stream = out = io.StringIO()
    await sink.start()
    await sink.close()
    assert out.getvalue() == EMBEDDED_NOTICE + "\n"
    assert "Point it at a real model" in EMBEDDED_NOTICE


def test_a_server_that_enforces_the_schema_gets_no_example_to_copy() -> None:
    """With the answer's schema enforced (llama.cpp's grammar) a tiny model copied the example into most
    answers; the prompt then describes the fields only. Without it, the example shows the shape."""
    from monitor.assess.prompt import SCHEMA_SYSTEM_PROMPT

    assert json_objects(SCHEMA_SYSTEM_PROMPT) == []
    assert EXAMPLE_ANSWER.hazard not in SCHEMA_SYSTEM_PROMPT
    assert SCHEMA_SYSTEM_PROMPT in SYSTEM_PROMPT  # the same words, minus the example

    class Backend:
        name, model, accepts_images, base_url = "fake", "fake", False, None

        def __init__(self, enforces: bool) -> None:
            self.enforces_schema = enforces

    window_ = Window(id="w", zone="kitchen", observations=(entry("stirs the soup"),), new_count=1, created_at=0.0)
    enforced = SingleCall(Backend(True)).request(window_)  # type: ignore[arg-type]
    promised = SingleCall(Backend(False)).request(window_)  # type: ignore[arg-type]
    assert enforced.messages[0]["content"] == SCHEMA_SYSTEM_PROMPT and enforced.json_schema is not None
    assert promised.messages[0]["content"] == SYSTEM_PROMPT


def test_the_words_of_the_severity_scale_are_an_honest_hazard_not_a_copy() -> None:
    """Measured: a reply naming "risk of serious injury or death in a child with a nut allergy" was counted
    as an echo of the severity description; that description is not a template for free text."""
    assessment = Assessment(danger=True, hazard="risk of serious injury or death in a child with a nut allergy")
    assert echoed_field(assessment) is None
