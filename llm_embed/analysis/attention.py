"""Old home of the attention maps: saved run configs name ``llm_embed.analysis.attention.AttentionMapCallback``."""

from llm_embed.analysis.attention_map import AttentionMapCallback  # noqa: F401
