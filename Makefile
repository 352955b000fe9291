# Quick start: `make run` (environment + install + node on the embedded defaults), `make test`.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: run test bench bench-models lint clean train-chest train-brain

# torch first and pinned (the CPU wheel from pip's find-links), so the [train] extra cannot pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test,train]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(VENV)/bin/onconode serve

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/ingest.py

# Full retraining from scratch; each rewrites models/<name>.{onnx,yaml,md} and its plots.
train-chest: $(STAMP)
	$(VENV)/bin/python -u -m training.train chest-ct

train-brain: $(STAMP)
	$(VENV)/bin/python -u -m training.train brain-mri

bench-models: $(STAMP)
	$(VENV)/bin/python bench/model_latency.py

lint: $(STAMP)
	$(VENV)/bin/pip install -q ruff mypy types-PyYAML
	$(VENV)/bin/ruff check onconode training tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
