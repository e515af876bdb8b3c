"""Every ``class_path`` that a config or a saved run names stays importable after modules move.

Old runs resume from their own ``config.yaml`` and old export folders name their module in
``modules.json``; both hold dotted paths that a move must keep working (one-line re-exports).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Paths written by earlier versions into saved run configs and export folders.
SAVED_PATHS = (
    "llm_embed.analysis.attention.AttentionMapCallback",
    "llm_embed.st_module.LLMEmbedTransformer",
    "llm_embed.encoder.Encoder",
    "llm_embed.eval.callback.ClusteringEvalCallback",
    "llm_embed.data.generators.AugmentPairs",
    "llm_embed.data.paraphrase.LLMParaphrasePairs",
)


def _config_paths() -> set[str]:
    found = set()
    for config in (ROOT / "configs").rglob("*.yaml"):
        found |= set(re.findall(r"class_path:\s*(llm_embed\.[\w.]+)", config.read_text()))
    return found


@pytest.mark.parametrize("dotted", sorted({*SAVED_PATHS, *_config_paths()}))
def test_class_path_is_importable(dotted):
    module, name = dotted.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_moved_classes_are_the_same_class():
    from llm_embed.analysis.attention import AttentionMapCallback as Old
    from llm_embed.analysis.attention_map import AttentionMapCallback
    from llm_embed.inference.st_module import LLMEmbedTransformer
    from llm_embed.st_module import LLMEmbedTransformer as OldST

    assert Old is AttentionMapCallback and OldST is LLMEmbedTransformer
