# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 20
PORT ?= 8765

.PHONY: demo test lint bench conformance install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[notebook]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,notebook,bench]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VENV)/bin/realtime-lab demo --duration $(DURATION) --port $(PORT)

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check realtime_lab tests benchmarks
	$(VENV)/bin/mypy realtime_lab
	$(PY) -m pytest -p no:cacheprovider -rs --cov=realtime_lab --cov-report=term:skip-covered \
		--nbval-lax notebooks tests

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check realtime_lab tests benchmarks
	$(VENV)/bin/mypy realtime_lab

bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov

# Autobahn conformance, all of groups 1-10, 12 and 13 (permessage-deflate); `make test`
# runs 1-10 plus 12.x.1-5 and 13.x.1-5. Reports: reports/autobahn/index.html.
conformance: $(VENV)/.installed-test
	RTL_CONFORMANCE=full RTL_CONFORMANCE_DIR=reports/autobahn \
		$(PY) -m pytest -p no:cacheprovider -s tests/conformance
