"""llm-embed: turn pre-trained decoder-only LLMs into text-embedding models.

Importing the package is cheap on purpose: torch, transformers, peft, lightning and mteb
are imported by the modules that need them, never here.
"""

__version__ = "0.1.0"
