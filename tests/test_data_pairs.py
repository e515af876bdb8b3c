"""The pairs file format: read/write round trip, atomic writes, malformed lines in both modes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from llm_embed.data.pairs import (
    manifest_path,
    read_manifest,
    read_pairs,
    validate_pairs_file,
    write_manifest,
    write_pairs,
)
from llm_embed.errors import UserError

GOOD = [
    {"anchor": "a cat sat on the mat", "positive": "cat sat on mat"},
    {"anchor": "Zürich ist schön", "positive": "Zürich schön", "instruction": "shorten"},
]


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_round_trip_keeps_extra_keys_and_unicode(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "sub" / "pairs.jsonl", GOOD)
    assert path == tmp_path / "sub" / "pairs.jsonl"
    assert read_pairs(path) == GOOD
    assert "Zürich" in path.read_text(encoding="utf-8")  # not \u-escaped
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_write_leaves_no_temp_files_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, GOOD)
    write_pairs(path, GOOD[:1])
    assert read_pairs(path) == GOOD[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", GOOD)
    before = path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("killed mid-write")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="killed"):
        write_pairs(path, [{"anchor": "x y z", "positive": "x y"}] * 3)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]  # temp file removed


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([], "empty"),
        ([{"anchor": "a b", "positive": ""}], "pairs\\[0\\].*'positive' is empty"),
        ([GOOD[0], {"anchor": "a b"}], "pairs\\[1\\].*missing 'positive'"),
    ],
)
def test_write_rejects_invalid_pairs(tmp_path: Path, pairs: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_pairs(tmp_path / "p.jsonl", pairs)
    assert not (tmp_path / "p.jsonl").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"pairs file .*nope\.jsonl not found"):
        read_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="not found"):
        validate_pairs_file(tmp_path / "nope.jsonl")


def test_empty_and_blank_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        read_pairs(empty)
    with pytest.raises(UserError, match="is empty"):
        validate_pairs_file(empty)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n")
    with pytest.raises(UserError, match="no valid pairs"):
        read_pairs(blank)


def test_directory_is_not_a_pairs_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a file"):
        validate_pairs_file(tmp_path)


BAD_LINES = [
    (b"{not json", "bad JSON"),
    (b'{"anchor": "a b c"}', "missing 'positive'"),
    (b'{"anchor": 3, "positive": "a b"}', "'anchor' is int"),
    (b'{"anchor": "  ", "positive": "a b"}', "'anchor' is empty"),
    (b'["a", "b"]', "expected a JSON object"),
    (b'{"anchor": "caf\xe9", "positive": "a b"}', "not valid UTF-8"),
]


@pytest.mark.parametrize("bad, problem", BAD_LINES)
def test_malformed_line_errors_with_location_and_switch(
    tmp_path: Path, bad: bytes, problem: str
) -> None:
    lines = [json.dumps(GOOD[0]).encode(), b"", bad, json.dumps(GOOD[1]).encode()]
    path = _write_lines(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(UserError, match=problem) as info:
        read_pairs(path)
    message = str(info.value)
    assert f"{path}:3:" in message  # blank line 2 still counts
    assert "on_bad_line=skip" in message
    assert "\n" not in message


def test_skip_mode_skips_counts_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = (
        [json.dumps(GOOD[0]).encode()]
        + [bad for bad, _ in BAD_LINES]
        + [json.dumps(GOOD[1]).encode()]
    )
    path = _write_lines(tmp_path / "pairs.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="llm_embed.data.pairs"):
        assert read_pairs(path, on_bad_line="skip") == GOOD
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"skipped {len(BAD_LINES)} malformed line(s)" in warnings[0]
    assert "line 2" in warnings[0]


def test_skip_mode_with_only_bad_lines_still_errors(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "pairs.jsonl", [b"{oops", b'{"anchor": "a"}'])
    with pytest.raises(UserError, match=r"no valid pairs \(2 malformed"):
        read_pairs(path, on_bad_line="skip")


def test_clean_read_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", GOOD)
    with caplog.at_level(logging.WARNING):
        read_pairs(path, on_bad_line="skip")
    assert not caplog.records


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(GOOD[0]).encode()
        + b"\r\n"
        + json.dumps(GOOD[1]).encode()
        + b"\r\n"
    )
    assert read_pairs(path) == GOOD


def test_bad_on_bad_line_value(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", GOOD)
    with pytest.raises(ValueError, match=r"on_bad_line='ignore'.*\['error', 'skip'\]"):
        read_pairs(path, on_bad_line="ignore")


def test_manifest_beside_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "augment-x.jsonl"
    assert manifest_path(pairs) == tmp_path / "augment-x.manifest.json"
    assert read_manifest(pairs) is None
    write_manifest(pairs, {"generator": "augment", "num_pairs": 2})
    assert read_manifest(pairs) == {"generator": "augment", "num_pairs": 2}


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([{"anchor": f"a{i % 3}", "positive": f"p{i % 3}"} for i in range(40)], "only 3 distinct pairs"),
        ([{"anchor": f"a{i}", "positive": "same"} for i in range(40)], "every positive is the same"),
        ([{"anchor": f"a{i}", "positive": f"a{i}" if i % 4 else f"p{i}"} for i in range(40)], "30 of 40"),
    ],
)
def test_degenerate_pairs_are_named(pairs, match):
    from llm_embed.data.pairs import degenerate_problem

    assert match in degenerate_problem(pairs, batch_size=8)


def test_ordinary_pairs_are_not_degenerate():
    from llm_embed.data.pairs import degenerate_problem

    pairs = [{"anchor": f"a{i}", "positive": f"a{i}" if i % 4 == 0 else f"p{i}"} for i in range(40)]
    assert degenerate_problem(pairs, batch_size=8) is None  # a few copies are fine


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_says_resave_as_utf8(tmp_path, encoding):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n', encoding=encoding)  # writes the BOM
    with pytest.raises(UserError, match=f"{encoding.upper()}.*re-save it as UTF-8"):
        read_pairs(path, on_bad_line="skip")
