"""Generate the training pairs of a config without training: ``python -m llm_embed.synth --config cfg.yaml``.

Takes the ``data:`` section of a fit config (other sections are ignored) or a file holding only
that section, so the pairs a run trains on and the pairs made here share one cache entry. Any
value can be overridden (``--data.num_source 500``, ``--data.generator.init_args.batch_size 64``).
Killing it and starting again continues where it stopped. At the end it prints the filter report
that is also stored in the manifest beside the pairs.

Examples::

    python -m llm_embed.synth --config configs/default.yaml        # the committed default pairs
    python -m llm_embed.synth --config configs/default.yaml --data.num_source 200 --data.cache_dir data/cache
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from llm_embed.cli import run_cli
from llm_embed.data.filters import REASONS
from llm_embed.errors import UserError

log = logging.getLogger("llm_embed.synth")


def _data_section(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config {path} not found: check the path") from None
    except UnicodeDecodeError as e:
        raise UserError(
            f"config {path} is not UTF-8 (byte {e.start}): re-save it as UTF-8"
        ) from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config {path} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        raise UserError(f"config {path} has no data: section: give a fit config or a synth config")
    return config["data"]


def format_report(manifest: dict[str, Any]) -> str:
    """The filter report of a manifest as a few aligned lines."""
    report = manifest.get("report") or {}
    if not report:
        return f"{manifest.get('num_pairs', '?')} pairs ({manifest.get('generator')}: no filter report)"
    gens = max(1, report["generations"])
    lines = [
        f"sources {report['sources']}, generations {report['generations']}, "
        f"kept {report['kept']} ({report['kept'] / max(1, report['sources']):.1%} of sources), "
        f"dropped after retries {report['dropped']}",
        "rejected generations by filter:",
    ]
    for reason in REASONS:
        count = report["rejected"].get(reason, 0)
        lines.append(f"  {reason:<17} {count:>6}  ({count / gens:.1%} of generations)")
    return "\n".join(lines)


def cli_main(argv: list[str] | None = None) -> None:
    """Parse ``--config`` (+ overrides), generate the pairs into the cache, print the report."""
    import yaml
    from jsonargparse import ActionConfigFile, ArgumentParser

    from llm_embed.data.datamodule import PairDataModule
    from llm_embed.data.pairs import read_manifest

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:  # keep only the data section of a full fit config
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UserError("--config needs a file: python -m llm_embed.synth --config cfg.yaml")
        argv[i + 1] = yaml.safe_dump({"data": _data_section(argv[i + 1])})
    parser = ArgumentParser(
        prog="python -m llm_embed.synth", description=__doc__.split("\n\n")[0], exit_on_error=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a fit or synth config (YAML)")
    parser.add_class_arguments(PairDataModule, "data", sub_configs=True)
    config = parser.parse_args(argv)
    data = parser.instantiate_classes(config).data
    if data.pairs_file is not None:
        raise UserError(
            f"the config trains on pairs_file {data.pairs_file}: there is nothing to generate; "
            "remove data.pairs_file to generate pairs from data.source"
        )
    data.prepare_data()
    path = data.cache_path
    manifest = read_manifest(path) or {}
    print(f"pairs: {path}")
    print(format_report(manifest))


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
