"""A stochastic scripted backend for simulating strategies without a real model.

Each scenario (the window's zone; replay uses one zone per sample) gets its own
probability p of a correct warning per call, drawn once from Beta(alpha, beta). The
propose and verify steps get per-scenario reliabilities too, drawn from Betas with the
same concentration (alpha + beta) as p, so they are as unstable across scenarios as the
proactive answer that PaSBench measured, with their own means.
Scenarios whose id starts with `safe` are safe controls: each call raises a false
alarm with probability `false_positive`. The correct hazard of a scenario is the
text `hazard <scenario>`, so a simulated judge can score replies exactly.

Calls answer by request tag:
- `assess`: a correct warning with probability p, else "no danger"; on safe controls
  a spurious warning with probability `false_positive`.
- `propose`: the correct hazard is among the candidates with probability
  1 - (1 - p) * (1 - r), r the scenario's propose reliability (mean `propose_recall`):
  listing every plausible risk surfaces risks that a committed answer missed (PaSBench:
  models know the rules; applying them unprompted is what fails). `distractors`
  spurious candidates come with it.
- `verify`: a true candidate is confirmed with probability v, the scenario's verify
  reliability (mean `verify_true`; PaSBench: 74-93 % of misses are caught once the
  right rule is in front of the model); a spurious one with probability `verify_false`.

The parameters are a model of a model, documented so a reader can disagree with them.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from monitor.backends import ModelReply, ModelRequest, Usage, register_backend
from monitor.backends.settings import ModelSettings
from monitor.core.errors import ConfigError
from monitor.core.jsonio import MAX_FILE_BYTES, check_bounds


class StochasticParameters(BaseModel):
    """The simulated model's behaviour; loaded from the `model.script` JSON file."""

    model_config = ConfigDict(extra="forbid")

    # Beta(0.21, 0.118): mean 0.64 and E[p^16] = 0.45, i.e. PaSBench's Gemini-2.5-pro on text
    # (Accuracy 64 %, Robustness about 45 % over 16 trials).
    alpha: float = Field(default=0.21, gt=0)
    beta: float = Field(default=0.118, gt=0)
    false_positive: float = Field(default=0.03, ge=0, le=1)
    propose_recall: float = Field(default=0.9, gt=0, lt=1)
    distractors: int = Field(default=2, ge=0, le=10)
    verify_true: float = Field(default=0.85, gt=0, lt=1)
    verify_false: float = Field(default=0.05, ge=0, le=1)
    # How much propose/verify reliability varies between scenarios: None = as much as the
    # proactive answer (alpha + beta); larger = more alike across scenarios (less U-shaped).
    step_concentration: float | None = Field(default=None, gt=0)
    seed: int = 0


def correct_hazard(scenario: str) -> str:
    return f"hazard {scenario}"


class StochasticBackend:
    """Answers like a model whose per-scenario reliability is drawn from a distribution."""

    name = "stochastic"

    def __init__(self, settings: ModelSettings, params: StochasticParameters | None = None) -> None:
        self.model = settings.model
        self.label = settings.display_name
        self.accepts_images = True
        self.enforces_schema = False
        self.base_url: str | None = None  # in-process: no endpoint to probe
        self.script_path = settings.script
        self.params = params or StochasticParameters()
        self.rng = random.Random(self.params.seed)
        self.calls = 0
        self._p: dict[str, float] = {}

    async def start(self) -> None:
        if self.script_path is not None and self.script_path.exists():
            self.params = _load(self.script_path)
            self.rng = random.Random(self.params.seed)

    async def close(self) -> None:
        return None

    def reliability(self, scenario: str, step: str = "assess") -> float:
        """A scenario's reliability at a step: drawn once, the same on every run with the same seed."""
        key = f"{step}:{scenario}"
        if key not in self._p:
            digest = hashlib.sha256(f"{self.params.seed}:{key}".encode()).digest()
            concentration = self.params.alpha + self.params.beta
            if step != "assess" and self.params.step_concentration is not None:
                concentration = self.params.step_concentration
            mean = {"propose": self.params.propose_recall, "verify": self.params.verify_true}.get(
                step, self.params.alpha / concentration)
            a, b = mean * concentration, (1 - mean) * concentration
            self._p[key] = random.Random(digest).betavariate(a, b)
        return self._p[key]

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        scenario = str(request.meta.get("zone", "unknown"))
        answer = {"propose": self._propose, "verify": self._verify}.get(request.tag, self._assess)(scenario, request)
        text = json.dumps(answer)
        return ModelReply(text=text, model=self.model, backend=self.label,
                          usage=Usage(prompt_tokens=600, completion_tokens=len(text) // 4))

    def _hit(self, probability: float) -> bool:
        return self.rng.random() < probability

    def _assess(self, scenario: str, _: ModelRequest) -> dict[str, Any]:
        if scenario.startswith("safe"):
            return _danger("spurious worry", 0.6) if self._hit(self.params.false_positive) else _safe()
        return _danger(correct_hazard(scenario), 0.8) if self._hit(self.reliability(scenario)) else _safe()

    def _propose(self, scenario: str, _: ModelRequest) -> dict[str, Any]:
        candidates = [{"hazard": f"distractor {i} {scenario}", "why": "might happen"}
                      for i in range(self.params.distractors)]
        if not scenario.startswith("safe"):
            recall = 1 - (1 - self.reliability(scenario)) * (1 - self.reliability(scenario, "propose"))
            if self._hit(recall):
                candidates.insert(0, {"hazard": correct_hazard(scenario), "why": "the observed behaviour"})
        return {"candidates": candidates}

    def _verify(self, scenario: str, request: ModelRequest) -> dict[str, Any]:
        candidate = str(request.meta.get("candidate", ""))
        is_true = candidate == correct_hazard(scenario)
        supported = self._hit(self.reliability(scenario, "verify") if is_true else self.params.verify_false)
        return {"supported": supported, "severity": "warning", "reason": f"checked {candidate}",
                "advice": "stop", "confidence": 0.8 if supported else 0.3}


def _danger(hazard: str, confidence: float) -> dict[str, Any]:
    return {"danger": True, "severity": "warning", "hazard": hazard, "reason": f"risk: {hazard}",
            "advice": "stop now", "evidence": [], "confidence": confidence}


def _safe() -> dict[str, Any]:
    return {"danger": False, "severity": "info", "hazard": "", "reason": "no risk seen", "advice": "",
            "evidence": [], "confidence": 0.7}


def _load(path: Path) -> StochasticParameters:
    try:
        text = check_bounds(path.read_bytes(), what="stochastic backend parameters", max_bytes=MAX_FILE_BYTES)
        return StochasticParameters.model_validate_json(text)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: stochastic backend parameters: {exc}"]) from None


@register_backend("stochastic")
def _create(settings: ModelSettings) -> StochasticBackend:
    return StochasticBackend(settings)
