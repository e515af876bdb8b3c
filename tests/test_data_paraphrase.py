"""LLM paraphrase pairs: filters on crafted outputs, retries, resume after a crash, cache keys."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_errors import check_error

from llm_embed.data.filters import FilterSettings, clean, latin_share, rejection
from llm_embed.data.generators import AugmentPairs, cache_key, ensure_pairs_file
from llm_embed.data.pairs import read_manifest, read_pairs
from llm_embed.data.paraphrase import DEFAULT_INSTRUCTIONS, LLMParaphrasePairs

SRC = "the committee approved the new budget for public schools"
INSTR = "Paraphrase this sentence in simpler words. Reply with the paraphrase only.\n\n" + SRC
S = FilterSettings()


@pytest.mark.parametrize(
    ("output", "finished", "reason"),
    [
        ("", True, "empty"),
        ("   \n ", True, "empty"),
        ("The committee said yes to more money for schools", False, "truncated"),
        ("Sure! Here is the paraphrase: the group agreed to fund schools.", True, "chatter"),
        ("Here's a simpler version of the sentence you gave me.", True, "chatter"),
        ("I'm sorry, I cannot help with that request today.", True, "chatter"),
        ("Paraphrase this sentence in simpler words.", True, "instruction_echo"),
        ("Paraphrase the sentence in simple words please.", True, "instruction_echo"),
        ("A teacher would explain that the group agreed to fund schools.", True, "meta"),
        ("The sentence is about a committee and money for schools.", True, "meta"),
        ("Money for schools is a metaphor for hope in the community.", True, "meta"),
        ("What a delightful question, the budget was approved.", True, "chatter"),
        ("The committee approved the new budget for public schools.", True, "copy"),
        ('"the committee approved the new budget for public school"', True, "copy"),
        ("委员会批准了公立学校的新预算。这是好消息", True, "script"),
        ("Комитет одобрил новый бюджет для государственных школ.", True, "script"),
        ("Schools get money.", True, "too_short"),
        (" ".join(["word"] * 81), True, "too_long"),
    ],
)
def test_each_filter_names_its_reason(output, finished, reason) -> None:
    assert rejection(SRC, output, INSTR, S, finished=finished)[0] == reason


def test_kept_outputs_are_cleaned() -> None:
    reason, cleaned = rejection(
        SRC,
        'Paraphrase: "The group agreed to give schools more money."\n\nNote: simpler.',
        INSTR,
        S,
    )
    assert reason is None and cleaned == "The group agreed to give schools more money."
    # a cut-off answer keeps its complete sentences only
    cut = "The group agreed to fund schools. They also said that the"
    assert rejection(SRC, cut, INSTR, S, finished=False) == (
        None,
        "The group agreed to fund schools.",
    )
    assert clean("  a  b \n c ") == "a b c"


def test_meta_words_that_the_source_uses_are_allowed() -> None:
    source = "pronounce a sentence on somebody in a court of law"
    output = "The judge handed down a sentence to the man in court."
    assert rejection(source, output, "Rewrite: " + source, S) == (None, output)
    assert rejection(SRC, output, INSTR, S)[0] == "meta"


def test_duplicates_are_caught_against_kept_positives() -> None:
    seen = {"the group agreed to fund schools"}
    assert (
        rejection(SRC, "The group agreed to fund schools!", INSTR, S, seen=seen)[0] == "duplicate"
    )
    assert rejection(SRC, "The group agreed to fund schools!", INSTR, S, seen=set())[0] is None


def test_latin_share_and_settings_checks() -> None:
    assert latin_share("abc") == 1.0 and latin_share("123 !") == 1.0
    assert latin_share("ab日本") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="min_words"):
        FilterSettings(min_words=10, max_words=5)
    with pytest.raises(ValueError, match="max_similarity"):
        FilterSettings(max_similarity=0)


class ScriptedParaphrase(LLMParaphrasePairs):
    """``sample`` replaced by a seeded fake: bad outputs first for some texts, so retries happen."""

    def __init__(self, fail_after_chunks: int | None = None, **kw) -> None:
        super().__init__(progress=False, **kw)
        self.calls: list[list[str]] = []
        self.fail_after_chunks = fail_after_chunks

    def sample(self, prompts, *, seed):
        if self.fail_after_chunks is not None and len(self.calls) >= self.fail_after_chunks:
            raise KeyboardInterrupt("killed")
        self.calls.append(list(prompts))
        rng = random.Random(seed)
        out = []
        for p in prompts:
            source = p.rsplit("\n\n", 1)[-1]
            roll = rng.random()
            if roll < 0.3:
                out.append(("Sure! " + source, True))  # chatter
            elif roll < 0.4:
                out.append((source, True))  # copy
            else:
                words = source.split()
                out.append(
                    (" ".join(["indeed", *reversed(words), str(rng.randrange(10**6))]), True)
                )
        return out


def _texts(n: int) -> list[str]:
    rng = random.Random(1)
    vocab = "alpha beta gamma delta river stone cloud market school budget tree light".split()
    return [" ".join(rng.sample(vocab, 6)) + f" {i}" for i in range(n)]


def test_retries_are_bounded_and_every_rejection_is_counted() -> None:
    gen = ScriptedParaphrase(batch_size=8, max_retries=2)
    texts = _texts(40)
    pairs = gen.generate(texts, seed=3)
    report = gen.report
    rejected = sum(report["rejected"].values())
    # every rejection was either retried (one more generation) or ended in a drop
    assert report["generations"] == len(texts) + rejected - report["dropped"]
    assert report["dropped"] > 0
    assert report["kept"] == len(pairs) == len(texts) - report["dropped"]
    assert report["rejected"]["chatter"] > 0 and report["rejected"]["copy"] > 0
    assert all(len(call) <= 8 for call in gen.calls)
    assert len(gen.calls) <= 3 * 5  # 5 chunks, at most 1 + 2 retries each
    anchors = [p["anchor"] for p in pairs]
    assert anchors == [t for t in texts if t in set(anchors)]  # input order
    assert all(0 <= p["instruction"] < len(DEFAULT_INSTRUCTIONS) for p in pairs)
    assert pairs == ScriptedParaphrase(batch_size=8, max_retries=2).generate(texts, seed=3)
    assert pairs != ScriptedParaphrase(batch_size=8, max_retries=2).generate(texts, seed=4)


def test_resume_after_a_crash_loses_nothing_and_repeats_nothing(tmp_path) -> None:
    texts = _texts(50)
    progress = tmp_path / "p.progress.jsonl"
    full = ScriptedParaphrase(batch_size=8).generate(texts, seed=0)

    crashed = ScriptedParaphrase(batch_size=8, fail_after_chunks=4)
    with pytest.raises(KeyboardInterrupt):
        crashed.generate(texts, seed=0, resume_file=progress)
    lines = progress.read_text().splitlines()
    assert 1 <= len(lines) <= 4
    with progress.open("a") as f:
        f.write('{"chunk": 9, "texts": "torn')  # a write cut off by the kill

    resumed = ScriptedParaphrase(batch_size=8)
    pairs = resumed.generate(texts, seed=0, resume_file=progress)
    assert pairs == full
    finished_before = {json.loads(line)["chunk"] for line in lines}
    sampled_sources = {p.rsplit("\n\n", 1)[-1] for call in resumed.calls for p in call}
    chunk_of = {t: i // 8 for i, t in enumerate(texts)}
    assert not {chunk_of[t] for t in sampled_sources} & finished_before  # nothing sampled twice
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [r["chunk"] for r in records] == list(range(7))  # torn line replaced, no duplicates


def test_cache_key_changes_with_every_setting() -> None:
    texts = _texts(10)
    base = LLMParaphrasePairs()
    variants = [
        LLMParaphrasePairs(temperature=0.7),
        LLMParaphrasePairs(top_p=0.95),
        LLMParaphrasePairs(max_new_tokens=60),
        LLMParaphrasePairs(model="other-instruct"),
        LLMParaphrasePairs(instructions=["Say it again: {text}"]),
        LLMParaphrasePairs(batch_size=16),
        LLMParaphrasePairs(max_retries=0),
        LLMParaphrasePairs(filters=FilterSettings(min_words=2)),
    ]
    keys = {cache_key(texts, g, num_source=10, seed=0) for g in [base, *variants]}
    assert len(keys) == len(variants) + 1
    assert cache_key(texts, base, num_source=10, seed=0) == cache_key(
        texts, LLMParaphrasePairs(device="cpu", progress=False), num_source=10, seed=0
    )  # where and how it runs is not part of the key
    assert cache_key(texts, base, num_source=10, seed=0) != cache_key(
        texts, AugmentPairs(), num_source=10, seed=0
    )


def test_ensure_pairs_file_writes_report_and_removes_progress(tmp_path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("\n".join(_texts(20)))
    gen = ScriptedParaphrase(batch_size=8)
    path = ensure_pairs_file(str(src), gen, num_source=20, seed=0, cache_dir=tmp_path / "cache")
    manifest = read_manifest(path)
    assert manifest["report"]["kept"] == len(read_pairs(path)) == manifest["num_pairs"]
    assert manifest["settings"]["temperature"] == 0.6 and manifest["generator"] == "paraphrase"
    assert not list((tmp_path / "cache").glob("*.progress.jsonl"))
    calls = len(gen.calls)
    assert (
        ensure_pairs_file(str(src), gen, num_source=20, seed=0, cache_dir=tmp_path / "cache")
        == path
    )
    assert len(gen.calls) == calls  # a cache hit samples nothing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instructions": ["no placeholder"]}, "must contain {text}"),
        ({"instructions": []}, "is empty"),
        ({"temperature": 0}, "temperature=0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"batch_size": 0}, "batch_size >= 1"),
    ],
)
def test_bad_settings_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LLMParaphrasePairs(**kwargs)


def test_sampling_with_a_real_model_is_seeded(tiny_model_dir, tmp_path) -> None:
    """The real ``sample`` path (chat template, left padding, sampling) on the tiny random model."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "tiny-chat"
    shutil.copytree(tiny_model_dir, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}</s>"
    tok.save_pretrained(folder)
    gen = LLMParaphrasePairs(model=str(folder), max_new_tokens=8, batch_size=4, progress=False)
    prompts = ["a man is driving a car", "the cat sat on the mat", "stocks fell"]
    first, again = gen.sample(prompts, seed=5), gen.sample(prompts, seed=5)
    assert first == again and len(first) == 3
    assert all(isinstance(t, str) and isinstance(done, bool) for t, done in first)
    assert gen.sample(prompts, seed=6) != first
    pairs = gen.generate(prompts, seed=0)  # random tokens: whatever survives the filters
    assert gen.report["generations"] >= 3 and len(pairs) == gen.report["kept"]


def test_model_without_chat_template_is_refused(tiny_model_dir) -> None:
    from llm_embed.errors import UserError

    with pytest.raises(UserError, match="no chat template"):
        LLMParaphrasePairs(model=tiny_model_dir).sample(["hello there"], seed=0)


class CLIParaphrase(ScriptedParaphrase):
    """What a config can name (explicit arguments for jsonargparse)."""

    def __init__(self, batch_size: int = 4, max_retries: int = 2) -> None:
        super().__init__(batch_size=batch_size, max_retries=max_retries)


def test_synth_cli_generates_from_a_fit_config_and_reports(tmp_path, capsys) -> None:
    from llm_embed._cli import run_cli
    from llm_embed.synth import cli_main

    src = tmp_path / "src.txt"
    src.write_text("\n".join(_texts(6)))
    config = tmp_path / "fit.yaml"
    config.write_text(
        "model:\n  lr: 1.0e-4\ntrainer:\n  max_steps: 3\n"  # ignored by synth
        "data:\n"
        f"  source: {src}\n  num_source: 6\n  cache_dir: {tmp_path / 'cache'}\n"
        "  generator:\n    class_path: test_data_paraphrase.CLIParaphrase\n"
        "    init_args: {batch_size: 4}\n"
    )
    code = run_cli(
        lambda: cli_main(["--config", str(config), "--data.generator.init_args.max_retries", "1"])
    )
    out = capsys.readouterr().out
    manifest_file = next((tmp_path / "cache").glob("paraphrase-src-*.manifest.json"))
    manifest = json.loads(manifest_file.read_text())
    assert code == 0, out
    assert manifest["settings"]["max_retries"] == 1 and manifest["settings"]["batch_size"] == 4
    report = manifest["report"]
    assert report["sources"] == 6 and report["kept"] == manifest["num_pairs"] > 0
    assert f"kept {report['kept']} " in out and "rejected generations by filter" in out
    assert out.index("empty") < out.index("duplicate")  # reasons in filter order


def test_synth_cli_takes_config_equals_and_overlays_like_fit(tmp_path, capsys) -> None:
    """``--config=base.yaml --config overlay.yaml``: the later file wins, as in LightningCLI."""
    from llm_embed._cli import run_cli
    from llm_embed.synth import cli_main

    src = tmp_path / "src.txt"
    src.write_text("\n".join(_texts(6)))
    base = tmp_path / "base.yaml"
    base.write_text(
        f"data:\n  source: {src}\n  num_source: 6\n  cache_dir: {tmp_path / 'cache'}\n"
        "  generator:\n    class_path: test_data_paraphrase.CLIParaphrase\n"
        "    init_args: {batch_size: 4, max_retries: 2}\n"
    )
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("data:\n  num_source: 5\n")
    code = run_cli(lambda: cli_main([f"--config={base}", "--config", str(overlay)]))
    out = capsys.readouterr().out
    assert code == 0, out
    manifest = json.loads(next((tmp_path / "cache").glob("*.manifest.json")).read_text())
    assert manifest["report"]["sources"] == 5 and manifest["settings"]["max_retries"] == 2
    assert out.startswith("pairs: ") and "rejected generations by filter" in out


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("data:\n  source: [unclosed\n  seed: 1\n", "is not valid YAML: "),
        ("trainer: {}\n", "has no data: section"),
        ("data:\n  pairs_file: PAIRS\n", "nothing to generate"),
        ("data:\n  num_sources: 3\n", "num_sources"),
    ],
)
def test_synth_cli_bad_input_is_one_line(tmp_path, capsys, config_text, message) -> None:
    from llm_embed._cli import run_cli
    from llm_embed.synth import cli_main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"anchor": "a b", "positive": "a c"}\n')
    config = tmp_path / "bad.yaml"
    config.write_text(config_text.replace("PAIRS", str(pairs)))
    code = run_cli(lambda: cli_main(["--config", str(config)]))
    err = capsys.readouterr().err.strip()
    check_error(code, err, message, command="synth")
    assert "\n" not in err


def test_the_committed_pair_set_is_what_its_config_names(monkeypatch) -> None:
    """The default config's data section finds data/pairs/ without generating, and its report adds up."""
    import yaml

    from llm_embed.data.datamodule import PairDataModule

    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "configs" / "default.yaml").read_text(encoding="utf-8"))["data"]
    generator = LLMParaphrasePairs(**data.pop("generator")["init_args"])
    monkeypatch.setattr(generator, "generate", lambda *a, **k: pytest.fail("generated again"))
    dm = PairDataModule(**{**data, "cache_dir": str(root / data["cache_dir"])}, generator=generator)
    dm.prepare_data()
    dm.setup("fit")
    manifest = json.loads(dm.cache_path.with_suffix(".manifest.json").read_text(encoding="utf-8"))
    report = manifest["report"]
    pairs = len(dm.train_pairs) + len(dm.val_pairs)
    assert pairs == manifest["num_pairs"] == report["kept"] > 2000
    assert report["sources"] == manifest["num_source"] == report["kept"] + report["dropped"]
    assert report["generations"] == report["kept"] + sum(report["rejected"].values())
    assert manifest["settings"]["model"] == "smollm2-135m-instruct"
    assert all(p["anchor"] != p["positive"] for p in dm.train_pairs)
