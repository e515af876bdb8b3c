"""Export a trained run (or a base model) as a plain Hugging Face folder that sentence-transformers also loads.

One folder serves both, so the merged weights are written once::

    out/
      config.json  model.safetensors  tokenizer.json ...   merged backbone: AutoModel.from_pretrained(out)
      llm_embed.json                    Encoder arguments but backbone: pooling, prompt, max_text_tokens, ...
      modules.json  config_sentence_transformers.json       one module, llm_embed.st_module.LLMEmbedTransformer
      README.md                         what the vectors are and the three ways to load them

Everything goes through :class:`~llm_embed.encoder.Encoder`: the export wraps the loaded encoder
and the sentence-transformers module rebuilds one from ``llm_embed.json``, so pooling and prompt
code exist once. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_embed._fs import atomic_write_dir
from llm_embed.encoder import ADAPTER_DIR, CONFIG_NAME, Encoder
from llm_embed.errors import UserError, first_line
from llm_embed.pooling import from_config
from llm_embed.prompts import get_prompt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# = llm_embed.st_module.CONFIG_FILE, repeated so that loading an export needs no sentence-transformers
EXPORT_CONFIG = "llm_embed.json"
ST_MODULE = "llm_embed.st_module.LLMEmbedTransformer"
ADAPTER_FILE = "adapter_model.safetensors"


# -- finding and loading a model ------------------------------------------------------------------
def model_folder(path: str | Path) -> Path | None:
    """The folder holding ``encoder.json``: ``path`` itself or a run's ``model/``; else None."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def is_export(path: str | Path) -> bool:
    """True for a folder written by :func:`export_model`."""
    return (Path(path).expanduser() / EXPORT_CONFIG).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({err}): re-export the model") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object: re-export the model")
    return data


def read_export_config(path: str | Path) -> dict[str, Any]:
    """An exported folder's ``llm_embed.json``: the Encoder arguments except the backbone."""
    return _read_json(Path(path).expanduser() / EXPORT_CONFIG)


def load_exported(path: str | Path, **overrides: Any) -> Encoder:
    """The encoder of an exported folder (the folder is the backbone; ``llm_embed.json`` the rest)."""
    path = Path(path).expanduser()
    config = read_export_config(path)
    config.pop("backbone", None)
    return Encoder(backbone=str(path), **{**config, **overrides})


def _load_run(folder: Path, overrides: dict[str, Any]) -> Encoder:
    adapter = folder / ADAPTER_DIR
    if adapter.is_dir() and not (adapter / ADAPTER_FILE).is_file():
        raise UserError(
            f"{adapter} holds no {ADAPTER_FILE}: llm-embed loads adapters from safetensors only "
            "(never pickle); re-save it with save_pretrained(safe_serialization=True)"
        )
    try:
        return Encoder.load(folder, **overrides)
    except UserError:
        raise
    except Exception as err:  # safetensors, peft and json errors of a damaged adapter
        raise UserError(
            f"could not load the trained model in {folder} ({type(err).__name__}: {first_line(err)}): "
            "the adapter is corrupt or incomplete; export an intact run or retrain"
        ) from None


def load_model(
    model: str, *, pooling: str | None = None, prompt: str | None = None, **kwargs: Any
) -> Encoder:
    """Build the encoder that ``model`` names.

    ``model`` is a trained run (``checkpoints/<run>`` or its ``model/``; the adapter is merged),
    an exported folder, or a decoder (packaged name, local folder, hub id). ``pooling`` and
    ``prompt`` override the saved ones; None keeps them (a decoder: ``last`` and ``clustering``).
    """
    overrides = {
        k: v for k, v in {"pooling": pooling, "prompt": prompt, **kwargs}.items() if v is not None
    }
    path = Path(model).expanduser()
    folder = model_folder(path)
    if folder is None and (path / "checkpoints").is_dir() and not (path / "config.json").is_file():
        raise UserError(
            f"run {model} has no model/{CONFIG_NAME}, so it did not finish: resume it with "
            f"`python -m llm_embed.fit --config {path}/config.yaml --ckpt_path {path}/checkpoints/last.ckpt`"
        )
    try:
        # checked first: _load_run reads any later error as a damaged adapter
        if pooling is not None:
            from_config(pooling)
        if prompt is not None:
            get_prompt(prompt)
        if folder is not None:
            return _load_run(folder, overrides)
        if is_export(path):
            return load_exported(path, **overrides)
        return Encoder(model, **overrides)
    except ValueError as err:  # Encoder's argument checks (an unknown pooling or prompt, ...)
        raise UserError(str(err)) from None


# -- export -----------------------------------------------------------------------------------------
def _readme(encoder: Encoder, source: str) -> str:
    from llm_embed import __version__

    config = encoder.config_dict
    return f"""# {Path(source).name or source} (llm-embed export)

Text embeddings from the decoder `{config["backbone"]}`{" with its LoRA adapter merged" if source != config["backbone"] else ""},
exported by llm-embed {__version__} from `{source}`.

| setting | value |
|---|---|
| pooling | `{json.dumps(config["pooling"])}` |
| prompt template | `{config["prompt"]}` |
| max_text_tokens | {config["max_text_tokens"]} (each text is cut to this many tokens before templating) |
| normalize | {config["normalize"]} (cosine similarity = dot product) |
| layer | {config["layer"]} |
| dimension | {encoder.embed_dim} |

## sentence-transformers

```python
from llm_embed.exporting import load_sentence_transformer
model = load_sentence_transformer("path/to/this/folder")
embeddings = model.encode(["a man is driving a car"])
```

The folder's one module is `{ST_MODULE}` from the installed `llm_embed`
package (no code ships in this folder). sentence-transformers >= 6 imports classes outside its own
namespace only with `trust_remote_code=True`: `load_sentence_transformer` checks that
`modules.json` names nothing else and passes the flag; `SentenceTransformer(path,
trust_remote_code=True)` works too. A `prompt=` given to `encode` replaces the template above.

## llm-embed

```python
from llm_embed.exporting import load_exported
encoder = load_exported("path/to/this/folder")
embeddings = encoder.encode(["a man is driving a car"])
```

or from the shell: `python -m llm_embed.encode --model path/to/this/folder --input texts.txt --out emb.npy`.

## Plain transformers

`AutoModel.from_pretrained(path)` loads the merged weights and the hidden states. To get the same
vectors, apply the template and the pooling of `{EXPORT_CONFIG}` as `llm_embed.encoder.Encoder` does.
"""


def export_model(
    model: str,
    out: str | Path,
    *,
    pooling: str | None = None,
    prompt: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Merge, then write ``out`` (see the module docstring); returns ``out``.

    Raises:
        UserError: ``out`` exists without ``overwrite``, or the model cannot be loaded.
    """
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists: pick another --out or pass --overwrite")
    encoder = load_model(model, pooling=pooling, prompt=prompt)
    from sentence_transformers import SentenceTransformer

    from llm_embed.st_module import LLMEmbedTransformer


    def write(tmp: Path) -> None:
        st = SentenceTransformer(
            modules=[LLMEmbedTransformer(encoder=encoder)], device=str(encoder.device)
        )
        st.save(str(tmp), create_model_card=False)
        (tmp / "README.md").write_text(_readme(encoder, model), encoding="utf-8")

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
    if types != [ST_MODULE]:
        raise UserError(
            f"{modules_file} names other modules ({', '.join(t for t in types if t != ST_MODULE) or 'none'}) "
            f"than {ST_MODULE}: inspect them, and load with SentenceTransformer(path, trust_remote_code=True) if you trust them"
        )
    if _read_json(path / EXPORT_CONFIG).get("trust_remote_code") and not trust_remote_code:
        raise UserError(
            f"{path} runs model code shipped in its folder (trust_remote_code in {EXPORT_CONFIG}): "
            "read that code, then pass trust_remote_code=True"
        )
    return SentenceTransformer(str(path), trust_remote_code=True, **kwargs)
