"""Shared plumbing of the commands (not a command): one parser style, quiet library logs, one-line errors, exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_embed.errors import UserError, first_line

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def command_parser(prog: str, doc: str) -> ArgumentParser:
    """A jsonargparse parser whose ``--help`` is the command module's docstring.

    It gives every command ``--config file.yaml`` (repeatable: later files and flags override
    earlier ones) and ``--print_config``, as LightningCLI gives ``fit``; the keys of a config file
    are the options' names with underscores (``max_documents: 500``). Parse errors raise
    instead of exiting, and :func:`run_cli` turns them into one ``error:`` line and exit code 2.
    """
    from jsonargparse import ActionConfigFile
    from jsonargparse import ArgumentParser as Parser

    paragraphs = doc.split("\n\n")
    parser = Parser(
        prog=prog,
        description=paragraphs[0],
        epilog="\n\n".join(paragraphs[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of these options")
    return parser


def parse(parser: ArgumentParser, argv: Sequence[str] | None) -> Any:
    """``parser.parse_args(argv)`` after :func:`check_config_files`, so a broken YAML file is named."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check_config_files(argv)
    return parser.parse_args(argv)


def add_distributed_options(parser: ArgumentParser) -> None:
    """``--devices``, ``--num-nodes``, ``--accelerator``: inference over several processes, launched as training is."""
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="processes (one per GPU) per node; > 1 splits the work (Lightning Fabric, DDP; "
        "torchrun and SLURM launches are joined) (default: 1)",
    )
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes (default: 1)")
    parser.add_argument(
        "--accelerator",
        default="auto",
        help="accelerator of the processes when --devices > 1: auto, gpu or cpu (default: auto)",
    )


def add_model_options(parser: ArgumentParser) -> None:
    """``--model`` (required), ``--pooling``, ``--prompt``, ``--truncate-dim``, ``--layer``, the inference options and ``--trust-remote-code``: the same flags wherever a command loads a model."""
    from llm_embed.inference.load import MODEL_HELP

    parser.add_argument("--model", type=str, required=True, help=MODEL_HELP)
    parser.add_argument(
        "--pooling",
        type=str | None,
        default=None,
        help="override the pooling (default: the run's, or last)",
    )
    parser.add_argument(
        "--prompt",
        type=str | None,
        default=None,
        help="override the prompt name or template (default: the run's, or clustering)",
    )
    parser.add_argument(
        "--truncate-dim",
        type=int | None,
        default=None,
        help="keep the first N dimensions of each vector (Matryoshka; default: all)",
    )
    parser.add_argument(
        "--layer",
        type=int | None,
        default=None,
        help="hidden layer to pool (-1 = last, 0 = the embeddings; default: the run's, or -1)",
    )
    parser.add_argument(
        "--inference-dtype",
        type=str | None,
        default=None,
        help="float32 (exact) or bfloat16 (autocast, ~3x faster on CPUs with bf16 units); "
        "default: the run's, or float32",
    )
    parser.add_argument(
        "--inference-backend",
        type=str | None,
        default=None,
        help="torch, or openvino (the backbone as an OpenVINO graph: the same float32 numbers, "
        "~2x faster on a CPU); default: the run's, or torch",
    )
    add_trust_remote_code(parser)


def model_options(args: Any) -> dict[str, Any]:
    """The values of :func:`add_model_options`' flags but ``--model``, as the loaders' keywords."""
    return {
        "pooling": args.pooling,
        "prompt": args.prompt,
        "truncate_dim": args.truncate_dim,
        "layer": args.layer,
        "inference_dtype": args.inference_dtype,
        "inference_backend": args.inference_backend,
        "trust_remote_code": args.trust_remote_code,
    }


def add_trust_remote_code(parser: ArgumentParser) -> None:
    """``--trust-remote-code``: the one switch that lets a model folder's own Python code run."""
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let the model run Python code shipped in its folder (read that code first)",
    )


def add_options(parser: ArgumentParser, options: type) -> None:
    """Add a flag per field of the dataclass ``options``, its help from the field's metadata.

    ``max_documents`` becomes ``--max-documents`` (metadata ``flag`` names another); a bool that
    defaults to False is a switch, one that defaults to True a ``--no-...`` switch; metadata
    ``parser`` holds extra ``add_argument`` keywords (``action="append"``).
    """
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):
        meta = dict(field.metadata)
        flag = meta.get("flag", "--" + field.name.replace("_", "-"))
        kwargs: dict[str, Any] = {"dest": field.name, "help": meta["help"]}
        if hints[field.name] is bool:
            kwargs["action"] = "store_false" if field.default else "store_true"
        else:
            kwargs.update(type=hints[field.name], default=field.default)
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
        kwargs.update(meta.get("parser", {}))
        parser.add_argument(flag, **kwargs)


def config_paths(argv: Sequence[str]) -> list[str]:
    """The values of ``--config X`` / ``--config=X`` in a command line."""
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_file(path: str | Path) -> None:
    """Raise a one-line UserError naming the file, line and column if a YAML config cannot be read.

    jsonargparse reports a YAML syntax error without the file's name (``"<unicode string>"``)
    and lets a non-UTF-8 byte escape as a traceback.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(
            f"config {path} is not UTF-8 text (byte {err.start}, line {line}): save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(
            f"config {path} is not valid YAML: {err.problem or err.context}{where}: fix the syntax there"
        ) from None
    except yaml.YAMLError as err:
        raise UserError(
            f"config {path} is not valid YAML: {first_line(err, 500, lines=2)}"
        ) from None
    if not isinstance(data, dict):
        what = "is empty" if data is None else f"holds a YAML {_yaml_kind(data)}"
        raise UserError(
            f"config {path} {what}: a config maps option names to values "
            "(e.g. 'trainer:' then '  max_steps: 100'); --print_config shows a complete one"
        )


def _yaml_kind(data: Any) -> str:
    return "list" if isinstance(data, list) else f"scalar ({type(data).__name__})"


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping (:func:`check_config_file` refuses anything else)."""
    import yaml

    check_config_file(path)
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def check_config_files(argv: Sequence[str]) -> None:
    """:func:`check_config_file` for every ``--config`` that names a file (jsonargparse reports the rest)."""
    for value in config_paths(argv):
        if Path(value).is_file():
            check_config_file(value)


def require_section(argv: Sequence[str], section: str, hint: str) -> None:
    """Check the ``--config`` files of a command line (:func:`check_config_file`), and that one of
    them has ``section`` unless a ``--section.key`` flag sets it: a config that lacks the section
    would silently run on defaults."""
    check_config_files(argv)
    configs = [path for path in config_paths(argv) if Path(path).is_file()]
    if not configs or any(arg.startswith(f"--{section}.") for arg in argv):
        return
    if not any(isinstance(read_config(path).get(section), dict) for path in configs):
        raise UserError(f"config {configs[-1]} has no {section}: section: {hint}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    A plain StreamHandler keeps the stream it was made with; after one CLI call made in-process
    (notebooks, tests capturing stderr), that stream may be closed and every later log line
    would end in a "Logging error" traceback.
    """

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def run_cli(main: Callable[[], object]) -> int:
    """Run a CLI entry point; bad input ends as ``error: <one line>`` on stderr and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Our own logs at INFO; libraries keep their handlers (Lightning already prints its own).
    pkg = logging.getLogger("llm_embed")
    if not any(isinstance(h, _StderrHandler) for h in pkg.handlers):  # once per process
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        )
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
    pkg.propagate = False
    try:  # weight-loading progress bars drown the training log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        main()
    except Exception as err:
        line = error_line(err)
        if line is None:
            raise  # a bug: keep its traceback
        print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


# Fixes for the OS errors a user meets with paths and disks, by errno.
_OS_FIXES = {
    errno.EACCES: "choose a path you can write to, or fix its permissions",
    errno.EPERM: "choose a path you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENOSPC: "the disk is full: free space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free space or write somewhere else",
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "the path is a folder: give a file path",
    errno.ENAMETOOLONG: "use a shorter path",
}


def error_line(err: BaseException) -> str | None:
    """The one line a user sees for ``err``, or None for an error that is a bug (traceback).

    Bad input (UserError), bad flags or configs (jsonargparse), OS errors of paths and disks,
    Lightning's configuration errors and the ``ValueError`` a constructor raises for a bad
    argument are the user's to fix; anything else is ours.
    """
    if isinstance(err, UserError):
        return first_line(err, 500, lines=2)
    name, module = type(err).__name__, type(err).__module__
    if name in ("ArgumentError", "NSKeyError") or "jsonargparse" in module:
        return f"bad config or argument: {first_line(err, 500, lines=2)} (see --help)"
    if isinstance(err, OSError) and err.errno in _OS_FIXES:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}: {_OS_FIXES[err.errno]}"
    if name == "MisconfigurationException" or (
        isinstance(err, ValueError) and _raised_by_a_constructor_check(err)
    ):
        return f"{first_line(err, 500, lines=2)}: fix that option and run again"
    return None


def _raised_by_a_constructor_check(err: BaseException) -> bool:
    """True if ``err`` was raised in llm-embed's or Lightning's own code (their argument checks),
    not deep inside torch or numpy, where a ValueError is a bug to report, not an option to fix."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    parts = Path(tb.tb_frame.f_code.co_filename).parts
    return "llm_embed" in parts or "lightning" in parts
