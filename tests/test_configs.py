"""The shipped configs compose: each overlay changes only what it is for and repeats nothing.

Parsed with the fit CLI's own parser (``--print_config``), so no model is loaded and nothing
needs a GPU or the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GPU_RECIPE = "qwen3-0.6b.yaml"

# overlay -> (its base, the resolved values it sets); everything else must equal the base
OVERLAYS: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m.yaml": (
        "default.yaml",
        {
            "model.encoder.init_args.backbone": "smollm2-135m-instruct",
            "trainer.logger.init_args.name": "smollm2-135m",
        },
    ),
    "llama-3.2-1b.yaml": (
        GPU_RECIPE,
        {
            "model.encoder.init_args.backbone": "meta-llama/Llama-3.2-1B",
            "trainer.logger.init_args.name": "llama-3.2-1b",
        },
    ),
    "ddp.yaml": (
        GPU_RECIPE,
        {
            "model.grad_cache": True,
            "data.batch_size": 64,
            "data.val_size": 512,
            "trainer.devices": -1,
            "trainer.strategy": "ddp",
            "trainer.accumulate_grad_batches": 1,
            "trainer.val_check_interval": 100,
            "trainer.logger.init_args.name": "qwen3-0.6b-ddp",
        },
    ),
    "fsdp.yaml": (
        GPU_RECIPE,
        {
            "model.encoder.init_args.backbone": "meta-llama/Llama-3.2-1B",
            "model.gradient_checkpointing": True,
            "data.batch_size": 32,
            "data.val_size": 256,
            "trainer.devices": -1,
            "trainer.strategy.class_path": "lightning.pytorch.strategies.FSDPStrategy",
            "trainer.strategy.init_args.sharding_strategy": "FULL_SHARD",
            "trainer.strategy.init_args.state_dict_type": "full",
            "trainer.strategy.init_args.auto_wrap_policy": [
                "transformers.models.llama.modeling_llama.LlamaDecoderLayer"
            ],
            "trainer.accumulate_grad_batches": 1,
            "trainer.val_check_interval": 100,
            "trainer.logger.init_args.name": "llama-3.2-1b-fsdp",
        },
    ),
}


@pytest.fixture
def resolve(capsys):
    """``resolve("a.yaml", "b.yaml")``: the config fit would run with, as a dict (nothing instantiated)."""
    from llm_embed.fit import cli_main

    def run(*names: str) -> dict:
        args = [a for name in names for a in ("--config", str(CONFIGS / name))]
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            cli_main([*args, "--print_config"])
        assert done.value.code in (0, None)
        return yaml.safe_load(capsys.readouterr().out)

    return run


def get(config: dict, path: str) -> Any:
    for key in path.split("."):
        config = config[key]
    return config


def leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value of every scalar or list in a nested dict."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else key))
    return out


def test_overlays_cover_every_config():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {
        *OVERLAYS,
        "default.yaml",
        GPU_RECIPE,
        *PAIR_CONFIGS,
    }


# pair-generator overlays: each resolves over the default to a WordNetPairs or AugmentPairs source
PAIR_CONFIGS = {
    "augment-pairs.yaml": "AugmentPairs",
    "wordnet-pairs.yaml": "WordNetPairs",
    "lemma-pairs.yaml": "WordNetPairs",
    "lexname-pairs.yaml": "WordNetPairs",
    "broader-pairs.yaml": "WordNetPairs",
    "adapt.yaml": "AugmentPairs",  # the user's own texts as the source
}


@pytest.mark.parametrize("name", sorted(PAIR_CONFIGS))
def test_pair_configs_name_their_generator(name):
    import yaml

    config = yaml.safe_load((CONFIGS / name).read_text())
    generator = config["data"]["generator"]
    assert generator["class_path"].endswith(PAIR_CONFIGS[name])
    from jsonargparse import ArgumentParser

    from llm_embed.data.generators import PairGenerator

    parser = ArgumentParser()
    parser.add_argument("--generator", type=PairGenerator)
    made = parser.instantiate_classes(parser.parse_object({"generator": generator})).generator
    assert type(made).__name__ == PAIR_CONFIGS[name]  # the init_args are accepted


def get_or_none(config: dict, path: str) -> Any:
    try:
        return get(config, path)
    except (KeyError, TypeError):
        return None


def put_back(composed: dict, base: dict, path: str) -> None:
    """Reset ``path`` of ``composed`` to ``base`` (the whole block where the base has a scalar there)."""
    *parents, key = path.split(".")
    for parent in parents:
        if not isinstance(base.get(parent), dict):
            key = parent
            break
        composed, base = composed[parent], base[parent]
    composed[key] = base[key]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_changes_only_what_it_is_for(overlay, resolve):
    base_name, changes = OVERLAYS[overlay]
    base, composed = resolve(base_name), resolve(base_name, overlay)
    assert {path: get(composed, path) for path in changes} == changes
    for path in changes:
        put_back(composed, base, path)
    assert composed == base


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_repeats_nothing_of_its_base(overlay, resolve):
    """Every value an overlay file sets differs from what its base already resolves to."""
    base = resolve(OVERLAYS[overlay][0])
    written = leaves(yaml.safe_load((CONFIGS / overlay).read_text()))
    repeated = [path for path, value in written.items() if get_or_none(base, path) == value]
    assert not repeated, f"{overlay} repeats its base: {repeated}"


def test_gpu_recipe_repeats_no_class_default(resolve):
    defaults = resolve()
    written = leaves(yaml.safe_load((CONFIGS / GPU_RECIPE).read_text()))
    repeated = [path for path, value in written.items() if get_or_none(defaults, path) == value]
    assert not repeated, f"{GPU_RECIPE} repeats defaults: {repeated}"


def test_gpu_recipe_is_the_papers(resolve):
    """The recipe's LoRA is the paper's (spelled in the recipe alone), with last-token + clustering prompt."""
    from llm_embed.module import reference_lora

    recipe = resolve(GPU_RECIPE)
    lora = recipe["model"]["lora"]["init_args"]
    paper = reference_lora()
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (64, 16, 0.05)
    assert set(lora["target_modules"]) == set(paper.target_modules)
    encoder = recipe["model"]["encoder"]["init_args"]
    assert (encoder["pooling"], encoder["prompt"], encoder["max_text_tokens"]) == (
        "last",
        "clustering",
        100,
    )
    assert (
        recipe["model"]["temperature"],
        recipe["model"]["lr"],
        recipe["model"]["warmup_steps"],
    ) == (0.2, 5e-5, 100)
    assert recipe["data"]["batch_size"] * recipe["trainer"]["accumulate_grad_batches"] == 120
    assert (
        recipe["trainer"]["precision"] == "bf16-mixed" and recipe["model"]["gather_across_devices"]
    )
    for overlay in OVERLAYS:
        assert "lora" not in (yaml.safe_load((CONFIGS / overlay).read_text()).get("model") or {})


def test_the_lever_screen_scores_dev_alone_and_changes_nothing_else(resolve):
    """A screened lever must differ from the default in its own change only: the overlay may
    touch nothing but the callbacks."""
    base = resolve("default.yaml")
    screen = resolve("default.yaml", "levers/dev-screen.yaml")
    callbacks = screen["trainer"].pop("callbacks")
    base["trainer"].pop("callbacks")
    assert screen == base
    evals = [c for c in callbacks if c["class_path"].endswith("ClusteringEvalCallback")]
    assert len(evals) == 1 and evals[0]["init_args"]["split"] == "dev"
    assert evals[0]["init_args"].get("report_split") is None
    assert evals[0]["init_args"]["baseline"] is False  # compared with the default's own run
    assert not any(c["class_path"].endswith("AttentionMapCallback") for c in callbacks)


def test_the_adapt_overlay_trains_on_the_users_texts_and_changes_nothing_else(resolve):
    base = resolve("default.yaml")
    adapt = resolve("default.yaml", "adapt.yaml")
    assert adapt["data"].pop("source") == "my-texts.txt" and base["data"].pop("source") == "wordnet"
    assert adapt["data"].pop("cache_dir") != base["data"].pop("cache_dir")
    assert adapt["data"].pop("generator")["class_path"].endswith("AugmentPairs")
    base["data"].pop("generator")
    assert adapt["trainer"]["logger"]["init_args"].pop("name") == "adapt"
    base["trainer"]["logger"]["init_args"].pop("name")
    assert adapt == base  # calibration_texts stays: fitted on the new anchors, the user's texts
