# Three commands do all the set-up: `make demo`, `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 20
PORT ?= 8765
LAB_PORT ?= 8888

.PHONY: demo lab test lint docs bench conformance install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[notebook]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,notebook,bench]'
	touch $@ $(VENV)/.installed

# The lessons in JupyterLab: the `lab` extra, a kernel named "realtime-lab" registered
# for this user (for Jupyter front ends outside .venv), then JupyterLab on notebooks/.
$(VENV)/.installed-lab: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[lab]'
	$(PY) -m ipykernel install --user --name realtime-lab --display-name "Python (realtime_lab)"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(PUSHER_JS) $(NODE_WS)

demo: $(VENV)/.installed
	$(VENV)/bin/realtime-lab demo --duration $(DURATION) --port $(PORT)

lab: $(VENV)/.installed-lab
	cd notebooks && ../$(VENV)/bin/jupyter lab --port=$(LAB_PORT)

# pusher-js and Laravel Echo for tests/pusher, pinned in its package-lock.json: npm ci
# again only when the lock changed (the tests fail in CI, with this hint, without them).
PUSHER_JS := tests/pusher/js/node_modules/.package-lock.json
$(PUSHER_JS): tests/pusher/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/pusher/js --no-audit --no-fund --silent; \
	else echo "npm not found: tests/pusher needs it (apt-get install nodejs npm)"; fi

# The ws package for the join-storm smoke test's Node.js load client (tests/benchmarks;
# without it the client needs Node 20+'s own WebSocket).
NODE_WS := benchmarks/node/node_modules/.package-lock.json
$(NODE_WS): benchmarks/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix benchmarks/node --no-audit --no-fund --silent; \
	else echo "npm not found: the join-storm smoke test needs node (apt-get install nodejs npm)"; fi

# mypy --strict runs on its own (it is global-only): the core and protocol are the typed
# gate (issue 14); --follow-imports=silent keeps other packages' errors out of it.
test: $(VENV)/.installed-test $(PUSHER_JS) $(NODE_WS)
	$(VENV)/bin/ruff check realtime_lab tests benchmarks tools examples
	$(VENV)/bin/mypy realtime_lab
	$(VENV)/bin/mypy --strict --follow-imports=silent realtime_lab/core realtime_lab/protocol
	$(PY) -m pytest -p no:cacheprovider -rs --cov=realtime_lab --cov-report=term:skip-covered \
		--nbval-lax notebooks examples tests

# The documentation site, both languages, with --strict (a broken link or reference
# fails): site/ (English, from docs/) and site/es/ (Spanish, from docs/es/).
# tests/docs/test_site.py builds the same in `make test`. Browse: open site/index.html
# through a web server, e.g. `.venv/bin/python -m http.server -d site`.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -f mkdocs.yml
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -f mkdocs.es.yml

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check realtime_lab tests benchmarks tools examples
	$(VENV)/bin/mypy realtime_lab
	$(VENV)/bin/mypy --strict --follow-imports=silent realtime_lab/core realtime_lab/protocol

# Issue 7 benchmark (about 35 min on a 2-core machine); BENCH_ARGS="--rounds 5" etc.
# The Node.js ws peer is installed here only (npm ci); without npm it is skipped.
bench: $(VENV)/.installed-test
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix benchmarks/node --no-audit --no-fund --silent \
		|| echo "npm ci failed: the Node.js ws peer will be skipped"; \
	else echo "npm not found: the Node.js ws peer will be skipped (apt-get install nodejs npm)"; fi
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov site .cache

# Autobahn conformance, all of groups 1-10, 12 and 13 (permessage-deflate); `make test`
# runs 1-10 plus 12.x.1-5 and 13.x.1-5. Reports: reports/autobahn/index.html.
conformance: $(VENV)/.installed-test
	RTL_CONFORMANCE=full RTL_CONFORMANCE_DIR=reports/autobahn \
		$(PY) -m pytest -p no:cacheprovider -s tests/conformance
