# llm-embed: `make run` sets up and trains the embedded default; `make test` sets up and tests.
PY := .venv/bin/python
CONFIG ?= configs/default.yaml

.PHONY: help setup run grid test test-fast lint format clean
help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.venv/.installed: setup.cfg pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: .venv/.installed  ## create .venv with pinned CPU torch and the packaged assets

run: setup  ## fit the embedded default (CONFIG=... for another config)
	$(PY) -m llm_embed.fit --config $(CONFIG)

# Each task is subsampled to GRID_DOCS documents (seeded) so one model's grid stays well under 30 min.
GRID_DOCS ?= 500
GRID_TASKS ?= BBCNewsHeadlines,WordNetNounGlosses
grid: setup  ## zero-shot grid (poolings x prompts) of both packaged decoders + MiniLM -> docs/results/zero-shot
	$(PY) -m llm_embed.evaluate --model smollm2-135m-instruct --grid --max-documents $(GRID_DOCS) \
		--tasks $(GRID_TASKS) --baseline all-minilm-l6-v2 --out docs/results/zero-shot
	$(PY) -m llm_embed.evaluate --model gemma3-270m --grid --max-documents $(GRID_DOCS) \
		--tasks $(GRID_TASKS) --baseline all-minilm-l6-v2 --out docs/results/zero-shot

test: setup  ## lint and run the whole test suite (unit + end-to-end on the packaged model)
	$(PY) -m ruff check llm_embed tests
	$(PY) -m pytest

test-fast: setup  ## unit tests only (tiny random models, no packaged model)
	$(PY) -m pytest -m "not slow"

lint: setup  ## ruff check
	$(PY) -m ruff check llm_embed tests

format: setup  ## ruff format + fix
	$(PY) -m ruff format llm_embed tests && $(PY) -m ruff check --fix llm_embed tests

clean:  ## remove the venv and caches (keeps checkpoints/)
	rm -rf .venv .pytest_cache .ruff_cache
