# Two entry points for a fresh Debian/Ubuntu box with Python 3.11: `make run` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := libfluidsynth3 fluid-soundfont-gm ffmpeg chromium

.PHONY: run test install system-deps lint clean

run: install
	$(BIN)/python app.py

test: install
	$(BIN)/python -m pytest -q

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

# The stamp is refreshed whenever pyproject.toml changes.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | system-deps
	@command -v $(PY) >/dev/null || { echo "need $(PY) (set PY=python3 if that is 3.10+)"; exit 1; }
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # the CPU wheel; must come before anything that depends on torch
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps basic-pitch  # its declared dependencies pull TensorFlow
	touch $@

lint: install
	$(BIN)/ruff check pianoapp tests bench app.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
