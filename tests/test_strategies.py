"""Each strategy's decision rule, pinned on scripted replies."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.assess.settings import AssessmentSettings, TemporalSettings, VerifySettings, VoteSettings
from monitor.assess.single import SingleCall
from monitor.assess.strategies import (
    Candidate,
    Candidates,
    ProposeVerify,
    Temporal,
    VerifyAnswer,
    Vote,
    build_assessor,
    verify_decision,
    vote_decision,
)
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import ModelReply, ModelRequest, Usage
from monitor.core.errors import MalformedReplyError
from monitor.windows import Window
from tests.support.sources import entry


class QueueBackend:
    """Answers from per-tag queues of replies; records requests. (A unit-test double of our own boundary.)"""

    name = "queue"
    model = "queue-model"
    accepts_images = False
    enforces_schema = False

    def __init__(self, **replies: list[Any]) -> None:
        self.replies = {tag: deque(json.dumps(r) if not isinstance(r, str) else r for r in rs)
                        for tag, rs in replies.items()}
        self.requests: list[ModelRequest] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        text = self.replies[request.tag].popleft()
        return ModelReply(text=text, model=self.model, usage=Usage(prompt_tokens=100, completion_tokens=10))


WINDOW = Window(id="w1", zone="kitchen", observations=(entry("climbs onto a wobbly chair to reach a shelf"),),
                new_count=1, created_at=0.0)


def danger(hazard: str = "fall from chair", confidence: float = 0.8, severity: str = "warning") -> dict[str, Any]:
    return {"danger": True, "severity": severity, "hazard": hazard, "reason": f"because {hazard}",
            "advice": "get down", "evidence": [], "confidence": confidence}


SAFE = {"danger": False, "severity": "info", "hazard": "", "reason": "fine", "advice": "", "evidence": [],
        "confidence": 0.7}


def verdict(a: dict[str, Any]) -> Verdict:
    return Verdict(assessment=Assessment.model_validate(a), model="m", usage=Usage(prompt_tokens=10))


# -- vote -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("positives", "m", "warns"), [(2, 2, True), (1, 2, False), (3, 3, True), (0, 1, False)])
def test_vote_warns_when_at_least_m_of_k_agree(positives: int, m: int, warns: bool) -> None:
    samples = [verdict(danger()) for _ in range(positives)] + [verdict(SAFE) for _ in range(3 - positives)]
    result = vote_decision(samples, k=3, m=m)
    assert result.assessment.danger is warns
    assert result.usage.calls == 3 and result.usage.prompt_tokens == 30
    assert result.strategy == f"vote({m}/3)"


def test_vote_merges_the_largest_hazard_cluster_and_keeps_every_reason() -> None:
    samples = [verdict(danger("fall from chair", 0.6)), verdict(danger("Falling from the chair", 0.9, "critical")),
               verdict(danger("cut by knife", 0.95)), verdict(SAFE)]
    result = vote_decision(samples, k=4, m=2)
    assert result.assessment.danger
    assert result.assessment.hazard == "Falling from the chair"
    assert result.assessment.severity == "critical"
    assert result.assessment.confidence == 0.75
    assert len(result.assessment.evidence) == 3  # one reason per agreeing sample
    assert len(result.samples) == 4


async def test_vote_samples_concurrently_with_distinct_seeds_at_the_vote_temperature() -> None:
    backend = QueueBackend(assess=[danger(), SAFE, danger()])
    vote = Vote(SingleCall(backend), VoteSettings(k=3, m=2, temperature=0.9))
    result = await vote.assess(WINDOW)
    assert result.assessment.danger
    assert sorted(r.seed for r in backend.requests if r.seed is not None) == [0, 1, 2]
    assert {r.temperature for r in backend.requests} == {0.9}


async def test_vote_counts_malformed_samples_as_no_danger_and_fails_when_they_could_decide() -> None:
    backend = QueueBackend(assess=[danger(), "garbage", danger()])
    result = await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)
    assert result.assessment.danger
    backend = QueueBackend(assess=[danger(), "garbage", "more garbage"])
    with pytest.raises(MalformedReplyError):  # two broken samples could have made it 3 of 3: not "safe"
        await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)
    backend = QueueBackend(assess=["x", "y", "z"])
    with pytest.raises(MalformedReplyError):
        await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)


# -- verify ---------------------------------------------------------------------------------------
def test_verify_rejects_an_unsupported_candidate() -> None:
    candidates = [Candidate(hazard="fall from chair"), Candidate(hazard="electric shock")]
    answers = [VerifyAnswer(supported=True, severity="warning", reason="wobbly chair", confidence=0.8),
               VerifyAnswer(supported=False, reason="no electrical device is seen")]
    result = verify_decision(candidates, answers, min_confidence=0.0)
    assert result.danger and result.hazard == "fall from chair"
    none = verify_decision(candidates, [answers[1], answers[1]], min_confidence=0.0)
    assert not none.danger and "none verified" in none.reason


def test_verify_picks_the_most_severe_verified_candidate_and_respects_confidence_floor() -> None:
    candidates = [Candidate(hazard="bruise"), Candidate(hazard="head injury")]
    answers = [VerifyAnswer(supported=True, severity="info", confidence=0.9),
               VerifyAnswer(supported=True, severity="critical", confidence=0.4)]
    assert verify_decision(candidates, answers, min_confidence=0.0).hazard == "head injury"
    assert verify_decision(candidates, answers, min_confidence=0.5).hazard == "bruise"


async def test_propose_then_verify_calls_once_per_distinct_candidate_and_names_it() -> None:
    backend = QueueBackend(
        propose=[{"candidates": [{"hazard": "fall from chair", "behaviour": "climbs a wobbly chair"},
                                 {"hazard": "Falling from the chair"},  # a duplicate: verified once
                                 {"hazard": "shelf collapses"}]}],
        verify=[{"supported": True, "severity": "warning", "reason": "wobbly", "advice": "use a step ladder",
                 "confidence": 0.8},
                {"supported": False, "reason": "nothing says the shelf is weak"}],
    )
    result = await ProposeVerify(backend, VerifySettings(max_candidates=3)).assess(WINDOW)
    assert result.assessment.danger and result.assessment.hazard == "fall from chair"
    assert result.usage.calls == 3  # propose + 2 verifies
    verify_prompts = [r.messages[0]["content"] for r in backend.requests if r.tag == "verify"]
    assert '"fall from chair (from: climbs a wobbly chair)"' in verify_prompts[0]
    assert '"shelf collapses"' in verify_prompts[1]


async def test_propose_with_no_candidates_is_safe_after_one_call() -> None:
    backend = QueueBackend(propose=[{"candidates": []}])
    result = await ProposeVerify(backend, VerifySettings()).assess(WINDOW)
    assert not result.assessment.danger and result.usage.calls == 1


# -- temporal -------------------------------------------------------------------------------------
def test_temporal_single_noisy_positive_does_not_fire_but_repeated_evidence_does() -> None:
    temporal = Temporal(SingleCall(QueueBackend()), TemporalSettings(decay=0.5, threshold=1.0))
    first = temporal.accumulate("z", verdict(danger(confidence=0.6)))
    assert not first.assessment.danger and "0.60 of 1.00" in first.assessment.reason
    second = temporal.accumulate("z", verdict(danger("Fall from the chair", confidence=0.7)))
    assert second.assessment.danger  # 0.6 * 0.5 + 0.7 = 1.0
    assert second.strategy.startswith("temporal(")


def test_temporal_recovers_a_miss_and_decays_away() -> None:
    temporal = Temporal(SingleCall(QueueBackend()), TemporalSettings(decay=0.8, threshold=1.0))
    temporal.accumulate("z", verdict(danger(confidence=0.9)))
    fired = temporal.accumulate("z", verdict(danger(confidence=0.9)))  # 0.72 + 0.9 = 1.62
    assert fired.assessment.danger
    missed = temporal.accumulate("z", verdict(SAFE))  # 1.296: the miss is covered
    assert missed.assessment.danger and missed.assessment.hazard == "fall from chair"
    assert temporal.accumulate("z", verdict(SAFE)).assessment.danger  # 1.04
    assert not temporal.accumulate("z", verdict(SAFE)).assessment.danger  # 0.83: decayed below


def test_temporal_keeps_zones_apart() -> None:
    temporal = Temporal(SingleCall(QueueBackend()), TemporalSettings(decay=1.0, threshold=1.0))
    temporal.accumulate("a", verdict(danger(confidence=0.6)))
    assert not temporal.accumulate("b", verdict(danger(confidence=0.6))).assessment.danger
    assert temporal.accumulate("a", verdict(danger(confidence=0.6))).assessment.danger


async def test_build_assessor_composes_verify_inside_temporal() -> None:
    settings = AssessmentSettings.model_validate({"strategy": "temporal", "temporal": {"inner": "verify"}})
    assessor = build_assessor(QueueBackend(), settings)
    assert assessor.name == "temporal(verify)"
    with pytest.raises(ValueError, match="m=4 must not exceed k=3"):
        VoteSettings(k=3, m=4)


# -- broken replies, every strategy (issue 20, section 6) --------------------------------------------
HUGE = "hot oil on an unattended burner " * 3200  # about 100 KB
ECHO = {"danger": True, "severity": "warning", "hazard": Assessment.model_fields["hazard"].description,
        "reason": Assessment.model_fields["reason"].description, "confidence": 0.9}
# What a broken model or server sends, by name: the reply to an assess, a propose and a verify call.
BROKEN: dict[str, tuple[Any, Any, Any]] = {
    "missing key": ({"severity": "critical", "hazard": "fire"}, {"risks": [{"hazard": "fire"}]},
                    {"severity": "critical", "reason": "fire"}),
    "wrong types": ({"danger": "maybe", "confidence": "high"}, {"candidates": "fire"}, {"supported": "perhaps"}),
    "wrong item types": ({"danger": True, "evidence": {"a": 1}}, {"candidates": [{"hazard": 5}]},
                         {"supported": True, "evidence": 7}),
    "empty object": ({}, {}, {}),
    "array": ([danger()], [{"hazard": "fire"}], [{"supported": True}]),
    "null": ("null", "null", "null"),
    "not json": ("{danger: yes", "{candidates", "{supported"),
    "another schema": ({"candidates": []}, danger(), {"danger": True}),
    "prompt echo": (ECHO, {"candidates": [{"hazard": Candidate.model_fields["hazard"].description}]},
                    {"supported": True, "reason": VerifyAnswer.model_fields["reason"].description,
                     "advice": VerifyAnswer.model_fields["advice"].description}),
}
PROPOSE_ONE = {"candidates": [{"hazard": "fall from chair", "behaviour": "climbs a wobbly chair"}]}
SUPPORTED = {"supported": True, "severity": "warning", "reason": "wobbly", "confidence": 0.9}


def _strategy(name: str, backend: QueueBackend) -> Any:
    if name == "single":
        return SingleCall(backend)
    if name == "vote":
        return Vote(SingleCall(backend), VoteSettings(k=3, m=2))
    if name == "verify":
        return ProposeVerify(backend, VerifySettings())
    return Temporal(SingleCall(backend), TemporalSettings(threshold=0.5))


def _broken_backend(strategy: str, where: str, kind: str) -> QueueBackend:
    reply, propose, verify = BROKEN[kind]
    if strategy == "verify":
        if where == "propose":
            return QueueBackend(propose=[propose])
        return QueueBackend(propose=[PROPOSE_ONE], verify=[verify])
    if strategy == "vote":  # one sample saw the danger, two are broken: with m=2 they decide
        return QueueBackend(assess=[danger(), reply, reply])
    return QueueBackend(assess=[reply])


CASES = [(s, w, k) for s in ("single", "vote", "temporal") for w in ("assess",) for k in BROKEN] + [
    ("verify", w, k) for w in ("propose", "verify") for k in BROKEN]


@pytest.mark.parametrize(("strategy", "where", "kind"), CASES)
async def test_a_broken_reply_is_a_counted_error_never_a_silent_safe(strategy: str, where: str, kind: str) -> None:
    """Missing keys, wrong types, an empty object, an array, null, text, another strategy's schema, the
    prompt copied: every strategy raises a typed error (the pipeline counts it and the zone shows it).
    Before the fix `verify` read `{}` or `{"candidates"}`-less JSON as "no risks", a verify answer it could
    not read as "rejected" (so "none verified", safe), and vote decided "safe" with its deciding samples
    broken."""
    assessor = _strategy(strategy, _broken_backend(strategy, where, kind))
    try:
        result = await assessor.assess(WINDOW)
    except MalformedReplyError:
        return
    pytest.fail(f"{strategy} read a broken reply ({kind}) as a verdict: {result.assessment!r}")


@pytest.mark.parametrize("strategy", ["single", "vote", "verify", "temporal"])
async def test_huge_fields_are_cut_visibly_and_the_danger_is_kept(strategy: str) -> None:
    """A 100 KB hazard, reason, advice and evidence (and 60 evidence items) are cut to their bounds with
    a marker, never rejected: before the fix the danger verdict was discarded as malformed."""
    huge = {"danger": True, "severity": "critical", "hazard": HUGE, "reason": HUGE, "advice": HUGE,
            "evidence": [HUGE] * 60, "confidence": 0.9}
    backend = QueueBackend(
        assess=[huge, huge, huge],
        propose=[{"candidates": [{"hazard": HUGE, "behaviour": HUGE, "why": HUGE}] * 80}],
        verify=[{"supported": True, "severity": "critical", "reason": HUGE, "advice": HUGE,
                 "evidence": [HUGE] * 60, "confidence": 0.9}],
    )
    result = (await _strategy(strategy, backend).assess(WINDOW)).assessment
    assert result.danger and result.severity == "critical"
    assert len(result.hazard) <= 300 and result.hazard.endswith("characters cut]")
    assert result.hazard.startswith("hot oil on an unattended burner")
    assert len(result.reason) <= 2000 and len(result.advice) <= 1000
    assert len(result.evidence) <= 20 and all(len(e) <= 1000 for e in result.evidence)
    if strategy in ("single", "temporal"):
        assert result.evidence[-1] == "[... 41 more items cut]"
        assert result.advice.endswith("characters cut]")


def test_every_bound_of_every_answer_cuts_instead_of_rejecting() -> None:
    """The schemas of the single answer and of verify's two answers: each string field and list cut."""
    assert len(Assessment.model_validate({"danger": True, "hazard": "x" * 301}).hazard) == 300
    candidate = Candidate.model_validate({"hazard": HUGE, "behaviour": HUGE, "why": HUGE})
    assert (len(candidate.hazard), len(candidate.behaviour), len(candidate.why)) == (300, 1000, 1000)
    proposed = Candidates.model_validate({"candidates": [{"hazard": "fire"}] * 80})
    assert len(proposed.candidates) == 50
    answer = VerifyAnswer.model_validate({"supported": True, "reason": HUGE, "advice": HUGE, "severity": "CRITICAL",
                                          "evidence": ["e" * 5000] * 30, "confidence": 7})
    assert (len(answer.reason), len(answer.advice), answer.severity, answer.confidence) == (2000, 1000, "critical", 1.0)
    assert len(answer.evidence) == 20 and len(answer.evidence[0]) == 1000
    # Built by the strategies themselves from long parts, an assessment is cut too, never an internal error.
    many = [Candidate(hazard=f"hazard number {i} " + "x" * 250) for i in range(50)]
    none = verify_decision(many, [VerifyAnswer(supported=False)] * 50, min_confidence=0.0)
    assert len(none.reason) <= 2000 and none.reason.endswith("characters cut]")


async def test_vote_is_safe_only_when_its_failed_samples_could_not_have_made_it_a_warning() -> None:
    backend = QueueBackend(assess=[SAFE, SAFE, "garbage"])
    with capture_logs() as logs:
        result = await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)
    assert not result.assessment.danger  # two read answers say safe: one more danger could not reach m=2
    said = [e for e in logs if e["event"] == "some model calls failed; the decision did not depend on them"]
    assert said and said[0]["kinds"] == ["malformed"] and said[0]["decided"] == "safe"  # said, not silent
    backend = QueueBackend(assess=[SAFE, danger(), "garbage"])
    with pytest.raises(MalformedReplyError):
        await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)


async def test_verify_with_one_unreadable_check_still_warns_on_a_verified_candidate() -> None:
    backend = QueueBackend(propose=[{"candidates": [{"hazard": "fall from chair"}, {"hazard": "burn on stove"}]}],
                           verify=[SUPPORTED, "garbage"])
    result = await ProposeVerify(backend, VerifySettings()).assess(WINDOW)
    assert result.assessment.danger and result.assessment.hazard == "fall from chair"
