"""A sentence-transformers module that runs llm-embed's own :class:`~llm_embed.encoder.Encoder`.

sentence-transformers prompts are prefixes and its poolings cut the prompt off by a token count,
while llm-embed templates wrap the text (``This sentence : "{text}" means in one word:``), cut
the text to ``max_text_tokens`` before templating, and pool over masks (``prompt_masked_mean``,
``eos``, ``last``). No stack of stock modules reproduces that, so an exported folder names this
one module in ``modules.json``: it tokenizes, runs the backbone and pools through the very same
``Encoder`` code, so ``SentenceTransformer(folder).encode`` equals ``Encoder.encode``.

The class ships with the installed ``llm_embed`` package, never inside the model folder.
sentence-transformers >= 6 still asks for ``trust_remote_code=True`` before it imports any class
outside its own namespace; :func:`llm_embed.inference.export_folder.load_sentence_transformer` checks that the
folder names only this class and then passes the flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

from llm_embed.encoder import ENCODER_ARGS, Encoder
from llm_embed.inference.load import EXPORT_CONFIG, read_encoder_config, write_encoder_config
from llm_embed.prompts import PromptTemplate, get_prompt

# Not saved in an export: the backbone is the folder itself, and the merged weights are saved in
# full precision whatever the training machine's 4-bit loading was.
NOT_EXPORTED = ("backbone", "load_in_4bit")
FEATURES = ("input_ids", "attention_mask", "position_ids", "prompt_mask")


class LLMEmbedTransformer(InputModule):
    """An llm-embed encoder (merged backbone + pooling + prompt) as a sentence-transformers module.

    Args:
        model_name_or_path: folder with the merged Hugging Face model and its tokenizer.
        encoder: an already built encoder to wrap (export time); the other arguments are then unused.
        **encoder_kwargs: :class:`Encoder` arguments except ``backbone`` (pooling, prompt, ...).
    """

    config_file_name = EXPORT_CONFIG
    config_keys = [name for name in ENCODER_ARGS if name not in NOT_EXPORTED]
    save_in_root = True

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        encoder: Encoder | None = None,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        if encoder is None:
            if model_name_or_path is None:
                raise ValueError("LLMEmbedTransformer needs model_name_or_path or encoder")
            unknown = set(encoder_kwargs) - set(self.config_keys)
            if unknown:
                raise ValueError(
                    f"unknown {EXPORT_CONFIG} keys {sorted(unknown)}; allowed: {self.config_keys}"
                )
            encoder = Encoder(backbone=model_name_or_path, **encoder_kwargs)
        self.encoder = encoder

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    def get_config_dict(self) -> dict[str, Any]:
        config = self.encoder.config_dict
        return {key: config[key] for key in self.config_keys}

    def get_embedding_dimension(self) -> int:
        return self.encoder.embed_dim

    def preprocess(
        self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Template and tokenize through :meth:`Encoder.tokenize`.

        A sentence-transformers ``prompt`` replaces the saved template, as a ``prompt`` replaces
        ``default_prompt_name`` there: a string with ``{text}`` is a template, any other string a
        prefix (``prompt + text``).
        """
        if not all(isinstance(text, str) for text in inputs):
            raise TypeError("LLMEmbedTransformer embeds text only; got a non-string input")
        template: PromptTemplate | None = None
        if prompt:
            template = get_prompt(prompt if "{text}" in prompt else prompt + "{text}")
        return self.encoder.tokenize(list(inputs), prompt=template)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Backbone + pooling (+ normalization) of :meth:`Encoder.forward`; adds ``sentence_embedding``."""
        with self.encoder.inference_autocast():  # the export's inference_dtype, as in encode()
            emb = self.encoder({key: features[key] for key in FEATURES})  # (B, D)
        return {**features, "sentence_embedding": emb}

    def save(
        self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        """Write the merged backbone (safetensors), its tokenizer and ``llm_embed.json``."""
        backbone = self.encoder.backbone
        if hasattr(backbone, "peft_config"):
            raise ValueError(
                "merge the LoRA adapter before saving (Encoder.load merges by default)"
            )
        backbone.save_pretrained(output_path, safe_serialization=True)
        self.encoder.tokenizer.save_pretrained(output_path)
        self.save_config(output_path)

    def save_config(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        """Write ``llm_embed.json`` through llm-embed's one writer of encoder descriptions."""
        write_encoder_config(f"{output_path}/{EXPORT_CONFIG}", self.get_config_dict())

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> LLMEmbedTransformer:
        """Rebuild from a folder; sentence-transformers' ``trust_remote_code`` is not passed on.

        Whether transformers may run model code is the saved ``trust_remote_code`` (False unless
        the training config turned it on), not the flag that let sentence-transformers import us.
        sentence-transformers' ``backend`` picks the backbone's runtime: ``"torch"`` (its
        default) or ``"openvino"`` (the export's saved graph, :mod:`llm_embed.inference.openvino_graph`).
        """
        backend = kwargs.get("backend") or "torch"
        if backend not in ("torch", "openvino"):
            raise ValueError(
                f"backend={backend!r}: an llm-embed export runs on backend 'torch' or 'openvino'"
            )
        hub = {"token": token, "cache_folder": cache_folder, "revision": revision}
        folder = cls.load_dir_path(
            model_name_or_path, subfolder=subfolder, local_files_only=local_files_only, **hub
        )
        config = read_encoder_config(f"{folder}/{EXPORT_CONFIG}")
        return cls(folder, **{**config, "inference_backend": backend})
