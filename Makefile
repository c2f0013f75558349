# The README's quick start: `make serve` and `make test` need nothing installed
# beforehand but Python 3.11+; each creates .venv on first use.  `make serve`
# installs only what serving needs (jobmonitor and lxml); `make test` adds the
# test tools.  The venv's own pip (what `python -m venv` bundles) does the
# installing: upgrading it first took longer than the rest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 7400
HTTP_PORT ?= 7401
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check
LINTED := jobmonitor tests benchmarks scripts examples

.PHONY: serve test bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Nothing compiled at install, in the build's own environment either (which
# --no-compile does not reach): Python compiles what it imports, when it does.
# A Python 3.11 venv comes with a setuptools that can build jobmonitor: with it
# (and wheel), pip skips making an isolated build environment, about 5 s of a
# fresh `make serve`; a venv without one (Python 3.12 on) builds the usual way.
$(VENV)/.installed-serve: setup.cfg pyproject.toml | $(BIN)/python
	if $(BIN)/python -c 'import setuptools as s; assert int(s.__version__.split(".")[0]) >= 64' 2>/dev/null; \
	then PIP_COMPILE=false $(PIP) wheel && PIP_COMPILE=false $(PIP) --no-build-isolation -e .; \
	else PIP_COMPILE=false $(PIP) -e .; fi
	touch $@

# (the test tools come with what serving needs: serving installs nothing more)
$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.installed-serve

$(VENV)/.installed-fast: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,fast,bench]'
	touch $@

serve: $(VENV)/.installed-serve
	$(BIN)/jobmonitor serve --host $(HOST) --port $(PORT) --http-port $(HTTP_PORT) --jobs examples/demo_jobs.py

# Lint and import order (ruff, configured in pyproject.toml), types (mypy --strict,
# setup.cfg), then the tests.
test: $(VENV)/.installed-test
	$(BIN)/python -m ruff check $(LINTED)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-fast soak
	bash benchmarks/install_peers.sh
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/cluster.py

# The stalled-reader test at full size: three million lines; and submits while a
# store of 200 000 jobs is listed (docs/security.md).
soak: $(VENV)/.installed-test
	JOBMONITOR_SOAK=1 $(BIN)/python -m pytest -q -s tests/server/test_robustness.py -k stalled_reader
	JOBMONITOR_SOAK=1 $(BIN)/python -m pytest -q -s tests/server/test_list_pages.py -k big_store

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
