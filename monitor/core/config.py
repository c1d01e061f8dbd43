"""The base of every configuration section (kept apart so section modules avoid import cycles)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Names a person reads (Home Assistant device names and areas): one line, as long as the hub's device_name.
MAX_NAME_CHARS = 100


def _one_line(value: str) -> str:
    if not all(char.isprintable() for char in value):
        raise ValueError("must be one line of printable characters (no newlines, tabs or control characters)")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


DisplayName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(_one_line)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
