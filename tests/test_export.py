"""Export: the sentence-transformers round trip, the plain Hugging Face folder, and one-line errors.

The round trip is what an export promises: ``SentenceTransformer(export).encode(texts)`` must
give llm-embed's own embeddings (cosine > 0.9999; in practice they are identical), for a trained
run (adapter merged) and for a base model, with templates that wrap the text and poolings that
sentence-transformers' stock modules cannot express.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_errors import check_error

from llm_embed._cli import run_cli
from llm_embed.encoder import Encoder
from llm_embed.errors import UserError
from llm_embed.export import cli_main
from llm_embed.inference.export_folder import export_model, load_sentence_transformer
from llm_embed.inference.load import load_exported, load_model

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "a man is driving a car",
    "the cat sat on the mat",
    "stocks fell sharply on monday " * 40,  # beyond max_text_tokens: cut before templating
    'braces {text} and "quotes" survive',
    "café, naïve, 東京",
    "x",
]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(
        torch.as_tensor(a).float(), torch.as_tensor(b).float(), dim=-1
    )


@pytest.fixture(scope="module")
def run_dir(lora_run, tmp_path_factory) -> Path:
    """A trained run's layout (model/encoder.json + adapter/) with a non-zero LoRA, so merging matters."""
    run = tmp_path_factory.mktemp("run")
    lora_run(
        run, pooling="prompt_masked_mean", target_modules=["q_proj", "v_proj", "o_proj"], seed=1
    )
    (run / "checkpoints").mkdir()
    return run


@pytest.mark.parametrize(
    "pooling, prompt",
    [
        (None, None),
        ("last", "clustering"),
        ("eos", None),
        ("weighted_mean", "none"),
        ("last_mean", None),
        ("weighted_mean_last", None),
    ],
    ids=[
        "saved-prompt_masked_mean",
        "last",
        "eos",
        "weighted_mean",
        "last_mean",
        "weighted_mean_last",
    ],
)
def test_sentence_transformers_round_trip_of_a_trained_run(run_dir, tmp_path, pooling, prompt):
    reference = load_model(str(run_dir), pooling=pooling, prompt=prompt).encode(TEXTS)
    out = export_model(str(run_dir), tmp_path / "export", pooling=pooling, prompt=prompt)
    model = load_sentence_transformer(out, device="cpu")
    got = model.encode(TEXTS, convert_to_tensor=True, batch_size=4)
    assert got.shape == reference.shape and model.get_embedding_dimension() == reference.shape[1]
    assert cosine(got, reference).min() > 0.9999


def test_the_adapter_is_merged_and_matters(run_dir, tiny_model_dir, tmp_path):
    out = export_model(str(run_dir), tmp_path / "export")
    merged = load_sentence_transformer(out, device="cpu").encode(TEXTS, convert_to_tensor=True)
    base = Encoder(tiny_model_dir, pooling="prompt_masked_mean", prompt="prompteol").encode(TEXTS)
    assert cosine(merged, base).min() < 0.999  # the LoRA weights changed the vectors


def test_base_model_without_adapter(tiny_model_dir, tmp_path):
    out = export_model(tiny_model_dir, tmp_path / "base", pooling="mean", prompt="none")
    reference = Encoder(tiny_model_dir, pooling="mean", prompt="none").encode(TEXTS)
    got = load_sentence_transformer(out, device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert cosine(got, reference).min() > 0.9999


def test_plain_hugging_face_folder(run_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    out = export_model(str(run_dir), tmp_path / "export")
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "llm_embed.json",
        "modules.json",
        "README.md",
    } <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".py")) for n in names)  # no pickles, no code
    # merged, not an adapter
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    model, tokenizer = AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    merged = load_model(str(run_dir))
    ids = tokenizer(["a man is driving a car"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            model(**ids).last_hidden_state, merged.backbone(**ids).last_hidden_state
        )
    config = json.loads((out / "llm_embed.json").read_text())
    assert config["pooling"] == {"type": "prompt_masked_mean"} and "{text}" in config["prompt"]
    assert config["trust_remote_code"] is False
    assert "prompt_masked_mean" in (out / "README.md").read_text()
    assert cosine(load_exported(out).encode(TEXTS), merged.encode(TEXTS)).min() > 0.9999


def test_sentence_transformers_prompt_replaces_the_template(run_dir, tmp_path):
    out = export_model(str(run_dir), tmp_path / "export")
    model = load_sentence_transformer(out, device="cpu")
    encoder = load_exported(out)
    for st_prompt, template in (
        ("query: ", "query: {text}"),
        ("Cluster: {text} ->", "Cluster: {text} ->"),
    ):
        got = model.encode(TEXTS, prompt=st_prompt, convert_to_tensor=True)
        assert cosine(got, encoder.encode(TEXTS, prompt=template)).min() > 0.9999


def test_task_prompts_become_sentence_transformers_prompt_names(lora_run, tmp_path):
    own = 'This definition : "{text}" describes a kind of'
    run = lora_run(
        tmp_path / "run", pooling="mean", target_modules=["q_proj"], seed=2,
        task_prompts={"WordNetNounGlosses": own},
    )  # fmt: skip
    out = export_model(str(run), tmp_path / "export")
    model = load_sentence_transformer(out, device="cpu")
    assert model.prompts["WordNetNounGlosses"] == own
    assert f"| prompt for WordNetNounGlosses | `{own}` |" in (out / "README.md").read_text()
    assert load_exported(out).task_prompts == {"WordNetNounGlosses": own}
    got = model.encode(TEXTS, prompt_name="WordNetNounGlosses", convert_to_tensor=True)
    assert cosine(got, load_model(str(run)).encode(TEXTS, prompt=own)).min() > 0.9999


def test_sentence_transformers_alone_asks_for_trust_remote_code(run_dir, tmp_path):
    """sentence-transformers >= 6 imports classes outside its namespace only with the flag (even installed ones)."""
    from sentence_transformers import SentenceTransformer

    out = export_model(str(run_dir), tmp_path / "export")
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(out), device="cpu")
    # what load_sentence_transformer does after its checks
    model = SentenceTransformer(str(out), device="cpu", trust_remote_code=True)
    assert model.encode(["x"]).shape == (1, 32)


def test_an_export_written_before_the_module_moved_still_loads(run_dir, tmp_path):
    """Older exports name ``llm_embed.st_module.LLMEmbedTransformer`` in modules.json."""
    out = export_model(str(run_dir), tmp_path / "export")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["llm_embed.inference.st_module.LLMEmbedTransformer"]
    legacy = [{**modules[0], "type": "llm_embed.st_module.LLMEmbedTransformer"}]
    (out / "modules.json").write_text(json.dumps(legacy))
    got = load_sentence_transformer(out, device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert cosine(got, load_exported(out).encode(TEXTS)).min() > 0.9999


def test_the_loader_passes_trust_remote_code_only_for_llm_embeds_own_module(run_dir, tmp_path):
    out = export_model(str(run_dir), tmp_path / "export")
    modules = json.loads((out / "modules.json").read_text())
    for types in (
        ["modeling_evil.Backdoor"],
        ["llm_embed.st_module.LLMEmbedTransformer", "modeling_evil.Backdoor"],
    ):
        (out / "modules.json").write_text(json.dumps([{**modules[0], "type": t} for t in types]))
        with pytest.raises(UserError, match="modeling_evil.Backdoor"):
            load_sentence_transformer(out)
    (out / "modules.json").write_text(json.dumps(modules))
    config = json.loads((out / "llm_embed.json").read_text())
    (out / "llm_embed.json").write_text(json.dumps({**config, "trust_remote_code": True}))
    with pytest.raises(UserError, match="runs model code shipped in its folder"):
        load_sentence_transformer(out)
    with pytest.raises(UserError, match="not an llm-embed export"):
        load_sentence_transformer(tmp_path)


def test_overwrite_replaces_only_a_finished_export(run_dir, tmp_path):
    out = export_model(str(run_dir), tmp_path / "export", pooling="last")
    with pytest.raises(UserError, match="already exists"):
        export_model(str(run_dir), out)
    export_model(str(run_dir), out, pooling="mean", overwrite=True)
    assert json.loads((out / "llm_embed.json").read_text())["pooling"] == {"type": "mean"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folders left


# -- one-line errors ------------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str]:
    code = run_cli(lambda: cli_main(list(args)))
    return code, capsys.readouterr().err.strip()


def _damaged_run(run_dir: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    run = tmp_path / "damaged"
    shutil.copytree(run_dir, run)
    adapter = run / "model" / "adapter" / "adapter_model.safetensors"
    if how == "truncated":
        adapter.write_bytes(adapter.read_bytes()[:100])
    elif how == "pickle-only":
        adapter.rename(adapter.with_name("adapter_model.bin"))
    elif how == "unfinished":
        shutil.rmtree(run / "model")
    elif how == "bad-json":
        (run / "model" / "encoder.json").write_text("{not json")
    return run


@pytest.mark.parametrize(
    "how, match",
    [
        ("truncated", "adapter is corrupt or incomplete"),
        ("pickle-only", "holds no adapter_model.safetensors"),
        ("unfinished", "did not finish: resume it with"),
        ("bad-json", "encoder.json is corrupt"),
    ],
)
def test_damaged_runs_are_one_line_errors(run_dir, tmp_path, capsys, how, match):
    run = _damaged_run(run_dir, tmp_path, how)
    code, err = _cli(capsys, "--model", str(run), "--out", str(tmp_path / "out"))
    check_error(code, err, match, command="export")
    assert "\n" not in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "./no/such/folder"], "not found"),
        (
            ["--model", "no-such-org/no-such-model"],
            "could not load model",
        ),  # a hub id while offline
        (["--model", "RUN", "--pooling", "median"], "pooling='median' is unknown"),
        (["--model", "RUN", "--prompt", "no slot"], "neither a built-in template"),
        (["--model", "RUN", "--typo"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_line_errors(run_dir, tmp_path, capsys, args, match):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    code, err = _cli(capsys, *args, "--out", str(tmp_path / "out"))
    check_error(code, err, match, command="export")
    assert not (tmp_path / "out").exists()


def test_export_cli_end_to_end(run_dir, tmp_path, run_python):
    proc = run_python(
        "-m", "llm_embed.export", "--model", str(run_dir), "--out", "exported", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported" in proc.stderr and (tmp_path / "exported" / "modules.json").is_file()


def _front_matter(readme: str) -> dict:
    import yaml

    assert readme.startswith("---\n"), readme[:200]
    return yaml.safe_load(readme.split("---\n")[1])


def test_model_card_of_a_run_has_hub_metadata_training_and_scores(run_dir, tmp_path):
    """A run's export says what it was trained on and how well it clusters, next to its baseline."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = {
        "seed_everything": 3,
        "model": {"temperature": 0.05, "lr": 5e-5,
                  "lora": {"init_args": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}}},
        "data": {"pairs_file": ["a.jsonl", "b.jsonl"], "batch_size": 16},
        "trainer": {"max_steps": 100},
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    history = [
        {"step": 0, "stage": "baseline", "scores": {"TaskA": 0.25, "TaskB": 0.5}},
        {"step": 50, "stage": "validation", "scores": {"TaskA": 0.3, "TaskB": 0.55}},
        {"step": 100, "stage": "validation", "scores": {"TaskA": 0.375, "TaskB": 0.625}},
    ]
    (run / "mteb_scores.json").write_text(
        json.dumps({"tasks": ["TaskA", "TaskB"], "history": history})
    )
    out = export_model(
        str(run), tmp_path / "export", command="python -m llm_embed.export --model R"
    )
    readme = (out / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["library_name"] == "sentence-transformers" and "llm-embed" in meta["tags"]
    assert "base_model" not in meta and "license" not in meta  # a local tiny model: unknown
    assert "| TaskA | 0.2500 | 0.3750 (step 100) |" in readme  # the last evaluation, not step 50
    assert "| TaskB | 0.5000 | 0.6250 (step 100) |" in readme
    assert "`a.jsonl`, `b.jsonl`" in readme and "100 x 16 pairs" in readme
    assert "temperature 0.05" in readme and "r=4, alpha=8" in readme
    assert "Made with: `python -m llm_embed.export --model R`" in readme
    assert (out / "training_config.yaml").read_text() == (run / "config.yaml").read_text()
    assert not (out / "NOTICE").exists()


@pytest.mark.parametrize(
    "scores", ['{"history": [', '{"history": [{"stage": "validation"}]}', "[1]"]
)
def test_an_unreadable_scores_file_leaves_the_scores_out_of_the_card(
    run_dir, tmp_path, caplog, scores
):
    """The export is still made: the scores are a note on the card, not part of the model."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.yaml").write_text("seed_everything: 0\n")  # a run folder: config + model/
    (run / "mteb_scores.json").write_text(scores)
    with caplog.at_level("WARNING", logger="llm_embed"):
        out = export_model(str(run), tmp_path / "export")
    assert "Clustering quality" not in (out / "README.md").read_text()
    assert "is not a readable scores file" in caplog.text


def test_model_card_of_a_packaged_base_carries_its_terms(tmp_path):
    from types import SimpleNamespace

    from llm_embed.inference.model_card import base_model_terms, model_card

    def card(backbone: str) -> str:
        config = {"backbone": backbone, "pooling": {"type": "last"}, "prompt": "{text}",
                  "max_text_tokens": 100, "normalize": True, "layer": -1}  # fmt: skip
        return model_card(SimpleNamespace(config_dict=config, embed_dim=8), "some/run")

    gemma = card("gemma3-270m")
    assert _front_matter(gemma) | {"tags": None} == {
        "library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
        "tags": None, "base_model": "google/gemma-3-270m", "license": "gemma",
    }  # fmt: skip
    assert "Gemma Terms of Use found at ai.google.dev/gemma/terms" in gemma
    from llm_embed.inference.model_card import write_card

    fake = SimpleNamespace(config_dict={"backbone": "gemma3-270m", "pooling": {"type": "last"},
                                        "prompt": "{text}", "max_text_tokens": 100,
                                        "normalize": True, "layer": -1}, embed_dim=8)  # fmt: skip
    write_card(tmp_path, fake, "gemma3-270m")
    assert "ai.google.dev/gemma/terms" in (tmp_path / "NOTICE").read_text()
    smol = card("smollm2-135m-instruct")
    assert _front_matter(smol)["license"] == "apache-2.0" and "Gemma" not in smol
    assert base_model_terms("Qwen/Qwen3-0.6B")["base_model"] == "Qwen/Qwen3-0.6B"
    assert _front_matter(card("Qwen/Qwen3-0.6B"))["base_model"] == "Qwen/Qwen3-0.6B"


def test_truncate_dim_travels_with_the_export_and_sentence_transformers_cuts_further(
    run_dir, tmp_path
):
    from sentence_transformers import SentenceTransformer

    out = export_model(str(run_dir), tmp_path / "export", truncate_dim=16)
    reference = load_model(str(run_dir), truncate_dim=16).encode(TEXTS)
    model = load_sentence_transformer(out, device="cpu")
    got = model.encode(TEXTS, convert_to_tensor=True)
    assert got.shape == (len(TEXTS), 16) and cosine(got, reference).min() > 0.9999
    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=True, truncate_dim=4)
    four = st.encode(TEXTS, convert_to_tensor=True)
    assert four.shape == (len(TEXTS), 4)
    assert cosine(four, reference[:, :4]).min() > 0.9999  # sentence-transformers' own truncate_dim


def test_bf16_inference_travels_with_the_export(run_dir, tmp_path):
    out = export_model(str(run_dir), tmp_path / "export", inference_dtype="bfloat16")
    assert json.loads((out / "llm_embed.json").read_text())["inference_dtype"] == "bfloat16"
    reference = load_model(str(run_dir), inference_dtype="bfloat16").encode(TEXTS)
    exact = load_model(str(run_dir)).encode(TEXTS)
    got = load_sentence_transformer(out, device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert cosine(got, reference).min() > 0.9999  # the sentence-transformers path autocasts too
    assert not torch.allclose(got, exact, atol=1e-6) and cosine(got, exact).min() > 0.99


def test_a_calibrated_scale_travels_with_the_export(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (config,) = run.rglob("encoder.json")
    calibrated = load_model(str(run))
    calibrated.calibrate([f"to move {w} from one place to another" for w in "abcdefgh"])
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "dim_scale": calibrated.dim_scale}))
    reference = load_model(str(run)).encode(TEXTS)
    plain = load_model(str(run_dir)).encode(TEXTS)
    assert cosine(reference, plain).min() < 0.999  # the scale changes the vectors
    out = export_model(str(run), tmp_path / "export")
    assert json.loads((out / "llm_embed.json").read_text())["dim_scale"] == calibrated.dim_scale
    got = load_sentence_transformer(out, device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert cosine(got, reference).min() > 0.9999


def test_the_openvino_graph_travels_with_the_export(run_dir, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from llm_embed.inference import openvino_graph

    out = export_model(str(run_dir), tmp_path / "export", inference_backend="openvino")
    assert (out / "openvino" / "openvino_model.xml").is_file()
    assert json.loads((out / "llm_embed.json").read_text())["inference_backend"] == "openvino"
    reference = load_model(str(run_dir), inference_backend="torch").encode(TEXTS)

    def no_conversion(*args):
        raise AssertionError("the export's saved graph should have been used")

    monkeypatch.setattr(openvino_graph, "convert", no_conversion)
    st = load_sentence_transformer(out, device="cpu", backend="openvino")
    (module,) = st
    assert module.encoder.inference_backend == "openvino"
    got = st.encode(TEXTS, convert_to_tensor=True)
    assert cosine(got, reference).min() > 0.9999
    assert cosine(load_exported(out).encode(TEXTS), reference).min() > 0.9999
    # sentence-transformers' default backend is PyTorch, and ONNX is not what the folder holds
    (plain,) = load_sentence_transformer(out, device="cpu")
    assert plain.encoder.inference_backend == "torch"
    with pytest.raises(ValueError, match="runs on backend 'torch' or 'openvino'"):
        SentenceTransformer(str(out), device="cpu", trust_remote_code=True, backend="onnx")


def test_openvino_export_of_the_packaged_model_matches_pytorch(tmp_path):
    """End to end on the real SmolLM2: sentence-transformers' OpenVINO backend on real texts."""
    texts = [
        "The Bank of England held interest rates at 4.5% on Thursday.",
        "a small domesticated carnivorous mammal with soft fur",
        "to move quickly on foot",
        "Chelsea won the league after a late goal at Stamford Bridge",
    ]
    kwargs = {"pooling": "weighted_mean", "prompt": "clustering"}
    out = export_model(
        "smollm2-135m-instruct", tmp_path / "export", inference_backend="openvino", **kwargs
    )
    reference = load_model("smollm2-135m-instruct", **kwargs).encode(texts)
    st = load_sentence_transformer(out, device="cpu", backend="openvino")
    assert cosine(st.encode(texts, convert_to_tensor=True), reference).min() > 0.999


def test_a_full_disk_is_one_line_before_anything_is_written(run_dir, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code, err = _cli(capsys, "--model", str(run_dir), "--out", str(tmp_path / "out"))
    check_error(code, err, "needs", "are free", "the disk is full", command="export")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_disk_that_fills_while_writing_is_one_line_and_leaves_no_temp(
    run_dir, tmp_path, capsys, monkeypatch
):
    """safetensors reports a full disk in its own exception type, not as an OSError."""
    from llm_embed.inference import st_module

    def full(self, output_path, *args, **kwargs):
        (Path(output_path) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError(
            "Error while serializing: IoError(No space left on device (os error 28))"
        )

    monkeypatch.setattr(st_module.LLMEmbedTransformer, "save", full)
    code, err = _cli(capsys, "--model", str(run_dir), "--out", str(tmp_path / "out"))
    check_error(code, err, "No space left on device", "free space", command="export")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_killed_exports_temp_folder_is_removed_by_the_next_one(run_dir, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".out.{dead}-abcd1234.tmp"  # what a killed export of `out` leaves
    (stale / "openvino").mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    legacy = tmp_path / ".out.k3j_9xyz.tmp"  # the same, from before temp names carried a pid
    legacy.mkdir()
    export_model(str(run_dir), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_export_is_readable_like_any_file_the_user_writes(run_dir, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = export_model(str(run_dir), tmp_path / "shared")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["model.safetensors"] == 0o644, modes  # safetensors alone would write 0600
    assert all(m in (0o644, 0o755) for m in modes.values()), modes
    old = os.umask(0o077)  # a private umask is honoured too
    try:
        out = export_model(str(run_dir), tmp_path / "private")
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o600


def test_weights_that_give_nan_are_refused_and_nothing_is_written(nan_model_dir, tmp_path, capsys):
    code, err = _cli(capsys, "--model", str(nan_model_dir), "--out", str(tmp_path / "out"))
    check_error(code, err, "non-finite vectors", command="export")
    assert not (tmp_path / "out").exists()


def test_a_runs_adapter_is_readable_like_any_file_the_user_writes(run_dir):
    """peft writes its safetensors file private (0600); a run's adapter follows the umask."""
    import stat

    adapter = run_dir / "model" / "adapter"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [adapter, *adapter.iterdir()]}
    assert modes["adapter_model.safetensors"] == 0o644 and modes["adapter"] == 0o755, modes
