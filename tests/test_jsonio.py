"""The one bounded JSON reader (issue 20, section 2): size and depth are bounded before anything recurses."""

from __future__ import annotations

import json
import random

import pytest

from monitor.core import jsonio
from monitor.core.errors import JsonInputError
from monitor.core.jsonio import check_bounds, loads_bounded, rejection_counts

NESTED = "[" * 3000 + "]" * 3000  # 6 KB; json.loads raises RecursionError on it


def test_json_loads_itself_dies_on_the_nesting_the_reader_refuses() -> None:
    with pytest.raises(RecursionError):
        json.loads("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("document", [NESTED, '{"a":' * 3000 + "1" + "}" * 3000, "[" * 65 + "]" * 65,
                                      '[{"a": [' * 30 + "]}]" * 30])
def test_too_deep_is_a_named_counted_rejection(document: str) -> None:
    before = jsonio.rejections[("test input", "too_deep")]
    with pytest.raises(JsonInputError) as caught:
        loads_bounded(document, what="test input", max_bytes=1 << 20)
    assert caught.value.reason == "too_deep"
    assert str(caught.value) == "test input: nested more than 64 levels deep"
    assert isinstance(caught.value, ValueError)  # a caller's "invalid input" branch takes it
    assert jsonio.rejections[("test input", "too_deep")] == before + 1
    assert rejection_counts()["test input:too_deep"] == before + 1


def test_exactly_the_limit_is_read() -> None:
    assert loads_bounded("[" * 64 + "]" * 64, what="t", max_bytes=1000) == _nest(64)
    assert loads_bounded("[" * 3 + "]" * 3, what="t", max_bytes=1000, max_depth=3) == _nest(3)
    with pytest.raises(JsonInputError):
        loads_bounded("[" * 4 + "]" * 4, what="t", max_bytes=1000, max_depth=3)


def _nest(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("text", ['"' + "[" * 5000 + '"', '{"k": "' + "{" * 5000 + '"}',
                                  '["\\"' + "[" * 500 + '", "\\\\", "]]]]' + "{" * 200 + '"]'])
def test_brackets_inside_strings_and_escaped_quotes_do_not_count(text: str) -> None:
    assert loads_bounded(text, what="t", max_bytes=1 << 20) == json.loads(text)


def test_an_escaped_quote_does_not_end_a_string_and_hide_real_nesting() -> None:
    text = '["a\\"b", ' + "[" * 100 + "]" * 100 + "]"
    with pytest.raises(JsonInputError, match="nested more than 64"):
        loads_bounded(text, what="t", max_bytes=1 << 20)


def test_size_is_checked_before_anything_else() -> None:
    with pytest.raises(JsonInputError) as caught:
        loads_bounded(b"[" + b"1," * 600 + b"1]", what="mqtt ack message", max_bytes=1000)
    assert caught.value.reason == "too_large"
    assert str(caught.value) == "mqtt ack message: 1203 bytes, more than 1000"
    with pytest.raises(JsonInputError, match="larger than 10 bytes"):
        loads_bounded('"ééééééé"', what="t", max_bytes=10)  # 9 characters, 16 bytes


def test_not_json_and_not_text_are_invalid() -> None:
    for data in (b"{", b"\xff\xfe\xfa", "[1,]", '"unterminated [[[', "", "NaN x"):
        with pytest.raises(JsonInputError) as caught:
            loads_bounded(data, what="t", max_bytes=1000)
        assert caught.value.reason == "invalid"


def test_bytes_in_any_json_encoding_are_read_like_json_loads() -> None:
    document = {"zone": "küche", "n": [1, 2.5, None, True]}
    for encoding in ("utf-8", "utf-16", "utf-32"):
        data = json.dumps(document, ensure_ascii=False).encode(encoding)
        assert loads_bounded(data, what="t", max_bytes=1000) == document


def test_check_bounds_returns_the_text_for_another_parser() -> None:
    assert check_bounds(b'{"a": 1}', what="t", max_bytes=100) == '{"a": 1}'
    with pytest.raises(JsonInputError):
        check_bounds(NESTED, what="t", max_bytes=1 << 20)


def _random_value(rng: random.Random, level: int) -> object:
    roll = rng.random()
    if level > 80 or roll < 0.3:
        return rng.choice(["x[{", 'a\\"[', "\\\\", "]]}", '\\\\"{', 1, None])
    if roll < 0.65:
        return [_random_value(rng, level + 1) for _ in range(rng.randint(0, 3))]
    keys = [rng.choice(["k[", 'q"{', "z\\\\"]) + str(i) for i in range(rng.randint(0, 3))]
    return {key: _random_value(rng, level + 1) for key in keys}


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def test_the_depth_found_is_the_real_depth_whatever_the_strings_hold() -> None:
    """Random documents whose keys and strings hold brackets, quotes and backslashes: each is refused exactly
    when it nests deeper than the limit."""
    rng = random.Random(20)
    for _ in range(300):
        value = _random_value(rng, 0)
        text, real = json.dumps(value), _depth(value)
        assert loads_bounded(text, what="t", max_bytes=1 << 20, max_depth=max(real, 1)) == value
        if real > 1:
            with pytest.raises(JsonInputError):
                check_bounds(text, what="t", max_bytes=1 << 20, max_depth=real - 1)
