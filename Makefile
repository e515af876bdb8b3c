# llm-embed: `make run` sets up and trains the embedded default; `make test` sets up and tests.
PY := .venv/bin/python
CONFIG ?= configs/default.yaml

.PHONY: help setup run seeds synth compare-pairs grid bench gpu-check test test-fast lint format clean
help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.venv/.installed: setup.cfg pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: .venv/.installed  ## create .venv with pinned CPU torch and the packaged assets

run: setup  ## fit the embedded default, then report its test split beside all-MiniLM-L6-v2 (CONFIG=... for another config)
	$(PY) -m llm_embed.fit --config $(CONFIG)

# The default recipe over training seeds: each seed's run, unless its scores are already kept in
# docs/results/default-seeds/default-s<seed>/ (the untrained start is scored once, then taken from
# the score cache), its scores copied there, and the report: per evaluation seed, the mean over
# the runs (~40 min per seed on 2 CPU cores, ~25 min once the start is cached).
SEEDS ?= 0 1 2
SEED_RUNS := $(foreach s,$(SEEDS),docs/results/default-seeds/default-s$(s))
seeds: setup  ## the default over training seeds 0 1 2 (SEEDS=...) -> docs/results/default-seeds
	for s in $(SEEDS); do \
		run=checkpoints/default-s$$s; keep=docs/results/default-seeds/default-s$$s; \
		[ -f $$keep/test_report.md ] && continue; \
		[ -f $$run/test_report.md ] || $(PY) -m llm_embed.fit --config $(CONFIG) --seed_everything $$s \
			--trainer.logger.init_args.name default-s$$s || exit 1; \
		mkdir -p $$keep/test-baseline && cp $$run/mteb_scores.json $$run/test_report.md $$keep/ && \
		cp $$run/test-baseline/results.json $$keep/test-baseline/ || exit 1; \
	done
	$(PY) -m llm_embed.eval.seed_report $(SEED_RUNS) --name default --out docs/results/default-seeds
	$(PY) -m llm_embed.eval.seed_report $(SEED_RUNS) --name default --split dev --out docs/results/default-seeds/dev

# Each task is subsampled (seeded) so one model's grid stays under 30 min on 2 cores: 500 documents,
# 200 for the full articles (each ~4x the tokens of a headline).
GRID_DOCS ?= 500,BBCNewsArticles=200
GRID_TASKS ?= BBCNewsHeadlines,BBCNewsArticles,WordNetNounGlosses
grid: setup  ## zero-shot grid (poolings x prompts) of both packaged decoders + MiniLM -> docs/results/zero-shot
	$(PY) -m llm_embed.evaluate --model smollm2-135m-instruct --grid --max-documents $(GRID_DOCS) \
		--tasks $(GRID_TASKS) --baseline all-minilm-l6-v2 --out docs/results/zero-shot
	$(PY) -m llm_embed.evaluate --model gemma3-270m --grid --max-documents $(GRID_DOCS) \
		--tasks $(GRID_TASKS) --baseline all-minilm-l6-v2 --out docs/results/zero-shot

synth: setup  ## (re)generate the committed LLM-written pairs in data/pairs (resumable, ~1 h)
	$(PY) -m llm_embed.synth --config $(CONFIG)

# The same fine-tuning (100 LoRA steps, seed 0, the same 3,000 WordNet source sentences; SmolLM2
# with the recipe the project started from: last token, tau 0.2) on cheap augmentation pairs and
# on the committed LLM-written pairs, then the base model, both runs and MiniLM scored on the
# offline suite (~50 min on 2 CPU cores).
PAIRS_RUNS := checkpoints/pairs-augment checkpoints/pairs-llm
PAIRS_RECIPE := --config configs/default.yaml --config configs/smollm2-135m.yaml \
	--model.encoder.init_args.pooling last --model.temperature 0.2
compare-pairs: setup  ## augmentation vs LLM-written pairs, same steps and seed -> docs/results/pairs
	rm -rf $(PAIRS_RUNS) docs/results/pairs
	$(PY) -m llm_embed.fit $(PAIRS_RECIPE) --config configs/augment-pairs.yaml \
		--trainer.logger.init_args.name pairs-augment
	$(PY) -m llm_embed.fit $(PAIRS_RECIPE) --trainer.logger.init_args.name pairs-llm
	$(PY) -m llm_embed.evaluate --model smollm2-135m-instruct --poolings last --prompts clustering \
		--baseline all-minilm-l6-v2 --out docs/results/pairs
	for run in $(PAIRS_RUNS); do $(PY) -m llm_embed.evaluate --model $$run --out docs/results/pairs || exit 1; done

bench: setup  ## encode, training-step and loop-overhead benchmarks (see docs/performance.md)
	$(PY) -m benchmarks.encode && $(PY) -m benchmarks.train_step --max-plain-batch 64 && $(PY) -m benchmarks.loop_overhead

gpu-check:  ## GradCache training + encode benchmark on Qwen3-0.6B's shape (one GPU, < 8 min)
	bash benchmarks/gpu_check.sh

test: setup  ## lint and run the whole test suite (unit + end-to-end on the packaged model)
	$(PY) -m ruff check llm_embed tests benchmarks scripts
	$(PY) -m pytest

test-fast: setup  ## unit tests only (tiny random models, no packaged model)
	$(PY) -m pytest -m "not slow"

lint: setup  ## ruff check
	$(PY) -m ruff check llm_embed tests benchmarks scripts

format: setup  ## ruff format + fix
	$(PY) -m ruff format llm_embed tests benchmarks && $(PY) -m ruff check --fix llm_embed tests benchmarks

clean:  ## remove the venv and caches (keeps checkpoints/)
	rm -rf .venv .pytest_cache .ruff_cache
