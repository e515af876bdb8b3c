#!/usr/bin/env bash
# GPU check: a randomly initialised model of Qwen3-0.6B's shape in bf16, a few training
# steps with GradCache and the encode benchmark against sentence-transformers, printing tokens/s
# and model FLOP utilisation. Needs no network; ends within 8 minutes ($GPU_CHECK_TIMEOUT) or fails.
#   benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --tiny     # a tiny model on the CPU (tests/test_benchmarks.py runs this)
# Python: $PYTHON, else .venv/bin/python, else python3 (needs torch, transformers, peft, lightning,
# sentence-transformers; llm_embed is imported from this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" -m benchmarks.gpu_check "$@"
