"""Analysis tools that read a trained encoder rather than train it.

``attention_map``: the attention analysis of arXiv 2507.22729 (Sec. "Attention analysis"): the
last layer's attention row of the final token (the token that last-token pooling embeds),
averaged over heads, BOS dropped, shown as a heatmap for a base and a fine-tuned model, plus a
Lightning callback that logs it during training (saved configs name it by its old path,
``llm_embed.analysis.attention``, which re-exports it). Import the submodule directly; this
package imports nothing heavy.
"""
