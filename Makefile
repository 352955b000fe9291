# Quick start: `make run` (environment + install + node on the embedded defaults), `make test`.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: run test bench bench-analyze lint clean

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

lint: $(STAMP)
	$(VENV)/bin/pip install -q ruff mypy types-PyYAML
	$(VENV)/bin/ruff check onconode tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
