"""Benchmarks of llm-embed (``python -m benchmarks.<name>``); results and commands in docs/performance.md."""
