"""Prompt templates as data: a template is a string with a ``{text}`` slot (or two, to echo it).

The built-in templates are those of arXiv 2507.22729 (reference code: beneroth13/llm-text-embeddings).
Which tokens belong to the template (and not to the text) is reported by the encoder's tokenizer
step through character offsets, so pooling can leave them out (GritLM / INSTRUCTOR style).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_embed.errors import UserError, first_line

PROMPTS: dict[str, str] = {
    "none": "{text}",
    "prompteol": 'This sentence : "{text}" means in one word:',
    "clustering": 'This sentence : "{text}" belongs to the following cluster:',
    "clustering_short": "Cluster the text: {text}",
    "summary": 'This sentence : "{text}" can be summarized as',
    "classification": 'This sentence : "{text}" can be classified as:',
    "pretended_cot": 'After thinking step by step, this sentence : "{text}" means in one word:',
    # echo embeddings (Springer et al., 2024): a causal model reads the text twice, so the second
    # copy's tokens have seen all of it; the second copy is the text the prompt mask keeps
    "clustering_echo": 'Rewrite the sentence : "{text}" , rewritten sentence : "{text}" belongs to '
    "the following cluster:",
}


@dataclass(frozen=True)
class PromptTemplate:
    """A template with a ``{text}`` slot, or two (the text echoed); :meth:`apply` fills them.

    With two slots the text's tokens are those of its last copy (:meth:`text_span`).
    """

    template: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.template.count("{text}") not in (1, 2):
            raise ValueError(
                f"prompt template {self.template!r} must contain '{{text}}' once (or twice, to "
                "echo the text)"
            )

    @property
    def prefix(self) -> str:
        """What comes before the (first) text."""
        return self.template.split("{text}")[0]

    @property
    def suffix(self) -> str:
        """What comes after the (last) text."""
        return self.template.split("{text}")[-1]

    def apply(self, text: str) -> str:
        # str.format would choke on braces in the text or the template; split instead.
        return text.join(self.template.split("{text}"))

    def text_span(self, text: str) -> tuple[int, int]:
        """Character span of the (last) copy of ``text`` in ``apply(text)``."""
        end = len(self.apply(text)) - len(self.suffix)
        return end - len(text), end


def get_prompt(prompt: str | PromptTemplate) -> PromptTemplate:
    """A built-in template by name, or a literal template string containing ``{text}``."""
    if isinstance(prompt, PromptTemplate):
        return prompt
    if prompt in PROMPTS:
        return PromptTemplate(PROMPTS[prompt], name=prompt)
    if "{text}" in prompt:
        return PromptTemplate(prompt)
    raise ValueError(
        f"prompt={prompt!r} is neither a built-in template ({', '.join(PROMPTS)}) nor a template with '{{text}}'"
    )


def read_yaml_mapping(path: str | Path, what: str, values: str) -> dict[str, str]:
    """Read a YAML file holding a ``name: string`` mapping; one-line UserErrors otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} not found: give a YAML file mapping names to {values}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{what} file {path} is not valid YAML: {first_line(err)}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"{what} file {path} must map names to {values}")
    return {str(k): v for k, v in data.items()}


def load_prompts(path: str | Path) -> dict[str, PromptTemplate]:
    """Read user templates from YAML: a mapping ``name: template`` (each with one ``{text}``)."""
    data = read_yaml_mapping(path, "prompts", "template strings")
    try:
        return {str(k): PromptTemplate(v, name=str(k)) for k, v in data.items()}
    except ValueError as err:
        raise UserError(f"prompts file {path}: {err}") from None
