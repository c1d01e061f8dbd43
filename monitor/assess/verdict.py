"""The Assessment: the one schema the model must answer with, and its validator."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from monitor.backends import Usage
from monitor.core.errors import JsonInputError, MalformedReplyError
from monitor.core.jsonio import loads_bounded
from monitor.core.text import cut

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
# A reply larger than this is no assessment (a runaway generation); its text is kept, bounded, as malformed.
MAX_REPLY_BYTES = 32 * 1024 * 1024
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset({"a", "an", "the", "of", "to", "and", "or", "in", "on", "with", "risk", "from", "for", "is"})


def _clamp_unit(value: Any) -> Any:
    # The model chooses this number; clamp instead of rejecting a 1.2.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(1.0, max(0.0, float(value)))
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def cut_to(limit: int) -> BeforeValidator:
    """A validator that cuts a string to `limit` characters with a marker (core.text.cut); others pass."""
    # A model's words are cut to their bound, visibly, never rejected for their length: a danger
    # verdict with a 100 KB hazard is still a danger verdict.
    return BeforeValidator(lambda value: cut(value, limit) if isinstance(value, str) else value)


MAX_EVIDENCE = 20
MAX_EVIDENCE_CHARS = 1000


def _evidence(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value  # the list validator names the wrong type
    if len(value) > MAX_EVIDENCE:
        value = [*value[: MAX_EVIDENCE - 1], f"[... {len(value) - MAX_EVIDENCE + 1} more items cut]"]
    return [cut(item, MAX_EVIDENCE_CHARS) if isinstance(item, str) else item for item in value]


# The string fields of a model's answers (every strategy's): bounded, longer text cut with a marker.
HazardText = Annotated[str, cut_to(300), Field(max_length=300)]
ShortText = Annotated[str, cut_to(1000), Field(max_length=1000)]
LongText = Annotated[str, cut_to(2000), Field(max_length=2000)]
SeverityText = Annotated[Severity, BeforeValidator(_lower)]
Evidence = Annotated[list[Annotated[str, Field(max_length=MAX_EVIDENCE_CHARS)]], BeforeValidator(_evidence),
                     Field(max_length=MAX_EVIDENCE)]
Confidence = Annotated[float, BeforeValidator(_clamp_unit), Field(ge=0.0, le=1.0)]


class Assessment(BaseModel):
    """The model's verdict on one window: is the person in or about to enter danger?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    danger: bool = Field(
        description="true when the person, or someone in their care, is in danger now or about to walk into it")
    severity: SeverityText = Field(
        default="info",
        description='"critical" for a risk of serious injury or death soon, "warning" for likely harm, '
                    '"info" for a minor risk or none')
    hazard: HazardText = Field(
        default="", description="a few words naming the risk; empty when there is no danger")
    reason: LongText = Field(
        default="", description="one or two sentences on why it is or is not dangerous, citing what you observed")
    advice: ShortText = Field(
        default="", description="what the person should do or stop doing now, said to them directly; "
                                  "empty when there is no danger")
    evidence: Evidence = Field(
        default_factory=list,
        description="the observations that show the risk, each quoted briefly; an empty list when there is none")
    confidence: Confidence = Field(
        default=0.5, description="how sure you are, a number from 0 to 1")

    @classmethod
    def parse_reply(cls, raw: str, *, cut_off: bool = False) -> Assessment:
        """Validate a model's raw text; anything else than one JSON object is malformed."""
        return parse_reply(cls, raw, what="model", cut_off=cut_off)


Reply = TypeVar("Reply", bound=BaseModel)


def parse_reply(model: type[Reply], raw: str, *, what: str, cut_off: bool = False) -> Reply:
    """Validate a model's raw text as one JSON object of `model`, or raise MalformedReplyError with the text.

    `what` names the answer in messages ("model", "propose", "verify", "judge"). `cut_off`: the
    server stopped at its token limit, which is then named as the likely cause.
    """
    try:
        return _parse_reply(model, raw, what=what)
    except MalformedReplyError as exc:
        if not cut_off:
            raise
        raise MalformedReplyError(f"{exc}; the reply was cut off at the token limit (finish_reason 'length'): "
                                  "raise model.max_tokens or ask for shorter answers", raw) from None


def _parse_reply(model: type[Reply], raw: str, *, what: str) -> Reply:
    text = _strip_code_fence(raw)
    try:
        data = loads_bounded(text, what=f"{what} reply", max_bytes=MAX_REPLY_BYTES)
    except JsonInputError as exc:  # too large, nested too deep, not JSON: named and counted by the reader
        raise MalformedReplyError(f"{what} reply is not JSON: {exc.detail}", raw) from None
    if not isinstance(data, dict):
        raise MalformedReplyError(f"{what} reply is JSON {type(data).__name__}, not an object", raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise MalformedReplyError(f"{what} reply does not match the {model.__name__} schema: {problems}",
                                  raw) from exc


def response_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema a model's answer must follow, generated from the pydantic model that validates it.

    Every field is listed as required: the validator fills defaults for a missing
    field, but a grammar-constrained server should always write all of them. Length
    limits are left out: the validator enforces them, and a server that turns the
    schema into a grammar may unroll them into thousands of rules (llama.cpp's
    server 0.3.36 dies on `maxLength: 2000`).
    """
    schema: dict[str, Any] = _without_keys(model.model_json_schema(mode="serialization"), {"maxLength", "maxItems"})
    schema["required"] = list(schema.get("properties", {}))
    return schema


def _without_keys(node: Any, keys: set[str]) -> Any:
    if isinstance(node, dict):
        return {k: _without_keys(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [_without_keys(v, keys) for v in node]
    return node


def _strip_code_fence(raw: str) -> str:
    # Some servers wrap JSON in ``` fences even in JSON mode.
    text = raw.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


@dataclass(frozen=True, slots=True)
class Verdict:
    """An assessment together with where it came from and what it cost."""

    assessment: Assessment
    model: str
    usage: Usage
    raw: str = ""
    strategy: str = "single"
    samples: tuple[Assessment, ...] = field(default_factory=tuple)
    backend: str = ""  # the configured backend that answered (model.name)
    degraded: str | None = None  # a fallback answered: what it means (docs/failover.md)


def _stem(word: str) -> str:
    # A crude suffix strip is enough for short hazard names ("falling" ~ "fall", "burns" ~ "burn").
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def hazard_key(hazard: str) -> frozenset[str]:
    """Stemmed content words of a hazard name, so small rewordings match."""
    return frozenset(_stem(w) for w in _WORD.findall(hazard.lower()) if w not in _STOP_WORDS)


def same_hazard(a: str, b: str) -> bool:
    key_a, key_b = hazard_key(a), hazard_key(b)
    if not key_a or not key_b:
        return key_a == key_b
    overlap = len(key_a & key_b) / len(key_a | key_b)
    return overlap >= 0.5 or key_a <= key_b or key_b <= key_a
