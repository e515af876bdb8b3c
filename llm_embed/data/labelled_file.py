"""Read a user's labelled texts (``.jsonl``, ``.csv``, ``.tsv`` or ``.parquet``) for clustering.

The whole file is read and checked before anything runs, so a bad file stops a command in one
line that names the file, the row and the fix, before any output exists. A row is a text and its
label; labels are compared as strings (``1`` and ``"1"`` are one label).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_embed.errors import UserError, first_line

SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")


def is_labelled_file(name: str) -> bool:
    """True if a task name is meant as a labelled file (it ends in one of :data:`SUFFIXES`)."""
    return name.lower().endswith(SUFFIXES)


def read_labelled_file(
    path: str | Path, *, text_field: str = "text", label_field: str = "label"
) -> tuple[list[str], list[str]]:
    """The texts and labels of ``path``, in file order.

    Raises:
        UserError: The file is missing, of an unknown kind, not UTF-8, lacks a column, holds an
            empty text or label, has fewer than 2 labels, or no more texts than labels.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"{path}: a labelled file ends in {', '.join(SUFFIXES)}; rename or convert it"
        )
    if not path.is_file():
        raise UserError(f"labelled file {path} not found: check the path")
    if text_field == label_field:
        raise UserError(f"text and label field are both {text_field!r}: name two columns")
    rows = _parquet_rows(path) if suffix == ".parquet" else _text_rows(path, suffix)
    texts: list[str] = []
    labels: list[str] = []
    for where, row in rows:
        texts.append(_text(path, where, row, text_field, "--text-field"))
        labels.append(_label(path, where, row, label_field))
    kinds = sorted(set(labels))
    if len(kinds) < 2:
        found = f"one label only ({kinds[0]!r})" if kinds else "no rows"
        raise UserError(f"{path} has {found}: clustering needs texts of at least 2 labels")
    if len(texts) <= len(kinds):
        raise UserError(
            f"{path} has {len(texts)} texts for {len(kinds)} labels: clustering needs more texts "
            "than labels, so add texts or merge labels"
        )
    return texts, labels


def json_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One JSONL line as an object; a one-line UserError naming the line otherwise."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}:{lineno}: bad JSON ({err.msg}, column {err.colno}): fix the line"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    if has_lone_surrogate(obj):
        raise UserError(
            f"{path}:{lineno}: a lone surrogate escape (such as \\ud800) is not a character: "
            "fix the line (a character outside the BMP is a pair such as \\ud83d\\ude00)"
        )
    return obj


def has_lone_surrogate(value: Any) -> bool:
    """True if a string in ``value`` holds a ``\\ud800``-style escape that JSON accepts but UTF-8
    cannot encode (it would fail later, in the tokenizer or a writer, mid-run)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_lone_surrogate(v) for v in value.values())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def _decoded(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(
            f"{path} is not UTF-8 (byte {err.start}, line {line}): re-save it as UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8`"
        ) from None


def _text_rows(path: Path, suffix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``line N``, row) of a JSONL, CSV or TSV file."""
    text = _decoded(path)
    if "\r" in text and "\n" not in text:
        raise UserError(f"{path} ends its lines with CR only: convert it to LF or CRLF line ends")
    if suffix in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            obj = json_object(path, lineno, line)
            yield f"line {lineno}", obj
        return
    reader = csv.DictReader(
        io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","
    )
    try:
        for row in reader:
            yield f"line {reader.line_num}", row
    except csv.Error as err:
        raise UserError(f"{path}:{reader.line_num}: bad CSV ({err}): fix the quoting") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``row N``, row) of a Parquet file (rows counted from 1)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not Parquet"
        raise UserError(f"{path} is not a readable Parquet file ({first_line(err)})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield f"row {i}", row


def _missing(path: Path, where: str, row: dict[str, Any], field: str, flag: str) -> UserError:
    columns = ", ".join(str(k) for k in list(row)[:8]) or "none"
    return UserError(
        f"{path} ({where}) has no column {field!r} (columns: {columns}): rename the column or "
        f"pass {flag} NAME"
    )


def _text(path: Path, where: str, row: dict[str, Any], field: str, flag: str) -> str:
    if field not in row:
        raise _missing(path, where, row, field, flag)
    value = row[field]
    if not isinstance(value, str):
        what = "empty" if value is None else f"a {type(value).__name__}, not a string"
        raise UserError(f"{path} ({where}): the text is {what}: fix or remove the row")
    if not value.strip():
        raise UserError(f"{path} ({where}): empty text: remove the row or fill it")
    return value


def _label(path: Path, where: str, row: dict[str, Any], field: str) -> str:
    if field not in row:
        raise _missing(path, where, row, field, "--label-field")
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        what = "empty" if value is None else f"a {type(value).__name__}"
        raise UserError(
            f"{path} ({where}): the label is {what}; labels are strings or numbers: fix the row"
        )
    label = str(value).strip()
    if not label:
        raise UserError(f"{path} ({where}): empty label: fill it or remove the row")
    return label
