"""The README's layout map names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 2)[1].splitlines()


def mapped_files() -> set[str]:
    """``llm_embed/...`` paths the tree names: a name's folder is the last folder line above it
    at a smaller indent."""
    folders: list[tuple[int, str]] = []
    files = set()
    for line in layout_block():
        match = re.match(r"( *)(\S+)", line)
        if match is None or not line.strip():
            continue
        indent, name = len(match.group(1)), match.group(2)
        if indent > 8:
            continue  # a description wrapped onto its own line
        folders = [(i, f) for i, f in folders if i < indent]
        if name.endswith("/"):
            folders.append((indent, name))
        elif name.endswith(".py"):
            files.add("".join(f for _, f in folders) + name)
    return files


def test_the_layout_map_matches_the_package():
    named = mapped_files()
    actual = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "llm_embed").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    assert named, "no layout tree found in the README"
    assert sorted(actual - named) == [], "modules missing from the README's layout map"
    assert sorted(named - actual) == [], "the README's layout map names modules that do not exist"


def test_the_top_level_folders_of_the_map_exist():
    last = [line for line in layout_block() if line.strip()][-1]
    folders = last.split()
    assert "configs/" in folders and "tests/" in folders
    for folder in folders:
        assert (ROOT / folder).is_dir(), folder


def test_the_readme_stays_a_front_door():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 250
