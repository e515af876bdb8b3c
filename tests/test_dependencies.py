"""Every third-party module the code imports is declared in setup.cfg (and installed in range).

A module that only arrives as someone else's dependency can vanish or change major version under
us; declaring it pins down the range the suite was run with.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the packages, and every module of tests/ (helpers and test modules import each other by name)
FIRST_PARTY = {"llm_embed", "benchmarks", "tests"} | {p.stem for p in (ROOT / "tests").glob("*.py")}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*sections: str) -> dict[str, str]:
    """Distribution name -> its requirement line, from ``install_requires`` and the named extras."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in sections:
        lines += cfg["options.extras_require"][extra].splitlines()
    requirements = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            requirements[normalize(re.match(r"[A-Za-z0-9_.-]+", line).group())] = line
    return requirements


def imported_modules(*folders: str) -> set[str]:
    """Top-level names of every absolute import in the folders' .py files (inside functions too)."""
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - FIRST_PARTY - set(sys.stdlib_module_names)


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    """Import name -> the installed distributions that provide it."""
    providers = metadata.packages_distributions()
    return {m: {normalize(d) for d in providers.get(m, [])} for m in modules}


@pytest.mark.parametrize(
    ("folders", "extras"),
    [(("llm_embed", "benchmarks"), ()), (("tests",), ("dev",))],
    ids=["package", "tests"],
)
def test_every_imported_module_is_declared(folders, extras):
    requirements = declared(*extras)
    missing = {
        module: sorted(dists) or "not installed"
        for module, dists in distributions_of(imported_modules(*folders)).items()
        if not dists & requirements.keys()
    }
    assert not missing, f"imported but not declared in setup.cfg: {missing}"


def test_the_scan_sees_imports_inside_functions():
    """The check must be able to fail: lazy imports (numpy, sentence_transformers) count too."""
    found = imported_modules("llm_embed")
    assert {"numpy", "sentence_transformers", "torch", "yaml"} <= found
    assert not found & {"os", "json", "llm_embed"}


def test_installed_versions_are_in_the_declared_ranges():
    """The ranges in setup.cfg are the ones this suite runs with."""
    from packaging.requirements import Requirement

    outside = {}
    for name, line in declared("dev").items():
        version = metadata.version(name)
        specifier = Requirement(line).specifier
        if not specifier.contains(version.split("+")[0], prereleases=True):
            outside[name] = f"{version} not in {specifier}"
    assert not outside, outside
