"""Ordered fallbacks against real OpenAI-compatible servers on 127.0.0.1 (docs/failover.md).

The primary fails in every way the scripted server knows; the fallback answers; the
breaker opens, is probed with a real assessment and closes; both failing is an error;
a late primary answer never becomes a second answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from monitor.assess.settings import KeyframeSettings, VerifySettings
from monitor.assess.single import SingleCall
from monitor.assess.strategies import PROPOSE_PROMPT, ProposeVerify
from monitor.backends import ModelRequest, create_backend
from monitor.backends.failover import FRAME_NOT_SEEN, CircuitBreaker, FailoverBackend, text_only
from monitor.backends.settings import BreakerSettings, ModelSettings
from monitor.core.errors import BackendError, ConfigError, TransientBackendError
from monitor.settings import input_path_warnings, load_settings
from monitor.windows import Window
from sensors.types import Frame
from tests.support.openai_server import DANGER, SAFE, Action, ScriptedOpenAIServer, reply

REQUEST = ModelRequest(messages=({"role": "user", "content": "hello"},), json_schema={"type": "object"})
IMAGE_REQUEST = ModelRequest(
    messages=({"role": "user", "content": [
        {"type": "text", "text": "<observations>"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "text", "text": "</observations>"},
    ]},),
    json_schema={"type": "object"},
    text_messages=({"role": "user", "content": "<observations>\n{\"camera\": [\"person on the floor\"]}"},),
)
ATTEMPT_S = 0.6


@pytest.fixture
def fallback_server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(model="local-qwen", default=reply(DANGER)) as server:
        yield server


def chain_settings(primary: ScriptedOpenAIServer, fallback: ScriptedOpenAIServer, **overrides: Any) -> ModelSettings:
    one = {"backend": "openai", "attempt_timeout_s": ATTEMPT_S, "total_timeout_s": 3.0, "max_retries": 1,
           "backoff_base_s": 0.01}
    fields: dict[str, Any] = {
        **one, "name": "cloud", "base_url": primary.base_url, "model": "cloud-vlm", "accepts_images": True,
        "fallbacks": [{**one, "name": "local", "base_url": fallback.base_url, "model": "local-qwen",
                       "accepts_images": False}],
        "breaker": {"failures": 2, "open_s": 0.3, "max_open_s": 2.0},
    }
    fields.update(overrides)
    return ModelSettings.model_validate(fields)


@pytest.fixture
async def chain(openai_server: ScriptedOpenAIServer,
                fallback_server: ScriptedOpenAIServer) -> AsyncIterator[FailoverBackend]:
    backend = create_backend(chain_settings(openai_server, fallback_server))
    assert isinstance(backend, FailoverBackend)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def test_the_primary_answers_while_it_is_up(chain: FailoverBackend, openai_server: ScriptedOpenAIServer,
                                                 fallback_server: ScriptedOpenAIServer) -> None:
    answer = await chain.complete(REQUEST)
    assert (answer.backend, answer.degraded) == ("cloud", None)
    assert (openai_server.calls, fallback_server.calls) == (1, 0)


FAILURES = {
    "http_500": [Action(status=500), Action(status=500)],
    "hang": [Action(delay_s=ATTEMPT_S * 3)],
    "bad_json_body": [Action(body=b"{not json"), Action(body=b"{not json")],
    "reply_not_json": [reply("I think it is fine."), reply("I think it is fine.")],
    "429_beyond_retry_after": [Action(status=429, headers={"Retry-After": "120"})],
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
async def test_every_failure_of_the_primary_goes_to_the_fallback(
        kind: str, chain: FailoverBackend, openai_server: ScriptedOpenAIServer,
        fallback_server: ScriptedOpenAIServer) -> None:
    openai_server.push(*FAILURES[kind])
    started = time.monotonic()
    answer = await chain.complete(REQUEST)
    waited = time.monotonic() - started
    assert answer.backend == "local"
    assert answer.degraded == "assessed by local (fallback)"
    assert json.loads(answer.text) == DANGER
    assert fallback_server.calls == 1
    # Never longer than the primary's attempt timeout plus the fallback's own latency (a loaded machine's margin).
    assert waited < ATTEMPT_S + 1.5
    assert chain.links[0].book.errors, "the primary's failure is counted"


async def test_a_refused_connection_goes_to_the_fallback(chain: FailoverBackend,
                                                         openai_server: ScriptedOpenAIServer) -> None:
    openai_server.stop()  # the cable pulled: nothing listens on the primary's port
    answer = await chain.complete(REQUEST)
    assert answer.backend == "local"
    assert chain.links[0].book.errors == {"transient": 1}


async def test_the_breaker_opens_skips_the_primary_probes_it_and_closes(
        chain: FailoverBackend, openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    openai_server.default = Action(status=500)
    for _ in range(2):
        assert (await chain.complete(REQUEST)).backend == "local"
    primary = chain.links[0].breaker
    assert primary.state == "open"
    calls = openai_server.calls
    assert (await chain.complete(REQUEST)).backend == "local"
    assert openai_server.calls == calls, "an open breaker is not called"
    assert chain.status()["backends"]["cloud"].startswith("open (2 failures in a row")  # type: ignore[index]
    openai_server.default = reply(SAFE)  # the primary recovers
    await _until(lambda: primary.would_allow())
    probe = await chain.complete(REQUEST)  # the probe is a real assessment, and its answer is used
    assert (probe.backend, probe.degraded) == ("cloud", None)
    assert primary.state == "closed"
    assert chain.active == "cloud"
    spent = primary.seconds_in()
    assert spent["open"] > 0 and spent["half_open"] >= 0 and spent["closed"] > 0


async def test_a_failed_probe_reopens_for_longer(chain: FailoverBackend, openai_server: ScriptedOpenAIServer) -> None:
    openai_server.default = Action(status=500)
    for _ in range(2):
        await chain.complete(REQUEST)
    breaker = chain.links[0].breaker
    first = breaker.retry_in_s()
    await _until(lambda: breaker.would_allow())
    assert (await chain.complete(REQUEST)).backend == "local"  # probed, failed, answered by the fallback
    assert breaker.state == "open"
    assert breaker.retry_in_s() > first
    assert breaker.reason is not None and breaker.reason.startswith("the probe failed")


async def test_a_flapping_primary_opens_on_its_failure_rate(
        openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    settings = chain_settings(openai_server, fallback_server,
                              breaker={"failures": 5, "failure_rate": 0.5, "rate_window": 4, "open_s": 30})
    backend = create_backend(settings)
    assert isinstance(backend, FailoverBackend)
    await backend.start()
    try:
        flaps = [Action(status=500), Action(status=500), reply(SAFE)] * 3  # fail (retried, fails), then succeed
        openai_server.push(*flaps)
        answered = [(await backend.complete(REQUEST)).backend for _ in range(5)]
    finally:
        await backend.close()
    assert answered == ["local", "cloud", "local", "cloud", "local"]
    assert backend.links[0].breaker.state == "open", "2 of the last 4 calls failed: flapping opens it"
    reason = backend.links[0].breaker.reason
    assert reason is not None and "of the last 4 calls failed" in reason


async def test_both_failing_is_a_typed_error_naming_both(
        chain: FailoverBackend, openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    openai_server.default = Action(status=500)
    fallback_server.default = Action(status=503)
    with pytest.raises(TransientBackendError) as caught:
        await chain.complete(REQUEST)
    assert "cloud: transient" in str(caught.value) and "local: transient" in str(caught.value)
    for _ in range(2):
        with pytest.raises(BackendError):
            await chain.complete(REQUEST)
    calls = openai_server.calls, fallback_server.calls
    with pytest.raises(TransientBackendError, match="circuit open"):  # both open: fails at once, nothing called
        await chain.complete(REQUEST)
    assert (openai_server.calls, fallback_server.calls) == calls


async def test_a_late_primary_answer_is_not_a_second_answer(
        chain: FailoverBackend, openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    openai_server.push(reply(SAFE, delay_s=ATTEMPT_S * 2))  # answers, but after the failover
    answers = [await chain.complete(REQUEST)]
    await asyncio.sleep(ATTEMPT_S * 2)  # the primary's late answer arrives now, to a cancelled call
    assert [a.backend for a in answers] == ["local"]
    assert json.loads(answers[0].text) == DANGER, "the fallback's verdict stands"
    assert openai_server.calls == 1 and fallback_server.calls == 1


async def test_a_text_only_fallback_gets_the_text_and_pose_facts(
        chain: FailoverBackend, openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    openai_server.default = Action(status=500)
    answer = await chain.complete(IMAGE_REQUEST)
    assert answer.degraded == "assessed by local (fallback): frames not seen"
    sent = json.dumps(fallback_server.requests[0]["messages"])
    assert "image_url" not in sent
    assert "person on the floor" in sent
    assert "image_url" in json.dumps(openai_server.requests[0]["messages"]), "the primary was sent the frames"


async def test_an_image_fallback_gets_the_frames(openai_server: ScriptedOpenAIServer,
                                                 fallback_server: ScriptedOpenAIServer) -> None:
    settings = chain_settings(openai_server, fallback_server)
    settings.fallbacks[0].accepts_images = True
    backend = create_backend(settings)
    await backend.start()
    try:
        openai_server.default = Action(status=500)
        answer = await backend.complete(IMAGE_REQUEST)
    finally:
        await backend.close()
    assert answer.degraded == "assessed by local (fallback)"
    assert "image_url" in json.dumps(fallback_server.requests[0]["messages"])


def test_the_embedded_toy_is_refused_as_a_fallback() -> None:
    primary = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt"}
    with pytest.raises(ValidationError, match=r"embedded plumbing model .*allow_embedded_fallback"):
        ModelSettings.model_validate({**primary, "fallbacks": [{"backend": "embedded"}]})
    allowed = ModelSettings.model_validate({**primary, "allow_embedded_fallback": True,
                                            "fallbacks": [{"backend": "embedded"}]})
    assert allowed.backend_names == ["gpt", "smollm2-135m-instruct"]


def test_fallback_names_are_distinct_and_fallbacks_have_none_of_their_own() -> None:
    one = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    with pytest.raises(ValidationError, match="distinct names"):
        ModelSettings.model_validate({**one, "fallbacks": [one]})
    with pytest.raises(ValidationError, match="fallbacks of its own"):
        ModelSettings.model_validate({**one, "name": "a", "fallbacks": [{**one, "name": "b", "fallbacks": [
            {**one, "name": "c"}]}]})
    with pytest.raises(ValueError, match=r"no model backend named 'x' in \[model\]; known: a, b"):
        ModelSettings.model_validate({**one, "name": "a", "fallbacks": [{**one, "name": "b"}]}).only("x")


def test_the_breaker_counts_time_in_each_state() -> None:
    now = [0.0]
    breaker = CircuitBreaker(BreakerSettings(failures=1, open_s=5, max_open_s=20), clock=lambda: now[0])
    now[0] = 10.0
    breaker.failure("boom")
    assert (breaker.state, breaker.acquire()) == ("open", False)
    now[0] = 15.0
    assert breaker.acquire() and breaker.state == "half_open"
    assert not breaker.acquire(), "one probe at a time"
    now[0] = 16.0
    breaker.success()
    assert breaker.seconds_in() == {"closed": 10.0, "open": 5.0, "half_open": 1.0}


def camera_window() -> Window:
    """A hall camera's window of one frame whose pose pre-filter found a person on the floor."""
    frame = Frame(source="cam", ts=1_800_000_000.0, image=np.full((240, 320, 3), 128, dtype=np.uint8), width=320,
                  height=240, facts=("a person lies on the floor, not moving",))
    return Window(id="hall-1", zone="hall", observations=(frame,), new_count=1, created_at=1_800_000_000.0)


async def _until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_camera_window_reaches_a_text_only_fallback_as_its_pose_facts(
        chain: FailoverBackend, openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    """Through the real assessment: the primary is sent the keyframe, the text-only fallback the frame's pose facts."""
    openai_server.default = Action(status=500)
    verdict = await SingleCall(chain, keyframes=KeyframeSettings()).assess(camera_window())
    assert (verdict.backend, verdict.degraded) == ("local", "assessed by local (fallback): frames not seen")
    assert verdict.assessment.danger
    assert "image_url" in json.dumps(openai_server.requests[0]["messages"])
    sent = json.dumps(fallback_server.requests[0]["messages"])
    assert "image_url" not in sent and "a person lies on the floor, not moving" in sent


def _two_backends(config: Path, primary: str, fallback: str, primary_key: str, fallback_key: str) -> None:
    config.write_text(f'[model]\nbackend = "openai"\nname = "cloud"\nbase_url = "{primary}"\nmax_retries = 0\n'
                      f'{primary_key}\n\n[[model.fallbacks]]\nname = "local"\nbackend = "openai"\n'
                      f'base_url = "{fallback}"\n{fallback_key}\n')


async def test_each_backend_sends_its_own_key_from_its_variable_or_secret_file(
        openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fallback's key need not sit in the config file: MONITOR_MODEL__API_KEY cannot reach into a list."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "local-key").write_text("sk-local-from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("CLOUD_KEY", "sk-cloud-from-env")
    config = tmp_path / "monitor.toml"
    _two_backends(config, openai_server.base_url, fallback_server.base_url,
                  'api_key_env = "CLOUD_KEY"', 'api_key_file = "local-key"')
    settings = load_settings(config)
    openai_server.push(Action(status=500))
    backend = create_backend(settings.model)
    await backend.start()
    try:
        answered = await backend.complete(REQUEST)
    finally:
        await backend.close()
    assert answered.backend == "local"
    assert openai_server.authorizations == ["Bearer sk-cloud-from-env"]
    assert fallback_server.authorizations == ["Bearer sk-local-from-file"]
    assert "sk-" not in repr(settings) + settings.model_dump_json()


@pytest.mark.parametrize(("fallback_key", "files", "said"), [
    ('api_key_env = "LOCAL_KEY"', {}, "model.fallbacks[0].api_key_env: environment variable LOCAL_KEY is not set"),
    ('api_key_file = "missing"', {}, "model.fallbacks[0].api_key_file: CREDS/missing: cannot read: No such file"),
    ('api_key_file = "two"', {"two": "sk-one\nsk-two\n"}, "CREDS/two: more than one line: one key expected"),
    ('api_key_file = "blank"', {"blank": "\n \n"}, "model.fallbacks[0].api_key_file: CREDS/blank: empty"),
    ('api_key_file = "link"', {"link": None}, "model.fallbacks[0].api_key_file: CREDS/link: cannot read: "),
    ('api_key_file = "big"', {"big": "k" * 20_000}, "CREDS/big: larger than 16384 bytes"),
    ('api_key_env = "LOCAL_KEY"\napi_key_file = "x"', {}, "give the API key one way, not api_key_env and "
                                                           "api_key_file"),
], ids=["unset-variable", "missing-file", "two-lines", "blank-file", "symlink", "huge-file", "two-ways"])
def test_a_key_that_cannot_be_read_is_a_config_error_naming_its_place_never_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback_key: str, files: dict[str, str | None],
        said: str) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "target").write_text("sk-secret-target\n")
    for name, text in files.items():
        if text is None:
            (creds / name).symlink_to(creds / "target")
        else:
            (creds / name).write_text(text)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.delenv("LOCAL_KEY", raising=False)
    config = tmp_path / "monitor.toml"
    _two_backends(config, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "", fallback_key)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert said.replace("CREDS", str(creds)) in str(caught.value)
    assert "sk-" not in str(caught.value)


def test_a_rotated_key_file_makes_a_reload_replace_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload replaces the model backend when `[model]` differs (monitor/daemon/reload.py): a key read anew
    from the same file must count as a difference, and the same key must not."""
    (tmp_path / "local-key").write_text("sk-first")
    monkeypatch.setenv("MONITOR_SECRETS_DIR", str(tmp_path))
    config = tmp_path / "monitor.toml"
    _two_backends(config, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "", 'api_key_file = "local-key"')
    first, again = load_settings(config), load_settings(config)
    assert first.model == again.model
    (tmp_path / "local-key").write_text("sk-rotated")
    rotated = load_settings(config)
    assert rotated.model != first.model
    assert rotated.model.chain[1].api_key_value == "sk-rotated"


def test_commands_that_call_no_model_or_one_read_only_the_keys_they_need(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`monitor ack`, `history` and `feedback` read the zones and the state dir; a replay calls one backend: a
    key they do not use, missing from an operator's shell, must not stop them (found in review)."""
    from replay.cli import _one_backend

    monkeypatch.setenv("CLOUD_KEY", "sk-cloud")
    monkeypatch.delenv("LOCAL_KEY", raising=False)
    config = tmp_path / "monitor.toml"
    _two_backends(config, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", 'api_key_env = "CLOUD_KEY"',
                  'api_key_env = "LOCAL_KEY"')
    with pytest.raises(ConfigError, match="LOCAL_KEY"):
        load_settings(config)  # the daemon needs every backend's key
    settings = load_settings(config, secrets=False)
    assert _one_backend(settings, None).model.api_key_value == "sk-cloud"
    with pytest.raises(ConfigError, match=r"model backend 'local': api_key_env: environment variable LOCAL_KEY"):
        _one_backend(settings, "local")
    ack = subprocess.run([sys.executable, "-m", "monitor", "ack", "--zone", "nowhere", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={k: v for k, v in os.environ.items() if k != "LOCAL_KEY"})
    assert "is not a zone of this configuration" in ack.stderr and "LOCAL_KEY" not in ack.stderr


def test_a_key_variable_named_like_a_setting_is_not_called_misspelled(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.settings import config_warnings

    monkeypatch.setenv("MONITOR_FALLBACK_KEY", "sk-local")
    config = tmp_path / "monitor.toml"
    _two_backends(config, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "", 'api_key_env = "MONITOR_FALLBACK_KEY"')
    settings = load_settings(config)
    assert not [w for w in config_warnings(settings, {"MONITOR_FALLBACK_KEY": "x"}) if "MONITOR_FALLBACK_KEY" in w]
    assert [w for w in config_warnings(settings, {"MONITOR_FALLBAK_KEY": "x"}) if "MONITOR_FALLBAK_KEY" in w]


def test_a_check_of_the_file_alone_does_not_need_the_keys_of_this_machine(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    _two_backends(config, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "", 'api_key_env = "UNSET_KEY_VAR"')
    env = {k: v for k, v in os.environ.items() if k != "UNSET_KEY_VAR"}
    alone = subprocess.run([sys.executable, "-m", "monitor", "check-config", "--config-only", str(config)],
                           capture_output=True, text=True, timeout=60, env=env, check=False)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    here = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert here.returncode != 0
    assert "model.fallbacks[0].api_key_env: environment variable UNSET_KEY_VAR is not set" in here.stdout + here.stderr


def test_a_fallbacks_relative_paths_are_read_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "cloud.json").write_text("[]")
    config = tmp_path / "monitor.toml"
    config.write_text('[model]\nbackend = "scripted"\nscript = "cloud.json"\nname = "cloud"\n\n'
                      '[[model.fallbacks]]\nname = "local"\nbackend = "scripted"\nscript = "local.json"\n')
    settings = load_settings(config)
    assert settings.model.fallbacks[0].script == tmp_path / "local.json"
    assert any(p.startswith("model.fallbacks[0].script: ") for p in input_path_warnings(settings))


async def test_an_allowed_embedded_fallback_says_it_is_no_judge(openai_server: ScriptedOpenAIServer,
                                                                tmp_path: Path) -> None:
    """With the documented override, the degraded reason says the toy is answering (a scripted stand-in here)."""
    settings = ModelSettings.model_validate({
        "backend": "openai", "base_url": openai_server.base_url, "model": "cloud", "attempt_timeout_s": 1,
        "total_timeout_s": 2, "max_retries": 0, "allow_embedded_fallback": True,
        "fallbacks": [{"backend": "embedded", "name": "toy"}]})
    script = tmp_path / "toy.json"
    script.write_text(json.dumps({"default": SAFE}))
    stand_in = settings.fallbacks[0].model_copy(update={"backend": "scripted", "script": script})
    backend = FailoverBackend.from_settings(settings, lambda part: create_backend(
        stand_in if part.display_name == "toy" else part))
    backend.links[1].settings = settings.chain[1]  # what it was configured as: embedded
    await backend.start()
    try:
        openai_server.default = Action(status=500)
        answer = await backend.complete(REQUEST)
    finally:
        await backend.close()
    assert answer.degraded == "assessed by toy (fallback): the embedded plumbing model, not a judge of danger"


def test_a_closed_breaker_starts_its_failure_rate_afresh() -> None:
    """The failures that opened it do not count again: one failure right after recovery does not reopen it."""
    now = [0.0]
    breaker = CircuitBreaker(BreakerSettings(failures=3, failure_rate=0.5, rate_window=4, open_s=1),
                             clock=lambda: now[0])
    for _ in range(3):
        breaker.failure("boom")
    assert breaker.state == "open"
    now[0] = 2.0
    assert breaker.acquire()
    breaker.success()
    breaker.failure("one blip")
    assert breaker.state == "closed"


async def test_a_propose_verify_window_reaches_a_text_only_fallback_as_its_pose_facts(
        chain: FailoverBackend, openai_server: ScriptedOpenAIServer, fallback_server: ScriptedOpenAIServer) -> None:
    """The verify strategy builds its own requests: both steps reach the text-only fallback as text and facts."""
    def answer(body: dict[str, Any]) -> Action:
        system = str(body["messages"][0]["content"])
        if system.startswith(PROPOSE_PROMPT[:40]):
            return reply({"candidates": [{"hazard": "fall", "behaviour": "lies on the floor"}]})
        return reply({"supported": True, "severity": "critical", "reason": "not moving", "confidence": 0.9})

    fallback_server.responder, fallback_server.default = answer, None  # type: ignore[assignment]
    openai_server.default = Action(status=500)
    verdict = await ProposeVerify(chain, VerifySettings(), keyframes=KeyframeSettings()).assess(camera_window())
    assert verdict.assessment.danger and verdict.degraded == "assessed by local (fallback): frames not seen"
    for request in fallback_server.requests:  # the propose call and the verify call
        sent = json.dumps(request["messages"])
        assert "image_url" not in sent and "a person lies on the floor, not moving" in sent


def test_messages_without_a_text_version_lose_their_images_and_say_the_frame_was_not_seen() -> None:
    label = json.dumps({"time": "+1.0s", "source": "cam", "frame": "image follows"})
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AA"}}
    messages = ({"role": "user", "content": [{"type": "text", "text": label}, image]},)
    (user,) = text_only(messages)
    assert user["content"] == json.dumps({"time": "+1.0s", "source": "cam", "frame": FRAME_NOT_SEEN})
