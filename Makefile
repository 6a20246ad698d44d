# Patron: `make run` serves the embedded default; `make test` runs the suite on SQLite and PostgreSQL.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PORT ?= 8000

.PHONY: install run test test-sqlite test-postgres services bench check clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,postgres]'
	touch $@

run: install
	$(BIN)/patron demo --port $(PORT)
	$(BIN)/patron serve --host 127.0.0.1 --port $(PORT)

services:
	@bash .ci/services

test: install services
	$(BIN)/patron policy check
	PATRON_TEST_DATABASE=sqlite $(BIN)/python -m pytest -q
	PATRON_TEST_DATABASE=postgres $(BIN)/python -m pytest -q

test-sqlite: install
	PATRON_TEST_DATABASE=sqlite $(BIN)/python -m pytest -q $(ARGS)

test-postgres: install services
	PATRON_TEST_DATABASE=postgres $(BIN)/python -m pytest -q $(ARGS)

check: install
	$(BIN)/patron policy check

clean:
	rm -rf $(VENV) instance .pytest_cache
