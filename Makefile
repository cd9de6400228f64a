# One-command setup and the project's main jobs. `make demo` and `make test` work on a fresh machine:
# they create .venv/ and install cotscope (editable) with the pins in constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint format bench clean-venv browser notebooks

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

# The main job on the shipped default model: which sentences of arith's own trace drive its answer.
demo: setup
	$(BIN)/cotscope importance --model organism:arith --out runs/demo

# Execute every case study (full work) and write notebooks/NN_name.ipynb from its jupytext source NN_name.py.
notebooks: setup
	OMP_NUM_THREADS=1 $(BIN)/python notebooks/build.py

test: setup lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Optional: a headless browser for the test that opens report.html (skipped without one). Debian/Ubuntu, as root.
browser:
	command -v chromium || apt-get install -y --no-install-recommends chromium

clean-venv:
	rm -rf $(VENV)
