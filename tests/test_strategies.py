"""Each strategy's decision rule, pinned on scripted replies."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from monitor.assess.settings import AssessmentSettings, TemporalSettings, VerifySettings, VoteSettings
from monitor.assess.single import SingleCall
from monitor.assess.strategies import (
    Candidate,
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


async def test_vote_counts_malformed_samples_as_no_danger_and_fails_only_if_all_fail() -> None:
    backend = QueueBackend(assess=[danger(), "garbage", danger()])
    result = await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)
    assert result.assessment.danger
    backend = QueueBackend(assess=[danger(), "garbage", "more garbage"])
    result = await Vote(SingleCall(backend), VoteSettings(k=3, m=2)).assess(WINDOW)
    assert not result.assessment.danger
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
