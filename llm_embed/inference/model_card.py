"""The model card an export carries as ``README.md``: what the vectors are, where they come from,
how well they cluster, and how to load them.

The header is the Hugging Face hub's model-card metadata (``base_model``, ``license``, ...), so the
folder can be pushed as it is. A run's card also says how it was trained (read from the run's
resolved ``config.yaml``, copied beside it as ``training_config.yaml``) and shows its V-measures
beside the untrained baseline's (from its ``mteb_scores.json``). A base model whose terms ask for
a notice (Gemma) gets it in the card and in a ``NOTICE`` file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llm_embed._assets import ASSETS
from llm_embed.errors import first_line
from llm_embed.inference.load import EXPORT_CONFIG

if TYPE_CHECKING:
    from llm_embed.encoder import Encoder

log = logging.getLogger(__name__)

ST_MODULE = "llm_embed.inference.st_module.LLMEmbedTransformer"
TRAINING_CONFIG = "training_config.yaml"


def base_model_terms(backbone: str) -> dict[str, str | None]:
    """``base_model``, ``license`` and ``notice`` of a backbone (None where unknown)."""
    asset = ASSETS.get(backbone)
    if asset is not None:
        return {"base_model": asset.hub_id, "license": asset.license, "notice": asset.notice}
    is_hub_id = backbone.count("/") == 1 and not Path(backbone).expanduser().exists()
    return {"base_model": backbone if is_hub_id else None, "license": None, "notice": None}


def run_folder(source: str) -> Path | None:
    """The training run ``source`` names (it has ``config.yaml`` and ``model/``), else None."""
    path = Path(source).expanduser()
    if (path / "config.yaml").is_file() and (path / "model").is_dir():
        return path
    return None


def _front_matter(terms: dict[str, str | None]) -> str:
    meta: dict[str, Any] = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["llm-embed", "sentence-transformers", "feature-extraction", "text-embeddings"],
    }
    if terms["base_model"]:
        meta["base_model"] = terms["base_model"]
    if terms["license"]:
        meta["license"] = terms["license"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _task_prompt_rows(config: dict[str, Any]) -> str:
    """Table rows for the per-task prompts (empty without any)."""
    return "".join(
        f"| prompt for {task} | `{template}` |\n"
        for task, template in (config.get("task_prompts") or {}).items()
    )


def _training(run: Path) -> str:
    """How the run was trained, from its resolved config."""
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    model, data, trainer = (config.get(k) or {} for k in ("model", "data", "trainer"))
    lora = (model.get("lora") or {}).get("init_args") or {}
    generator = data.get("generator") or {}
    gen_args = generator.get("init_args") or {}
    if data.get("pairs_file"):
        files = data["pairs_file"] if isinstance(data["pairs_file"], list) else [data["pairs_file"]]
        pairs = "the pairs in " + ", ".join(f"`{f}`" for f in files)
    else:
        what = generator.get("class_path", "?").rsplit(".", 1)[-1]
        by = f" written by `{gen_args['model']}`" if gen_args.get("model") else ""
        pairs = f"{what} pairs{by} from {data.get('num_source', '?')} `{data.get('source', '?')}` texts"
    rows = [
        ("training pairs", pairs),
        ("steps x batch", f"{trainer.get('max_steps', '?')} x {data.get('batch_size', '?')} pairs "
                          "(in-batch negatives)"),
        ("loss", f"InfoNCE, temperature {model.get('temperature', '?')}"),
        ("LoRA", f"r={lora.get('r', '?')}, alpha={lora.get('lora_alpha', '?')}, "
                 f"modules {', '.join(lora.get('target_modules') or []) or '?'}"),
        ("learning rate", f"{model.get('lr', '?')}"),
        ("seed", f"{config.get('seed_everything', '?')}"),
    ]  # fmt: skip
    lines = ["## Training", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += [
        "",
        f"The run's resolved config is `{TRAINING_CONFIG}`; `python -m llm_embed.fit --config "
        f"{TRAINING_CONFIG}` trains it again.",
    ]
    return "\n".join(lines) + "\n"


def _scores(run: Path) -> str:
    """The run's V-measures beside the untrained baseline's (empty when it has none)."""
    from llm_embed.eval.callback import SCORES_FILE  # lazily: it imports Lightning and mteb

    path = run / SCORES_FILE
    if not path.is_file():
        return ""
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("history") or []
        # the report split (test) when the run scored it, else the split it watched (dev)
        final = next((h for h in reversed(history) if h["stage"] == "trained"), None)
        start_stage = "start"
        if final is None:
            final = next((h for h in reversed(history) if h["stage"] == "validation"), None)
            start_stage = "baseline"
        if final is not None:
            _ = {task: float(value) for task, value in final["scores"].items()}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as err:
        log.warning(
            "%s is not a readable scores file (%s): the model card leaves the scores out",
            path, first_line(err),
        )  # fmt: skip
        return ""
    if final is None:
        return ""
    baseline = next((h for h in history if h["stage"] == start_stage), None)
    seeds = len(final.get("seeds") or [None])
    lines = [
        "## Clustering quality",
        "",
        "V-measure under mteb's clustering protocol (k-means, k = labels), measured by the run's "
        f"own evaluation callback on the {final.get('split', 'whole')} split of each task "
        f"(mean over {seeds} evaluation seed{'s' if seeds > 1 else ''}).",
        "",
        "| task | untrained | this model |",
        "|---|---:|---:|",
    ]
    for task, value in final["scores"].items():
        before = f"{baseline['scores'][task]:.4f}" if baseline and task in baseline["scores"] else "-"
        lines.append(f"| {task} | {before} | {value:.4f} (step {final['step']}) |")
    return "\n".join(lines) + "\n"


def model_card(encoder: Encoder, source: str, command: str | None = None) -> str:
    """The README.md of an export of ``source`` (a run folder, a base model or another export)."""
    from llm_embed import __version__

    config = encoder.config_dict
    terms = base_model_terms(config["backbone"])
    run = run_folder(source)
    merged = " with its LoRA adapter merged" if source != config["backbone"] else ""
    made = f"\n\nMade with: `{command}`" if command else ""
    licence = (
        f"The base model's licence applies: `{terms['license']}`"
        + (f" ({terms['base_model']})." if terms["base_model"] else ".")
        if terms["license"]
        else "The base model's licence applies; see its own model card."
    )
    if terms["notice"]:
        licence += f"\n\n{terms['notice']}. (The same notice is in `NOTICE`.)"
    return f"""{_front_matter(terms)}
# {Path(source).name or source} (llm-embed export)

Text embeddings from the decoder `{config["backbone"]}`{merged}, exported by llm-embed
{__version__} from `{source}`.{made}

| setting | value |
|---|---|
| pooling | `{json.dumps(config["pooling"])}` |
| prompt template | `{config["prompt"]}` |
{_task_prompt_rows(config)}| max_text_tokens | {config["max_text_tokens"]} (each text is cut to this many tokens before templating) |
| normalize | {config["normalize"]} (cosine similarity = dot product) |
| layer | {config["layer"]} |
| dimension | {encoder.embed_dim} |

{_training(run) if run else ""}
{_scores(run) if run else ""}
## Licence

{licence}

## sentence-transformers

```python
from llm_embed.inference.export_folder import load_sentence_transformer
model = load_sentence_transformer("path/to/this/folder")
embeddings = model.encode(["a man is driving a car"])
fast = load_sentence_transformer("path/to/this/folder", backend="openvino")
```

The folder's one module is `{ST_MODULE}` from the installed `llm_embed`
package (no code ships in this folder). sentence-transformers >= 6 imports classes outside its own
namespace only with `trust_remote_code=True`: `load_sentence_transformer` checks that
`modules.json` names nothing else and passes the flag; `SentenceTransformer(path,
trust_remote_code=True)` works too. A `prompt=` given to `encode` replaces the template above;
`prompt_name=` picks a per-task prompt from the table (mteb does so by task name).
`backend="openvino"` runs the backbone through the OpenVINO graph in `openvino/` (the same float32
vectors, about twice as fast on a CPU; built from these weights on first use if the folder has
none); the default `backend="torch"` runs PyTorch.

## llm-embed

```python
from llm_embed.inference.load import load_exported
encoder = load_exported("path/to/this/folder")
embeddings = encoder.encode(["a man is driving a car"])
```

or from the shell: `python -m llm_embed.encode --model path/to/this/folder --input texts.txt --out emb.npy`.

## Plain transformers

`AutoModel.from_pretrained(path)` loads the merged weights and the hidden states. To get the same
vectors, apply the template and the pooling of `{EXPORT_CONFIG}` as `llm_embed.encoder.Encoder` does.
"""


def write_card(folder: Path, encoder: Encoder, source: str, command: str | None = None) -> None:
    """Write README.md, and NOTICE and training_config.yaml where they apply, into ``folder``."""
    (folder / "README.md").write_text(model_card(encoder, source, command), encoding="utf-8")
    notice = base_model_terms(encoder.config_dict["backbone"])["notice"]
    if notice:
        (folder / "NOTICE").write_text(notice + ".\n", encoding="utf-8")
    run = run_folder(source)
    if run is not None:
        (folder / TRAINING_CONFIG).write_bytes((run / "config.yaml").read_bytes())
