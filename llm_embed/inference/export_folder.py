"""Export a trained run (or a base model) as a plain Hugging Face folder that sentence-transformers also loads.

One folder serves both, so the merged weights are written once::

    out/
      config.json  model.safetensors  tokenizer.json ...   merged backbone: AutoModel.from_pretrained(out)
      llm_embed.json                    Encoder arguments but backbone: pooling, prompt, max_text_tokens, ...
      modules.json  config_sentence_transformers.json       one module, llm_embed.inference.st_module.LLMEmbedTransformer;
                                        the per-task prompts as prompt names
      README.md                         model card: hub metadata, settings, training, scores, loading
      NOTICE  training_config.yaml      the base model's required notice (Gemma); a run's config
      openvino/openvino_model.{xml,bin} the backbone as an OpenVINO graph (inference_backend: openvino)

Everything goes through :class:`~llm_embed.encoder.Encoder`: the export wraps the encoder that
:mod:`llm_embed.inference.load` builds from ``--model``, and the sentence-transformers module
rebuilds one from ``llm_embed.json`` (read by the same loader), so pooling and prompt code exist
once. The folder is written atomically (:func:`llm_embed._fs.atomic_write_dir`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_embed._fs import atomic_write_dir, check_output, ensure_space
from llm_embed.errors import UserError
from llm_embed.inference.load import EXPORT_CONFIG, is_export, load_encoder, read_encoder_config
from llm_embed.inference.model_card import ST_MODULE, write_card

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


log = logging.getLogger(__name__)

# The one class an export's modules.json names; exports written before it moved name the old
# path, which stays importable (llm_embed/st_module.py re-exports it).
ST_MODULE_NAMES = (ST_MODULE, "llm_embed.st_module.LLMEmbedTransformer")
PROBE_TEXTS = ["A short sentence to check the model's vectors.", "Another, longer one, to pad."]


# -- export -----------------------------------------------------------------------------------------
def _replaceable(folder: Path) -> bool:
    """An export (it has ``llm_embed.json``) or an empty folder: what ``--overwrite`` may replace."""
    return is_export(folder) or not any(folder.iterdir())


def export_model(
    model: str,
    out: str | Path,
    *,
    pooling: str | None = None,
    prompt: str | None = None,
    truncate_dim: int | None = None,
    layer: int | None = None,
    inference_dtype: str | None = None,
    inference_backend: str | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    command: str | None = None,
) -> Path:
    """Merge, then write ``out`` (see the module docstring); returns ``out``.

    ``command`` (the shell command that asked for the export) is quoted in the model card.

    Raises:
        UserError: ``out`` exists without ``overwrite``, or the model cannot be loaded.
    """
    out = check_output(out, folder=True, overwrite=overwrite, ours=_replaceable)
    encoder = load_encoder(
        model,
        command="export",
        pooling=pooling,
        prompt=prompt,
        truncate_dim=truncate_dim,
        layer=layer,
        inference_dtype=inference_dtype,
        inference_backend=inference_backend,
        trust_remote_code=trust_remote_code,
    )
    from sentence_transformers import SentenceTransformer

    from llm_embed.inference.st_module import LLMEmbedTransformer

    # damaged weights would be exported as a model that gives NaN: refused here (check_finite)
    encoder.encode(PROBE_TEXTS)
    weights = sum(t.numel() * t.element_size() for t in encoder.backbone.state_dict().values())
    graph = weights if encoder.inference_backend == "openvino" else 0
    ensure_space(out, weights + graph, f"exporting {model}")

    def write(tmp: Path) -> None:
        st = SentenceTransformer(  # per-task prompts as its prompt names (mteb looks them up)
            modules=[LLMEmbedTransformer(encoder=encoder)],
            device=str(encoder.device),
            prompts=encoder.task_prompts or None,
        )
        st.save(str(tmp), create_model_card=False)
        if encoder.inference_backend == "openvino":  # the fast path's graph, built once here
            from llm_embed.inference.openvino_graph import save_graph

            save_graph(encoder, tmp)
        write_card(tmp, encoder, model, command)

    atomic_write_dir(out, write)
    log.info(
        "exported %s to %s (%d-d, pooling %s)", model, out, encoder.embed_dim, encoder.pooling.name
    )
    return out


def load_sentence_transformer(
    path: str | Path, *, trust_remote_code: bool = False, **kwargs: Any
) -> SentenceTransformer:
    """``SentenceTransformer(path)`` for an llm-embed export, after checking what it would import.

    sentence-transformers needs ``trust_remote_code=True`` to import any class outside its own
    namespace, even one from an installed package. This passes that flag only when
    ``modules.json`` names llm-embed's module and nothing else, and the export does not ask to
    run model code from its folder (``trust_remote_code`` in ``llm_embed.json``, set only when the
    training config turned it on); for such an export, pass ``trust_remote_code=True`` yourself
    after reading that code. The class reference has two dots, which transformers' dynamic
    loader rejects, so the class always comes from the installed ``llm_embed``, never the folder.
    """
    from sentence_transformers import SentenceTransformer

    path = Path(path).expanduser()
    modules_file = path / "modules.json"
    if not modules_file.is_file() or not is_export(path):
        raise UserError(
            f"{path} is not an llm-embed export (no modules.json or {EXPORT_CONFIG}): run python -m llm_embed.export"
        )
    try:
        types = [m["type"] for m in json.loads(modules_file.read_text(encoding="utf-8"))]
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"{modules_file} is unreadable ({err}): re-export the model") from None
    if len(types) != 1 or types[0] not in ST_MODULE_NAMES:
        others = ", ".join(t for t in types if t not in ST_MODULE_NAMES) or "none"
        raise UserError(
            f"{modules_file} names other modules ({others}) than {ST_MODULE}: inspect them, and "
            "load with SentenceTransformer(path, trust_remote_code=True) if you trust them"
        )
    if read_encoder_config(path / EXPORT_CONFIG).get("trust_remote_code") and not trust_remote_code:
        raise UserError(
            f"{path} runs model code shipped in its folder (trust_remote_code in {EXPORT_CONFIG}): "
            "read that code, then pass trust_remote_code=True"
        )
    return SentenceTransformer(str(path), trust_remote_code=True, **kwargs)
