# One-command setup and the project's main jobs. `make demo` and `make test` work on a fresh machine:
# they create .venv/ and install cotscope (editable) with the pins in constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint format bench clean-venv browser

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

# The main job on the shipped default model: which sentences of arith's own trace drive its answer.
demo: setup
	$(BIN)/cotscope importance --model organism:arith --out runs/demo

test: setup lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# A headless browser for the tests that open report.html (they skip, saying why, without one). Installs Debian's
# chromium when none is on PATH; needs root and apt-get (Debian/Ubuntu), and fails with a clear message otherwise.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then echo "browser: found $$(command -v chromium \
	    || command -v chromium-browser || command -v google-chrome)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "browser: no chromium on PATH and cannot install one (needs root and apt-get); install chromium" \
	  "or google-chrome yourself" >&2; exit 1; fi

clean-venv:
	rm -rf $(VENV)
