"""Log parsers: PaSBench blocks on the development subset, JSONL, text, detection, robustness."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.errors import LogParseError, MonitorError, SensorError
from monitor.inspect_log import inspect_log
from sensors.logs import (
    FORMATS,
    LogParser,
    PasbenchBlockParser,
    detect_format,
    parse_jsonl_line,
    parse_pasbench_log,
    parse_text_line,
)
from sensors.types import LogEntry
from tests.support.paths import SHARED

EVAL_FILE = SHARED / "pasbench" / "text_eval_hugging.json"
RECORDS: list[dict[str, Any]] = json.loads(EVAL_FILE.read_text(encoding="utf-8"))


def fixed_clock() -> float:
    return 1000.0


# --------------------------------------------------------------------------- the development subset

# The expectation is computed without the parser: cut the log at every behavioural label, and end each
# piece at the next label, time line, entry header, separator or end marker.
BEHAVIOUR_LABEL = re.compile(r"Behaviou?ral Observation", re.IGNORECASE)
BEHAVIOUR_END = re.compile(
    r"(?im)^[\s*\-\[【]*(?:Time|Location|Environmental Observation)\b"
    r"|^[\s*\[【]*\d{1,2}:\d{2}\s*[AP]M"
    r"|^\W*Entry\s+\d+"
    r"|^\s*-{3,}\s*$"
    r"|\[LOG END\]"
)


def normalize(text: str) -> str:
    text = re.sub(r"[*\[\]【】]", "", text)
    return " ".join(text.split()).lstrip(":： ").strip()


def expected_behaviours(log: str) -> list[str]:
    pieces = BEHAVIOUR_LABEL.split(log)[1:]
    return [normalize(BEHAVIOUR_END.split(piece, maxsplit=1)[0]) for piece in pieces]


def test_subset_is_there() -> None:
    assert len(RECORDS) >= 96
    assert all(isinstance(record["input"], str) for record in RECORDS)


@pytest.mark.parametrize("index", range(len(RECORDS)), ids=lambda i: f"record{i}")
def test_pasbench_record_behaviours_match_one_for_one(index: int) -> None:
    log = RECORDS[index]["input"]
    entries = parse_pasbench_log(log, source="pasbench", clock=fixed_clock)
    expected = expected_behaviours(log)
    assert len(expected) >= 2
    assert [normalize(entry.behaviour or "") for entry in entries] == expected


@pytest.mark.parametrize("index", range(len(RECORDS)), ids=lambda i: f"record{i}")
def test_pasbench_record_fields_are_clean(index: int) -> None:
    for entry in parse_pasbench_log(RECORDS[index]["input"], source="pasbench", clock=fixed_clock):
        assert entry.clock is not None and re.fullmatch(r"\d{1,2}:\d{2} [AP]M", entry.clock)
        for value in (entry.location, entry.environment, entry.behaviour):
            assert value and value == value.strip()
            assert "**" not in value and value[0] not in "[]【】:" and value[-1] not in "[]【】:*"
        assert "\n" not in entry.text and f"Behaviour: {entry.behaviour}" in entry.text
        assert entry.raw and entry.clock in entry.raw and "[LOG" not in entry.raw
        assert entry.ts == 1000.0 and entry.source == "pasbench"


def test_pasbench_records_are_detected_as_pasbench() -> None:
    assert {detect_format(record["input"]) for record in RECORDS} == {"pasbench"}


def test_truncated_record_still_yields_its_last_entry() -> None:
    truncated = [record["input"] for record in RECORDS if "[LOG END]" not in record["input"]]
    assert truncated, "the subset has one log cut off before [LOG END]"
    for log in truncated:
        parser = PasbenchBlockParser("t", clock=fixed_clock)
        fed = [entry for line in log.split("\n") for entry in parser.feed(line)]
        last = parser.flush()
        assert len(last) == 1 and last[0].behaviour
        assert len(fed) + 1 == len(expected_behaviours(log))


# --------------------------------------------------------------------------- PaSBench variants

VARIANTS = {
    "bare brackets": """[LOG START]
[Time] 06:45 AM
[Location] Kitchen
[Environmental Observation] Gas stove on.
[Behavioral Observation] She fills the kettle.
[Time] 07:00 AM
[Location] Hall
[Environmental Observation] Wet floor.
[Behavioral Observation] She runs.
[LOG END]""",
    "bold split across lines": """[LOG START]

**06:45 AM**
**
[Location]** Kitchen
**
[Environmental Observation]** Gas stove on.
**
[Behavioral Observation]** She fills the kettle.

**07:00 AM**
**
[Location】** Hall
**
[Environmental Observation】** Wet floor.
**
[Behavioral Observation】** She runs.
[LOG END]""",
    "label on its own line": """[LOG START]
---
**Time**
06:45 AM

**Location**
Kitchen

**Environmental Observation**
Gas stove on.

**Behavioral Observation**
She fills the kettle.

---

**Time**
07:00 AM
**Location**
Hall
**Environmental Observation**
Wet floor.
**Behavioral Observation**
She runs.

---
[LOG END]""",
    "colon forms": """[LOG START]
**Time:** 06:45 AM
**Location:** Kitchen
**Environmental Observation:** Gas stove on.
**Behavioral Observation:** She fills the kettle.

**Time**: 07:00 AM
- **Location**: Hall
- **Environmental Observation**: Wet floor.
- **Behavioral Observation**: She runs.
[LOG END]""",
    "time heading with location": """[LOG START]
**06:45 AM - Kitchen**
Environmental Observation: Gas stove on.
Behavioral Observation: She fills the kettle.

07:00 AM - Hall
Environmental Observation: Wet floor.
Behavioral Observation: She runs.
[LOG END]""",
    "entry headers": """[LOG START]
**Entry 1**
[Time]
06:45 AM
[Location]
Kitchen
[Environmental Observation]
Gas stove on.
[Behavioral Observation]
She fills the kettle.

**Entry 2**
[Time]
07:00 AM
[Location]
Hall
[Environmental Observation]
Wet floor.
[Behavioral Observation]
She runs.
[LOG END]""",
    "full-width brackets and colons": """【LOG START】
【06:45 AM】
【Location】Kitchen
【Environmental Observation】Gas stove on.
【Behavioral Observation】She fills the kettle.
【Time】07:00 AM
Location：Hall
Environmental Observation：Wet floor.
Behavioral Observation：She runs.
【LOG END】""",
    "one line per entry": """[LOG START] [06:45 AM] [Location] Kitchen [Environmental Observation] Gas stove on. \
[Behavioral Observation] She fills the kettle.
[07:00 AM] [Location] Hall [Environmental Observation] Wet floor. [Behavioral Observation] She runs. [LOG END]""",
    "bracketed time, CRLF": "[LOG START]\r\n[06:45 AM]**\r\n[Location] Kitchen\r\n"
    "[Environmental Observation] Gas stove on.\r\n[Behavioral Observation] She fills the kettle.\r\n"
    "[07:00 AM]\r\n[Location] Hall\r\n[Environmental Observation] Wet floor.\r\n"
    "[Behavioral Observation] She runs.\r\n[LOG END]\r\n",
}


@pytest.mark.parametrize("name", VARIANTS)
def test_pasbench_variants_parse_alike(name: str) -> None:
    entries = parse_pasbench_log(VARIANTS[name], source="v", clock=fixed_clock)
    got = [(e.clock, e.location, e.environment, e.behaviour) for e in entries]
    assert got == [
        ("06:45 AM", "Kitchen", "Gas stove on.", "She fills the kettle."),
        ("07:00 AM", "Hall", "Wet floor.", "She runs."),
    ]


def test_entry_is_emitted_when_the_next_block_starts() -> None:
    parser = PasbenchBlockParser("live", clock=fixed_clock)
    lines = VARIANTS["bare brackets"].split("\n")
    emitted_at = {i: parser.feed(line) for i, line in enumerate(lines)}
    done = {i: [e.clock for e in entries] for i, entries in emitted_at.items() if entries}
    # Indexes are 0-based: the first block closes on the second [Time], the second on [LOG END].
    assert done == {5: ["06:45 AM"], 9: ["07:00 AM"]}
    assert parser.flush() == []


def test_flush_emits_the_pending_entry_and_multiline_values_are_kept() -> None:
    parser = PasbenchBlockParser("live", clock=fixed_clock)
    for line in ["06:45 AM", "[Location] Kitchen", "[Behavioral Observation] She fills", "the kettle."]:
        assert parser.feed(line) == []
    [entry] = parser.flush()
    assert entry.behaviour == "She fills\nthe kettle."
    assert entry.text == "06:45 AM | Kitchen | Behaviour: She fills the kettle."
    assert entry.raw == "06:45 AM\n[Location] Kitchen\n[Behavioral Observation] She fills\nthe kettle."
    assert parser.flush() == []


def test_repeated_label_without_time_starts_a_new_entry() -> None:
    log = "[Location] Kitchen\n[Behavioral Observation] Boils water.\n[Location] Hall\n[Behavioral Observation] Runs."
    entries = parse_pasbench_log(log, source="v")
    assert [(e.clock, e.location, e.behaviour) for e in entries] == [
        (None, "Kitchen", "Boils water."),
        (None, "Hall", "Runs."),
    ]


def test_times_without_labels_keep_the_text_as_behaviour() -> None:
    entries = parse_pasbench_log("[LOG START]\n06:45 AM\nShe wakes up.\n07:00 AM\nShe cooks.\n[LOG END]", source="v")
    assert [(e.clock, e.behaviour) for e in entries] == [("06:45 AM", "She wakes up."), ("07:00 AM", "She cooks.")]


@pytest.mark.parametrize(
    ("line", "clock", "location"),
    [
        ("### 18:30 — Garage", "18:30", "Garage"),
        ("**06:45 AM – 07:30 AM** Kitchen", "06:45 AM - 07:30 AM", "Kitchen"),
        ("[2024-05-03 06:45] Kitchen", "2024-05-03 06:45", "Kitchen"),
        ("**Entry 2 (7:05 a.m., Porch)**", "7:05 a.m.", "Porch"),
        ("[Time 06:45 AM]", "06:45 AM", None),
    ],
)
def test_time_line_variants(line: str, clock: str, location: str | None) -> None:
    [entry] = parse_pasbench_log(f"{line}\n[Behavioral Observation] Waits.", source="v")
    assert (entry.clock, entry.location, entry.behaviour) == (clock, location, "Waits.")


def test_unlabelled_text_stands_in_for_a_missing_behaviour() -> None:
    log = "**06:45 AM**\nShe hums.\n[Location] Kitchen\n[Environmental Observation] Hot."
    [entry] = parse_pasbench_log(log, source="v")
    assert (entry.location, entry.environment, entry.behaviour) == ("Kitchen", "Hot.", "She hums.")


def test_prose_mentioning_times_and_labels_is_not_split() -> None:
    log = (
        "[Time] 06:45 AM\n[Behavioral Observation] She looks at the clock.\n"
        "07:30 AM is when the bus leaves, she says.\nTime flies when she reads the location of the bus."
    )
    [entry] = parse_pasbench_log(log, source="v")
    assert entry.behaviour is not None and entry.behaviour.endswith("location of the bus.")


def test_italics_and_inner_brackets_survive_cleaning() -> None:
    log = "[Time] 06:45 AM\n[Behavioral Observation] Reads *The Ordinary World* [sic] quietly."
    [entry] = parse_pasbench_log(log, source="v")
    assert entry.behaviour == "Reads *The Ordinary World* [sic] quietly."


# --------------------------------------------------------------------------- JSONL


def test_jsonl_line_with_every_field() -> None:
    line = json.dumps(
        {
            "ts": 1700000000.5,
            "text": " kettle on ",
            "location": "Kitchen",
            "actor": "Ann",
            "environment": "steam",
            "behavior": "boils water",
        }
    )
    entry = parse_jsonl_line(line, source="j", lineno=3, now=1.0)
    assert entry == LogEntry(
        source="j",
        ts=1700000000.5,
        text="kettle on",
        location="Kitchen",
        environment="steam",
        behaviour="boils water",
        actor="Ann",
        raw=line,
    )


def test_jsonl_without_ts_uses_now() -> None:
    assert parse_jsonl_line('{"text": "x"}', source="j", lineno=1, now=42.0).ts == 42.0


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T06:45:00Z", datetime(2024, 5, 1, 6, 45, tzinfo=UTC).timestamp()),
        ("2024-05-01T08:45:00+02:00", datetime(2024, 5, 1, 6, 45, tzinfo=UTC).timestamp()),
        ("2024-05-01 06:45:00", datetime(2024, 5, 1, 6, 45, tzinfo=UTC).timestamp()),  # naive = UTC
        (1714545900, 1714545900.0),
    ],
)
def test_jsonl_timestamps(ts: object, expected: float) -> None:
    entry = parse_jsonl_line(json.dumps({"ts": ts, "text": "x"}), source="j", lineno=1, now=0.0)
    assert entry.ts == expected


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"ts": 1}', "'text' must be a string"),
        ('{"text": 5}', "'text' must be a string"),
        ('{"text": "  "}', "'text' is empty"),
        ('{"text": "x", "ts": true}', "'ts' must be a number"),
        ('{"text": "x", "ts": NaN}', "'ts' must be finite"),
        ('{"text": "x", "ts": 1e999}', "'ts' must be finite"),
        ('{"text": "x", "ts": "yesterday"}', "not an ISO-8601 time"),
        ('{"text": "x", "location": 3}', "'location' must be a string"),
        ("[" * 100_000, "nested more than 64 levels deep"),
    ],
)
def test_jsonl_bad_lines_name_source_and_line(line: str, problem: str) -> None:
    with pytest.raises(LogParseError, match=re.escape(problem)) as caught:
        parse_jsonl_line(line, source="kitchen.jsonl", lineno=7, now=0.0)
    assert str(caught.value).startswith("kitchen.jsonl:7: ")
    assert isinstance(caught.value, SensorError) and isinstance(caught.value, MonitorError)


def test_jsonl_bad_line_in_the_middle_loses_nothing() -> None:
    parser = LogParser("j", "jsonl", clock=fixed_clock)
    lines = ['{"text": "one"}', "", '{"text": oops}', '{"text": "three", "ts": 5}']
    got: list[LogEntry] = []
    errors: list[str] = []
    for line in lines:
        try:
            got.extend(parser.feed(line))
        except LogParseError as exc:
            errors.append(str(exc))
    assert [e.text for e in got] == ["one", "three"]
    assert [e.ts for e in got] == [1000.0, 5.0]
    assert len(errors) == 1 and errors[0].startswith("j:3: ")
    assert parser.flush() == []


# --------------------------------------------------------------------------- text and detection


def test_text_lines() -> None:
    entry = parse_text_line("  door opened \n", source="t", now=3.0)
    assert entry == LogEntry(source="t", ts=3.0, text="door opened", behaviour="door opened", raw="door opened")
    assert parse_text_line("   ", source="t", now=3.0) is None


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ('\n\n{"text": "x"}\n', "jsonl"),
        ("{broken", "jsonl"),
        ("[LOG START]\n", "pasbench"),
        ("**\n[Time]**\n06:15 AM", "pasbench"),
        ("**06:45 AM**\n", "pasbench"),
        ("**Entry 1**\n[Time]\n", "pasbench"),
        ("06:30 AM - Bedroom\nEnvironmental Observation: dim.", "pasbench"),
        ("07:30 - door opened\n07:31 - door closed", "text"),
        ("the cat sat on the mat\n[LOG START]", "text"),
        ("", "text"),
    ],
)
def test_detect_format(sample: str, expected: str) -> None:
    assert detect_format(sample) == expected


def test_auto_parser_follows_detection() -> None:
    for sample, fmt, texts in [
        ('{"text": "a"}\n{"text": "b"}', "jsonl", ["a", "b"]),
        ("a\n\nb", "text", ["a", "b"]),
        ("07:30 - door opened\n07:31 - door closed", "text", ["07:30 - door opened", "07:31 - door closed"]),
        (VARIANTS["colon forms"], "pasbench", None),
    ]:
        parser = LogParser("auto", clock=fixed_clock)
        entries = [e for line in sample.split("\n") for e in parser.feed(line)] + parser.flush()
        assert parser.format == fmt
        if texts is not None:
            assert [e.text for e in entries] == texts
        else:
            assert [e.behaviour for e in entries] == ["She fills the kettle.", "She runs."]


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        LogParser("x", "yaml")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- never anything but LogParseError

FRAGMENTS = st.sampled_from(
    [
        "[LOG START]",
        "[LOG END]",
        "【",
        "】",
        "**",
        "---",
        "[Time]",
        "Time:",
        "[Location]",
        "Location：",
        "**Environmental Observation:**",
        "[Behavioral Observation】",
        "06:45 AM",
        "12:00",
        " - ",
        "Entry 3",
        "{",
        "}",
        '"text"',
        ":",
        "\n",
        "\r",
        " ",
        "x",
        "\ud800",
        "\x00",
        "[" * 50,
    ]
)
LOGLIKE = st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=40).map("".join)


def feed_everything(fmt: str, text: str) -> None:
    parser = LogParser("fuzz", fmt, clock=fixed_clock)  # type: ignore[arg-type]
    for line in text.split("\n"):
        try:
            for entry in parser.feed(line):
                json.dumps(entry.to_json())
        except LogParseError:
            pass
    parser.flush()


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(), LOGLIKE))
def test_any_text_raises_only_log_parse_errors(text: str) -> None:
    for fmt in FORMATS:
        feed_everything(fmt, text)


@settings(max_examples=150, deadline=None)
@given(data=st.binary())
def test_any_bytes_raise_only_log_parse_errors(data: bytes) -> None:
    for fmt in FORMATS:
        feed_everything(fmt, data.decode("utf-8", errors="replace"))


# --------------------------------------------------------------------------- inspect_log


def test_inspect_log_on_the_eval_file() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert inspect_log(EVAL_FILE, "auto", out, err=err) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["record"] for line in lines} == set(range(len(RECORDS)))
    assert sum(1 for line in lines if line["record"] == 0) == len(expected_behaviours(RECORDS[0]["input"]))
    assert err.getvalue() == ""


def test_inspect_log_reports_bad_lines_and_carries_on(tmp_path: Path) -> None:
    log = tmp_path / "k.jsonl"
    log.write_text('{"text": "one"}\nnot json\n{"text": "three"}\n', encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert inspect_log(log, "auto", out, err=err) == 0
    assert [json.loads(line)["text"] for line in out.getvalue().splitlines()] == ["one", "three"]
    assert f"{log}:2: not valid JSON" in err.getvalue()


def test_inspect_log_failures(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    missing = tmp_path / "nope.log"
    assert inspect_log(missing, "auto", out, err=err) == 1
    assert str(missing) in err.getvalue()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n", encoding="utf-8")
    assert inspect_log(bad, "jsonl", out, err=err) == 1
    assert inspect_log(bad, "csv", out, err=err) == 2
    assert out.getvalue() == ""


def test_inspect_log_plain_pasbench_file(tmp_path: Path) -> None:
    log = tmp_path / "one.log"
    log.write_text(VARIANTS["entry headers"], encoding="utf-8")
    out = io.StringIO()
    assert inspect_log(log, "auto", out, err=io.StringIO()) == 0
    assert [json.loads(line)["location"] for line in out.getvalue().splitlines()] == ["Kitchen", "Hall"]


# --------------------------------------------------------------------------- records as written (issue 11)

# Written for these tests in the release's shapes; not benchmark records.
CONTINUED_LOG = """[LOG START]
[Time]
07:10 AM
[Location]
Workshop
[Environmental Observation]
A bench grinder sits on the bench.
[Behavioral Observation]
Ana switches the grinder on.
[Behavioral Observation Continued]
She leans over the wheel to look closer.
[Time]
07:20 AM
[Location]
Yard
[Behavioral Observation]
She sweeps the yard.
[LOG END]"""


def test_a_continued_behaviour_block_continues_the_entry_it_follows() -> None:
    entries = parse_pasbench_log(CONTINUED_LOG, source="log", clock=fixed_clock)
    assert [e.clock for e in entries] == ["07:10 AM", "07:20 AM"]
    assert entries[0].location == "Workshop"
    assert entries[0].behaviour == "Ana switches the grinder on.\nShe leans over the wheel to look closer."
    assert "[Behavioral Observation Continued]" in entries[0].raw


@pytest.mark.parametrize("label", ["[Behavioral Observation Continued]", "**Behavioral Observation (continued):**",
                                   "【Behavioral Observation Continued】"])
def test_continued_labels_in_other_dialects(label: str) -> None:
    log = f"[08:00 AM] [Location] Garage\n[Behavioral Observation] Tom lifts the car.\n{label} Tom slides under it."
    entries = parse_pasbench_log(log, source="log", clock=fixed_clock)
    assert len(entries) == 1
    assert entries[0].behaviour == "Tom lifts the car.\nTom slides under it."


@pytest.mark.parametrize("line", [
    "**09:00 AM - Construction Site (East Renmin Park)**",
    "[09:00 AM] Construction Site (East Renmin Park)",
    "09:00 AM - Construction Site (East Renmin Park)",
    "Entry 2 (09:00 AM - Construction Site (East Renmin Park))",
    "[Time] 09:00 AM - Construction Site (East Renmin Park)",
])
def test_a_location_keeps_its_closing_parenthesis(line: str) -> None:
    entries = parse_pasbench_log(f"[LOG START]\n{line}\n[Behavioral Observation] He walks in.\n[LOG END]",
                                 source="log", clock=fixed_clock)
    assert [(e.clock, e.location) for e in entries] == [("09:00 AM", "Construction Site (East Renmin Park)")]


def test_a_clock_in_parentheses_still_drops_its_own_parenthesis() -> None:
    entries = parse_pasbench_log("(09:00 AM) Kitchen\n[Behavioral Observation] She cooks.", source="log",
                                 clock=fixed_clock)
    assert [(e.clock, e.location) for e in entries] == [("09:00 AM", "Kitchen")]
