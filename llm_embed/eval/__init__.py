"""Clustering evaluation through the real ``mteb`` package.

- ``tasks``: offline clustering tasks built from packaged corpora (BBC News, WordNet), plus
  lookup of real MTEB task names.
- ``mteb_adapter``: wraps an llm-embed encoder as an ``mteb.models.AbsEncoder``.
- ``clustering``: ``evaluate_clustering(encoder, task_names)`` -> V-measure per task.
- ``callback``: a Lightning callback that runs the evaluation during training.
- ``plan``: the configurations (pooling x prompt) and documents per task to evaluate.
- ``grid``: ``evaluate_grid(EvalConfig)``, the evaluate command's orchestration.
- ``results``: the results store (records with provenance) and its Markdown/PNG rendering.

The submodules import mteb, torch and lightning at module level; this package file does not,
so that ``import llm_embed.eval`` stays as light as ``import llm_embed``.
"""
