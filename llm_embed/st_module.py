"""Old home of the sentence-transformers module: export folders written before the move name it in ``modules.json``."""

from llm_embed.inference.st_module import LLMEmbedTransformer  # noqa: F401
