# Patron: `make run` serves the embedded default; `make test` runs the suite on SQLite and PostgreSQL.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run serve worker test test-sqlite test-postgres services browser bench check clean lock

install: $(VENV)/.installed

# uv installs in seconds where pip takes a minute or more; either way the runtime dependencies are the
# pinned set in requirements.lock (the one the container ships), so the tests run what production runs.
UV ?= $(shell command -v uv 2>/dev/null)

$(VENV)/.installed: setup.cfg pyproject.toml requirements.lock
ifneq ($(UV),)
	test -x $(BIN)/python || $(UV) venv -q --seed --python $(PYTHON) $(VENV)
	$(UV) pip install -q --python $(BIN)/python -c requirements.lock -e '.[test,postgres]'
else
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[test,postgres]'
endif
	touch $@

# Re-pin requirements.lock (runtime + postgres + holidays) after changing setup.cfg; needs uv.
lock:
	uv pip compile setup.cfg --extra postgres --extra holidays --python-version 3.11 --no-annotate -q \
	  --custom-compile-command "make lock" -o requirements.lock

# Embedded default: SQLite file under instance/, no Redis (jobs in-process, ticker thread).
run: install
	$(BIN)/patron demo --port $(PORT)
	PATRON_CHAT_DEMO_START=$${PATRON_CHAT_DEMO_START:-true} $(BIN)/patron serve --host $(HOST) --port $(PORT)

serve: install
	$(BIN)/patron serve --host $(HOST) --port $(PORT)

# Production shape: PATRON_DATABASE_URL=postgresql://... PATRON_REDIS_URL=redis://... make worker
worker: install
	$(BIN)/patron worker

services:
	@bash .ci/services

# Debian's chromium for tests/browser (installed when missing; Playwright never downloads a browser)
browser:
	@bash .ci/browser

# Both backends, real PostgreSQL and Redis (started if down); PARALLEL=0 runs them one after the other.
test: install services browser
	$(BIN)/patron policy check
	PYTHON=$(BIN)/python .ci/test $(ARGS)

test-sqlite: install browser
	PATRON_TEST_DATABASE=sqlite $(BIN)/python -m pytest -q $(ARGS)

test-postgres: install services browser
	PATRON_TEST_DATABASE=postgres $(BIN)/python -m pytest -q $(ARGS)

check: install
	$(BIN)/patron policy check

bench: install services
	@for f in bench/*/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
