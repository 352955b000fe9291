# Quick start: `make run` (environment + install + node on the embedded defaults), `make test`.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: run test bench bench-analyze bench-e2e peers lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(VENV)/bin/onconode serve

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/ingest.py

bench-analyze: $(STAMP)
	$(VENV)/bin/python bench/analyze.py

bench-e2e: $(STAMP)
	$(VENV)/bin/python bench/e2e.py

# FHIR peers for the reporting tests (PEERS.md 5, 6): sekmet-fhir in its own venv, @medplum/core via npm.
peers: $(STAMP)
	$(VENV)/bin/python -c "from tests import peers; peers.sekmet(); peers.medplum()"

lint: $(STAMP)
	$(VENV)/bin/pip install -q ruff mypy types-PyYAML
	$(VENV)/bin/ruff check onconode tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
