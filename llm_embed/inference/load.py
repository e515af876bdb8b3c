"""The one loader: what a user passes as ``--model`` -> a description -> an encoder.

Every command resolves ``--model`` here, so every command accepts the same things and fails on
the same bad input with the same one-line message:

- a decoder: packaged name (``smollm2-135m-instruct``), local Hugging Face folder, hub id;
- a training run (``checkpoints/<run>``) or its ``model/`` folder: the base model plus the LoRA
  adapter, merged at load;
- an export folder (``python -m llm_embed.export``);
- a sentence-transformers model: ``st:<name>``, a packaged alias (``all-minilm-l6-v2``) or a
  folder with ``modules.json``.

A run and an export describe their encoder in one file format, written and read only here: a
JSON object of :class:`~llm_embed.encoder.Encoder` arguments (``encoder.json`` in a run's
``model/``; ``llm_embed.json`` in an export, without ``backbone``, which is the folder itself).
:func:`resolve_model` decides what ``--model`` names without loading anything (evaluation plans a
grid from it); :func:`load_model` builds the encoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_embed import _assets
from llm_embed._fs import atomic_write_dir, atomic_write_text
from llm_embed.errors import UserError, first_line

if TYPE_CHECKING:
    from llm_embed.encoder import Encoder

CONFIG_NAME = "encoder.json"  # a run's model/ folder
EXPORT_CONFIG = "llm_embed.json"  # an export folder
ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter_model.safetensors"
KINDS = ("auto", "llm", "run", "export", "sentence-transformers")
MODEL_HELP = (
    "packaged name, local folder, hub id, run folder (checkpoints/<run> or its model/), "
    "export folder, or st:<name> / a packaged alias for sentence-transformers"
)


# -- the encoder description file ------------------------------------------------------------------
def write_encoder_config(path: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    """Write an encoder description (``encoder.json`` / ``llm_embed.json``) atomically."""
    return atomic_write_text(path, json.dumps(config, indent=2) + "\n")


def read_encoder_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an encoder description: a JSON object of :class:`Encoder` arguments.

    Raises:
        UserError: the file is unreadable, not JSON, not an object, or names unknown arguments.
    """
    from llm_embed.encoder import ENCODER_ARGS

    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{path} is corrupt ({first_line(err)}): re-export the model or retrain the run"
        ) from None
    if not isinstance(config, dict):
        raise UserError(
            f"{path} is corrupt (not a JSON object): re-export the model or retrain the run"
        )
    unknown = sorted(set(config) - set(ENCODER_ARGS))
    if unknown:
        raise UserError(
            f"{path} is corrupt (unknown keys {', '.join(unknown)}; allowed: {', '.join(ENCODER_ARGS)}): "
            "re-export the model or retrain the run"
        )
    if path.name == CONFIG_NAME and not isinstance(config.get("backbone"), str):
        raise UserError(
            f"{path} is corrupt (it names no backbone): re-export the model or retrain the run"
        )
    return config


# -- what --model names ----------------------------------------------------------------------------
def model_folder(path: str | Path) -> Path | None:
    """The folder holding ``encoder.json``: ``path`` itself or a run's ``model/``; else None."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def is_export(path: str | Path) -> bool:
    """True for a folder written by ``python -m llm_embed.export``."""
    return (Path(path).expanduser() / EXPORT_CONFIG).is_file()


def is_st_folder(path: str | Path) -> bool:
    """True for a local sentence-transformers model folder (it has ``modules.json``)."""
    return (Path(path).expanduser() / "modules.json").is_file()


def _display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it (records stay portable)."""
    path = path.expanduser().absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_exists(model: str) -> None:
    """A path-like name (``./x``, ``/x``, ``~/x``) must be a folder; an unfinished run names its fix."""
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not path.is_dir():
        raise UserError(
            f"model folder {model!r} not found: give an existing folder, a hub id or one of "
            f"{', '.join(sorted(_assets.ASSETS))}"
        )
    if (
        path.is_dir()
        and model_folder(path) is None
        and (path / "checkpoints").is_dir()
        and not (path / "config.json").is_file()
    ):
        raise UserError(
            f"run {model} has no model/{CONFIG_NAME}, so it did not finish: resume it with "
            f"`python -m llm_embed.fit --config {path}/config.yaml --ckpt_path {path}/checkpoints/last.ckpt`"
        )


def _same_backbone(a: str, b: str) -> bool:
    """True when two backbone names load the same weights (names, or folders on disk)."""
    if a == b:
        return True
    from llm_embed.backbone import resolve

    try:
        pa, pb = Path(resolve(a)), Path(resolve(b))
    except UserError:
        return False
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


@dataclass(frozen=True)
class ModelSource:
    """What ``--model`` names, resolved but not loaded.

    Attributes:
        kind: ``llm`` (packaged / local folder / hub id), ``run`` (a trained llm-embed run),
            ``export`` (an export folder) or ``sentence-transformers``.
        model: The backbone (``llm``/``run``), export folder or sentence-transformers model, as recorded.
        adapter: For ``run``: the folder holding ``encoder.json`` (+ ``adapter/``).
        role: ``model`` or ``baseline`` (evaluation draws baselines as lines in its chart).
    """

    kind: str
    model: str
    adapter: str | None = None
    role: str = "model"

    @property
    def label(self) -> str:
        """The row-group name in a results table: the model, plus the run name for an adapter."""
        if self.adapter is None:
            return self.model
        run = Path(self.adapter)
        return f"{self.model} + {(run.parent if run.name == 'model' else run).name}"

    def saved_config(self) -> dict[str, Any]:
        """The run's ``encoder.json`` or the export's ``llm_embed.json`` (empty for other kinds)."""
        if self.kind == "export":
            return read_encoder_config(Path(self.model).expanduser() / EXPORT_CONFIG)
        if self.adapter is None:
            return {}
        return read_encoder_config(Path(self.adapter) / CONFIG_NAME)


def resolve_model(
    model: str | None, *, adapter: str | None = None, kind: str = "auto", role: str = "model"
) -> ModelSource:
    """Decide what ``model`` (+ a run folder as ``adapter``, + ``kind``) names, without loading it.

    An export folder is loaded through llm-embed's own encoder (its sentence-transformers face
    needs ``trust_remote_code``); ``st:<name>``, ``kind="sentence-transformers"``, a packaged
    alias or a folder with ``modules.json`` is a sentence-transformers model; a folder with
    ``encoder.json`` (or ``model/encoder.json``) is a trained run; anything else is a decoder.

    Raises:
        UserError: unknown kind, a missing folder, an unfinished run, a corrupt description, or
            an adapter trained on another backbone.
    """
    if kind not in KINDS:
        raise UserError(f"kind={kind!r} is unknown; use one of {', '.join(KINDS)}")
    if adapter is not None:
        folder = model_folder(adapter)
        if folder is None:
            if Path(adapter).expanduser().is_dir():
                _check_exists(adapter)  # an unfinished run says how to resume it
            what = (
                "not found"
                if not Path(adapter).expanduser().is_dir()
                else f"holds no {CONFIG_NAME}"
            )
            raise UserError(
                f"adapter folder {adapter!r} {what}: give a run folder (checkpoints/<run>) or its model/ subfolder"
            )
        saved = read_encoder_config(folder / CONFIG_NAME)["backbone"]
        if model is not None:
            if kind == "sentence-transformers" or model.startswith("st:") or model_folder(model):
                raise UserError(f"--adapter needs a decoder --model, not {model!r}")
            if not _same_backbone(model, saved):
                raise UserError(
                    f"adapter {adapter!r} was trained on backbone {saved!r}, not --model {model!r}: "
                    f"drop --model or pass --model {saved}"
                )
        return ModelSource("run", saved, _display_path(folder), role)
    if model is None:
        raise UserError("no model given: pass --model (or --adapter with a run folder)")
    if model.startswith("st:"):
        model, kind = model[3:], "sentence-transformers"
    _check_exists(model)
    if kind in ("auto", "export") and is_export(model):
        read_encoder_config(Path(model).expanduser() / EXPORT_CONFIG)  # fail here, not mid-load
        return ModelSource("export", model, None, role)
    if kind == "export":
        raise UserError(
            f"{model!r} is not an export folder (no {EXPORT_CONFIG}): run python -m llm_embed.export"
        )
    st_names = _assets.names("sentence-transformers")
    if kind == "sentence-transformers" or (
        kind == "auto" and (model in st_names or is_st_folder(model))
    ):
        return ModelSource("sentence-transformers", model, None, role)
    folder = model_folder(model) if kind in ("auto", "run") else None
    if folder is not None:
        backbone = read_encoder_config(folder / CONFIG_NAME)["backbone"]
        return ModelSource("run", backbone, _display_path(folder), role)
    if kind == "run":
        raise UserError(f"run folder {model!r} holds no {CONFIG_NAME} (nor model/{CONFIG_NAME})")
    return ModelSource("llm", model, None, role)


# -- building the encoder --------------------------------------------------------------------------
def save_encoder(encoder: Encoder, path: str | Path) -> Path:
    """Write ``encoder.json`` and, for a LoRA-wrapped backbone, the adapter (safetensors).

    The adapter folder appears whole (a kill mid-save leaves the previous one) and readable
    under the umask (peft's safetensors writer makes its file private, 0600).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if hasattr(encoder.backbone, "peft_config"):
        backbone = encoder.backbone
        atomic_write_dir(
            path / ADAPTER_DIR, lambda tmp: backbone.save_pretrained(tmp, safe_serialization=True)
        )
    write_encoder_config(path / CONFIG_NAME, encoder.config_dict)
    return path


def check_remote_code(config: dict[str, Any], overrides: dict[str, Any], where: Path) -> None:
    """Refuse a saved ``trust_remote_code: true`` that the caller did not grant itself.

    A downloaded run or export could otherwise run the Python files it ships just by being
    loaded: only the user's own flag on this call (``trust_remote_code=True``) allows that.
    """
    if config.get("trust_remote_code") and overrides.get("trust_remote_code") is not True:
        raise UserError(
            f"{_display_path(where)} says trust_remote_code: true (run the Python code shipped "
            "with its model): read that code, then pass --trust-remote-code (trust_remote_code=True)"
        )


def load_saved(folder: str | Path, *, merge: bool = True, **overrides: Any) -> Encoder:
    """Rebuild the encoder of a run's ``model/`` folder; the adapter is merged by default."""
    from llm_embed.encoder import Encoder

    folder = Path(folder)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise UserError(
            f"{folder} holds no {CONFIG_NAME}: give a folder written by a llm-embed run"
        )
    config = read_encoder_config(config_file)
    check_remote_code(config, overrides, config_file)
    encoder = Encoder(**{**config, **overrides})
    if (folder / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(encoder.backbone, folder / ADAPTER_DIR)
        encoder.backbone = model.merge_and_unload() if merge else model
    return encoder


def load_exported(path: str | Path, **overrides: Any) -> Encoder:
    """The encoder of an export folder (the folder is the backbone; ``llm_embed.json`` the rest)."""
    from llm_embed.encoder import Encoder

    path = Path(path).expanduser()
    config = read_encoder_config(path / EXPORT_CONFIG)
    check_remote_code(config, overrides, path / EXPORT_CONFIG)
    config.pop("backbone", None)
    return Encoder(backbone=str(path), **{**config, **overrides})


def _load_run(folder: Path, overrides: dict[str, Any]) -> Encoder:
    adapter = folder / ADAPTER_DIR
    if adapter.is_dir() and not (adapter / ADAPTER_FILE).is_file():
        raise UserError(
            f"{adapter} holds no {ADAPTER_FILE}: llm-embed loads adapters from safetensors only "
            "(never pickle); re-save it with save_pretrained(safe_serialization=True)"
        )
    read_encoder_config(folder / CONFIG_NAME)  # a corrupt description is not a damaged adapter
    try:
        return load_saved(folder, **overrides)
    except UserError:
        raise
    except Exception as err:  # safetensors, peft and json errors of a damaged adapter
        raise UserError(
            f"could not load the trained model in {folder} ({type(err).__name__}: {first_line(err)}): "
            "the adapter is corrupt or incomplete; export an intact run or retrain"
        ) from None


def load_model(
    model: str | ModelSource,
    *,
    pooling: str | None = None,
    prompt: str | None = None,
    trust_remote_code: bool = False,
    **overrides: Any,
) -> Any:
    """Build the encoder that ``model`` names (see :func:`resolve_model`).

    Model code shipped in a folder runs only with ``trust_remote_code=True`` given here, by the
    caller: a run's or an export's saved ``trust_remote_code`` alone is refused.

    ``pooling`` and ``prompt`` override a run's or an export's saved ones; None keeps them (a
    decoder: ``last`` and ``clustering``; a sentence-transformers model: its own pooling, no
    prompt). Returns an :class:`~llm_embed.encoder.Encoder`, or a
    :class:`~llm_embed.inference.st_encoder.STEncoder` for a sentence-transformers model: both
    have ``name``, ``embed_dim`` and ``encode``.
    """
    from llm_embed.pooling import from_config
    from llm_embed.prompts import get_prompt

    source = resolve_model(model) if isinstance(model, str) else model
    try:  # checked before loading: _load_run reads any later error as a damaged adapter
        if pooling is not None:
            from_config(pooling)
        if prompt is not None:
            get_prompt(prompt)
    except ValueError as err:
        raise UserError(str(err)) from None
    if source.kind == "sentence-transformers":
        from llm_embed.inference.st_encoder import STEncoder

        if pooling is not None or overrides.get("layer") is not None:
            what = "pooling" if pooling is not None else "layer"
            raise UserError(
                f"{source.model!r} is a sentence-transformers model: its {what} is its own"
            )
        return STEncoder(
            source.model,
            prompt=prompt or "none",
            trust_remote_code=trust_remote_code,
            truncate_dim=overrides.get("truncate_dim"),
        )
    kwargs = {
        k: v
        for k, v in {"pooling": pooling, "prompt": prompt, **overrides}.items()
        if v is not None
    }
    kwargs["trust_remote_code"] = trust_remote_code
    try:
        if source.kind == "run":
            return _load_run(Path(source.adapter), kwargs)
        if source.kind == "export":
            return load_exported(source.model, **kwargs)
        from llm_embed.encoder import Encoder

        return Encoder(source.model, **kwargs)
    except ValueError as err:  # Encoder's argument checks (a layer out of range, ...)
        raise UserError(str(err)) from None


def load_encoder(model: str | ModelSource, *, command: str, **kwargs: Any) -> Encoder:
    """:func:`load_model` for a command that needs llm-embed's own encoder (export, encode, attention)."""
    source = resolve_model(model) if isinstance(model, str) else model
    if source.kind == "sentence-transformers":
        raise UserError(
            f"{source.model!r} is a sentence-transformers model: {command} needs a decoder, a run or an export"
        )
    return load_model(source, **kwargs)
