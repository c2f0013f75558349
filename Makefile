# The README's quick start: `make serve` and `make test` need nothing installed
# beforehand but Python 3.11+; each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 7400

.PHONY: serve test bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-fast: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,fast]'
	touch $@

serve: $(VENV)/.installed-test
	$(BIN)/jobmonitor serve --host $(HOST) --port $(PORT) --jobs examples/demo_jobs.py

test: $(VENV)/.installed-test
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-fast soak
	bash benchmarks/install_peers.sh
	$(BIN)/python benchmarks/run.py

# The stalled-reader test at full size: three million lines (docs/security.md).
soak: $(VENV)/.installed-test
	JOBMONITOR_SOAK=1 $(BIN)/python -m pytest -q -s tests/server/test_robustness.py -k stalled_reader

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
