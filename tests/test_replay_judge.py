"""The judges: the LLM judge against a scripted judge server on 127.0.0.1, and the offline judge."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from replay.cache import ResponseCache
from replay.errors import JudgeError
from replay.judge import (
    JUDGE_PROMPT_VERSION,
    JudgeAnswer,
    OfflineJudge,
    WarningText,
    create_llm_judge,
    parse_judge_reply,
)
from replay.pasbench import Reference
from tests.support.openai_server import ScriptedOpenAIServer, reply

# Written for these tests; not benchmark records.
BATTERY = Reference(knowledge="Do not charge an e-bike battery unattended overnight indoors",
                    behaviour="Leaving the e-bike battery charging in the hallway overnight",
                    reason="A faulty or overcharged lithium battery can overheat and catch fire while everyone sleeps")
LADDER = Reference(knowledge="Do not stand on the top step of a stepladder",
                   behaviour="Standing on the top cap of the stepladder to reach the ceiling",
                   reason="The ladder becomes unstable and the person can fall and be injured")
BATTERY_WARNING = WarningText(
    hazard="Lithium battery fire",
    reason="The e-bike battery has been charging in the hallway all night with nobody awake; an overheating "
           "lithium battery can ignite.",
    advice="Unplug the battery now and only charge it while you are awake, away from exits.")
LADDER_WARNING = WarningText(
    hazard="Fall from ladder",
    reason="You are standing on the very top of the stepladder, where it is unstable; you could lose balance.",
    advice="Step down to a lower step or use a taller ladder.")


def test_judge_answers_are_validated() -> None:
    assert parse_judge_reply('```json\n{"correct": true, "reason": "ok"}\n```') == JudgeAnswer(correct=True,
                                                                                               reason="ok")
    for bad in ('{"correct": "yes", "reason": "x"}', '{"correct": true, "extra": 1}', "[true]", "yes"):
        with pytest.raises(Exception, match="judge reply"):
            parse_judge_reply(bad)
    long = parse_judge_reply('{"correct": true, "reason": "' + "because " * 2000 + '"}')  # cut, not rejected
    assert long.correct and len(long.reason) == 4000 and long.reason.endswith("characters cut]")


async def test_llm_judge_over_a_scripted_judge_server(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(model="judge-model") as server:
        server.push(reply("not json at all"), reply({"correct": True, "reason": "same risk, sound reason"}))
        judge = create_llm_judge(base_url=server.base_url, model="judge-model", api_key="k",
                                 cache=ResponseCache(tmp_path / "judge-cache.jsonl"))
        await judge.start()
        try:
            with pytest.raises(JudgeError, match="judge 'judge-model'"):
                await judge.judge(BATTERY, BATTERY_WARNING)
            first = await judge.judge(BATTERY, BATTERY_WARNING)
            again = await judge.judge(BATTERY, BATTERY_WARNING)
        finally:
            await judge.close()
        assert server.calls == 2  # the malformed answer was not cached; the valid one was
        body = server.requests[-1]
    assert (first.correct, first.judge, first.kind, first.approximate, first.cached) == (
        True, "judge-model", "llm", False, False)
    assert again.cached is True and again.correct is True
    assert judge.info.to_json() == {"kind": "llm", "model": "judge-model", "approximate": False,
                                    "prompt_version": JUDGE_PROMPT_VERSION, "base_url": server.base_url}
    assert body["temperature"] == 0.0 and body["seed"] == 0 and body["response_format"]["type"] == "json_object"
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert "CORRECT only if both hold" in system
    assert BATTERY.knowledge in user and BATTERY.behaviour in user and BATTERY.reason in user
    assert "Hazard: Lithium battery fire" in user


@pytest.mark.slow
async def test_offline_judge_on_a_couple_of_pairs() -> None:
    judge = OfflineJudge()
    started = time.perf_counter()
    await judge.start()
    try:
        right = await judge.judge(BATTERY, BATTERY_WARNING)
        wrong = await judge.judge(BATTERY, LADDER_WARNING)
        vague_warning = WarningText(hazard="General safety", reason="Be careful.", advice="Stay safe.")
        vague = await judge.judge(LADDER, vague_warning)
        also_right = await judge.judge(LADDER, LADDER_WARNING)
    finally:
        await judge.close()
    assert right.correct and also_right.correct
    assert not wrong.correct and not vague.correct
    assert right.approximate and right.kind == "offline" and "approximate" in right.reason
    assert right.scores["warn_similarity"] > wrong.scores["warn_similarity"] + 0.2
    assert judge.info.approximate and judge.info.thresholds
    assert time.perf_counter() - started < 120
